//! `s3repl verify`: proves that a source bucket and its destinations agree. It lists every
//! version of the source bucket (under a prefix), decides with the bucket's replication
//! configuration which destinations each version must reach, lists those destinations, and
//! compares each selected version with its replica (found by the replica's
//! `s3repl-source-version-id` stamp): size, `ETag` where both are a plain MD5 of the same bytes,
//! and with `--tags` the tag sets. It prints every difference — missing, extra, different —
//! and ends with one JSON line `{"checked":..,"missing":..,"extra":..,"different":..}`; exit 0
//! when all agree, 1 on any difference, 2 on errors.
//!
//! What a version needs for the rules (its encryption, replica status, tags) comes from one
//! `HEAD` per version (and `GetObjectTagging` when the configuration filters on tags and the
//! version has tags); each replica's stamps from one `HEAD` — all with bounded concurrency.
//! Delete markers are not compared (a listing cannot tell which source marker a destination
//! marker stands for).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::ValueEnum;
use s3repl::config::StorageClass;
use s3repl::dest::{ListedVersion, S3ReadError, S3VersionReader, VersionHead};
use s3repl::record::stamps;
use s3repl::rules::{Action, CompiledRules, EventKind, VersionEvent};
use serde_json::json;

use crate::error::CliError;
use crate::run::settings::arn_bucket;

/// Arguments of `s3repl verify`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: crate::bucket_args::BucketArgs,
    /// Also compare each replica's tags with its source version's.
    #[arg(long)]
    tags: bool,
    /// Differences as words, or as JSON lines.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Requests in flight at once per bucket.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// How differences are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Runs `s3repl verify`.
pub(crate) fn run(args: &Args) -> ExitCode {
    let Some(outcome) = crate::bucket_args::block_on(verify(args)) else {
        return ExitCode::from(2);
    };
    match outcome {
        Ok(summary) if summary.agrees() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// What a run found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    /// (selected source version, destination) pairs compared.
    pub(crate) checked: u64,
    /// Selected versions with no replica at a destination.
    pub(crate) missing: u64,
    /// Replicas no selected source version accounts for (no stamp, an unknown or unselected
    /// source version, a second replica of one version).
    pub(crate) extra: u64,
    /// Replicas that differ from their source version.
    pub(crate) different: u64,
}

impl Summary {
    fn agrees(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

/// A listed version and what its `HEAD` said.
#[derive(Debug)]
struct Examined {
    listed: ListedVersion,
    head: Option<VersionHead>,
    tags: Vec<(String, String)>,
}

fn remote(what: &str, e: &S3ReadError) -> CliError {
    CliError::Remote(format!("{what}: {e}"))
}

/// What one bucket's side of a verify found: how many versions and delete markers it listed,
/// and each version (not delete marker) with what its `HEAD` (and tags) said, in listing order.
struct Side {
    listed: usize,
    examined: Vec<Examined>,
}

/// Lists every version under `prefix` and reads each one that is not a delete marker (`HEAD`,
/// and with `tags` its tag set when it has tags) as soon as its page arrives, at most
/// `concurrency` reads at once, while the next page is listed: a listing is one request at a
/// time, so reading only after it ended left the server idle for the listing's length. Fails
/// with what it was doing ("listing" or "reading") and why.
async fn list_and_examine(
    reader: Arc<S3VersionReader>,
    prefix: String,
    tags: bool,
    concurrency: usize,
) -> Result<Side, (&'static str, S3ReadError)> {
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let (mut listed, mut order) = (0usize, 0usize);
    let mut after = None;
    loop {
        let page = reader
            .list_versions(&prefix, after.as_ref(), 1000)
            .await
            .map_err(|e| ("listing", e))?;
        listed += page.entries.len();
        for l in page.entries.into_iter().filter(|l| !l.delete_marker) {
            let (reader, limit, i) = (reader.clone(), limit.clone(), order);
            order += 1;
            tasks.spawn(async move {
                let _permit = limit.acquire().await;
                let head = reader.head(&l.key, &l.version_id).await?;
                let tags = match &head {
                    Some(h) if tags && h.tagging_count() > 0 => {
                        reader.tags(&l.key, &l.version_id).await?
                    }
                    _ => Vec::new(),
                };
                Ok::<_, S3ReadError>((i, Examined { listed: l, head, tags }))
            });
        }
        match page.next {
            Some(next) if Some(&next) != after.as_ref() => after = Some(next),
            // No next page (or a server repeating its marker: stop rather than loop).
            _ => break,
        }
    }
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        let done = done
            .map_err(|e| ("reading", S3ReadError::Transient(format!("a HEAD task failed: {e}"))))?;
        out.push(done.map_err(|e| ("reading", e))?);
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(Side { listed, examined: out.into_iter().map(|(_, e)| e).collect() })
}

/// One side's outcome, its failure named after what failed (`the source` or a destination).
async fn side(
    task: tokio::task::JoinHandle<Result<Side, (&'static str, S3ReadError)>>,
    name: &str,
) -> Result<Side, CliError> {
    match task.await {
        Ok(Ok(side)) => Ok(side),
        Ok(Err((doing, e))) => Err(remote(&format!("{doing} {name}"), &e)),
        Err(e) => Err(CliError::internal(format!("verifying {name}: {e}"))),
    }
}

/// An `ETag` that is the MD5 of the object's bytes (not a multipart upload's).
fn plain_etag(etag: Option<&str>) -> Option<&str> {
    etag.map(|e| e.trim_matches('"')).filter(|e| !e.contains('-') && !e.is_empty())
}

/// One difference, printed as it is found.
fn report(format: Format, kind: &str, destination: &str, key: &str, version: &str, detail: &str) {
    match format {
        Format::Text => println!("{kind:<9} {destination} {key} (version {version}){detail}"),
        Format::Json => println!(
            "{}",
            json!({"difference": kind, "destination": destination, "key": key,
                   "version_id": version, "detail": detail.trim_start_matches(": ")})
        ),
    }
}

async fn verify(args: &Args) -> Result<Summary, CliError> {
    let started = Instant::now();
    let (settings, config, since_ms) = args.target.load()?;
    let rules = CompiledRules::compile(&config)?;
    let source = Arc::new(S3VersionReader::new(&settings.source.s3.options(&args.target.bucket)?));
    let mut destinations = Vec::with_capacity(rules.destinations().len());
    for arn in rules.destinations() {
        let d = settings
            .destinations
            .iter()
            .find(|d| *d.arn == **arn)
            .filter(|d| d.kind == "s3")
            .ok_or_else(|| {
                CliError::settings(format!(
                    "destination {arn}: verify compares S3 destinations only; the settings need a [[destinations]] entry with kind = \"s3\" for it"
                ))
            })?;
        let bucket = d.bucket.as_deref().or_else(|| arn_bucket(arn)).unwrap_or_default();
        destinations.push(Arc::new(S3VersionReader::new(&d.s3.options(bucket)?)));
    }
    let needs_tags = args.tags
        || rules.rules().iter().any(|r| !r.tags.is_empty() || !r.excluded_tags.is_empty());
    // Every bucket is listed and read at once (each with its own `--concurrency`).
    let spawn = |reader: &Arc<S3VersionReader>, tags: bool| {
        tokio::spawn(list_and_examine(
            reader.clone(),
            args.target.prefix.clone(),
            tags,
            args.concurrency,
        ))
    };
    let source_side = spawn(&source, needs_tags);
    let destination_sides: Vec<_> = destinations.iter().map(|r| spawn(r, args.tags)).collect();
    let Side { listed: listed_sources, examined: sources } =
        side(source_side, "the source").await?;
    // Per destination: (key, source version id) → the source version it must have a replica
    // of (keyed by both: unversioned objects all have the version id `null`).
    let mut expected: Vec<BTreeMap<(&str, &str), &Examined>> =
        vec![BTreeMap::new(); destinations.len()];
    for s in &sources {
        let Some(head) = &s.head else { continue };
        let tags: Vec<(&str, &str)> =
            s.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let storage_class = head
            .header("x-amz-storage-class")
            .or(s.listed.storage_class.as_deref())
            .and_then(|c| c.parse::<StorageClass>().ok())
            .unwrap_or_default();
        let ev = VersionEvent {
            bucket: &args.target.bucket,
            key: &s.listed.key,
            version_id: &s.listed.version_id,
            kind: EventKind::Put,
            tags: &tags,
            sse: crate::run::intake::sse_kind(head),
            is_replica: head.header("x-amz-replication-status") == Some("REPLICA"),
            existing: s.listed.last_modified_ms.is_some_and(|t| t < since_ms),
            storage_class,
            ..VersionEvent::default()
        };
        for r in rules.match_event(&ev).replications() {
            if r.action == Action::CopyObject
                && let Some(slot) = expected.get_mut(r.destination.0 as usize)
            {
                slot.insert((s.listed.key.as_str(), s.listed.version_id.as_str()), s);
            }
        }
    }
    let mut summary = Summary::default();
    let mut listed_replicas = 0usize;
    for (d, task) in destination_sides.into_iter().enumerate() {
        let arn = rules
            .destination(s3repl::rules::DestinationId(u32::try_from(d).unwrap_or(u32::MAX)))
            .unwrap_or_default();
        let Side { listed, examined: replicas } = side(task, arn).await?;
        listed_replicas += listed;
        let want = expected.get(d).cloned().unwrap_or_default();
        let mut found: HashMap<(&str, &str), &Examined> = HashMap::new();
        for r in &replicas {
            let Some(head) = &r.head else { continue };
            let stamp =
                head.user_metadata().find(|(n, _)| *n == stamps::SOURCE_VERSION_ID).map(|(_, v)| v);
            let (key, version) = (r.listed.key.as_str(), r.listed.version_id.as_str());
            let extra = match stamp {
                Some(s) if want.contains_key(&(key, s)) => found
                    .insert((key, s), r)
                    .map(|_| format!(": a second replica of source version {s}")),
                Some(s) => {
                    Some(format!(": replica of source version {s}, which no rule selects here"))
                }
                None => Some(": not a replica (no s3repl-source-version-id stamp)".to_owned()),
            };
            if let Some(why) = extra {
                summary.extra += 1;
                report(args.format, "extra", arn, key, version, &why);
            }
        }
        for (&(key, source_version), src) in &want {
            summary.checked += 1;
            let Some(replica) = found.get(&(key, source_version)) else {
                summary.missing += 1;
                report(args.format, "missing", arn, key, source_version, "");
                continue;
            };
            let kms = src.head.as_ref().is_some_and(|h| crate::run::intake::sse_kind(h).is_kms());
            let mut why = Vec::new();
            if replica.listed.size != src.listed.size && !kms {
                why.push(format!(
                    "size {} at the source, {} here",
                    src.listed.size, replica.listed.size
                ));
            }
            if !kms
                && let (Some(a), Some(b)) = (
                    plain_etag(src.listed.etag.as_deref()),
                    plain_etag(replica.listed.etag.as_deref()),
                )
                && a != b
            {
                why.push(format!("ETag {a} at the source, {b} here"));
            }
            if args.tags {
                let mut a = src.tags.clone();
                let mut b = replica.tags.clone();
                a.sort();
                b.sort();
                if a != b {
                    why.push(format!("tags {a:?} at the source, {b:?} here"));
                }
            }
            if !why.is_empty() {
                summary.different += 1;
                report(
                    args.format,
                    "different",
                    arn,
                    key,
                    source_version,
                    &format!(": {}", why.join("; ")),
                );
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "checked": summary.checked, "missing": summary.missing, "extra": summary.extra,
            "different": summary.different, "listed_source": listed_sources,
            "listed_destinations": listed_replicas, "seconds": (seconds * 1000.0).round() / 1000.0,
        })
    );
    Ok(summary)
}
