//! `s3repl verify`: proves that a source bucket and its destinations agree. It lists every
//! version of the source bucket (under a prefix), decides with the bucket's replication
//! configuration which destinations each version must reach, lists those destinations, and
//! compares each selected version with its replica: size, `ETag`, and with `--tags` the tag
//! sets. It prints every difference — missing, extra, different — and ends with one JSON line
//! `{"checked":..,"missing":..,"extra":..,"different":..}`; exit 0 when all agree, 1 on any
//! difference, 2 on errors.
//!
//! **From the listings first.** Where a key's selected source versions and its versions at a
//! destination agree by the listings alone — as many of each, and oldest to newest the same
//! size and the same `ETag` — they agree, and nothing more is read: a verify of a bucket that
//! agrees costs its listings. Everywhere else (a count or an `ETag` that differs, re-encrypted
//! replicas, multipart uploads laid out differently) that key's versions are read, one `HEAD`
//! each on both sides, and compared as `--stamps` compares everything: each replica is paired
//! with its source version by its `s3repl-source-version-id` stamp, and what the rules select
//! is decided with each source version's encryption and replica status. By the listings a
//! version counts as unencrypted and no replica — the case in which the rules select the most —
//! so a version the rules would not select only sends its key to the reading. What a listing
//! cannot tell: which of two versions with the same bytes a replica came from, and whether a
//! version whose replica exists should have had one (an SSE-KMS version a rule without
//! `SseKmsEncryptedObjects` replicated all the same). `--stamps` reads everything and tells
//! both. A configuration that filters on tags, and `--tags`, read every source version's tags
//! (`GetObjectTagging` when it has some), and with `--tags` every replica's.
//!
//! Delete markers are not compared (a listing cannot tell which source marker a destination
//! marker stands for).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::ValueEnum;
use s3repl::config::StorageClass;
use s3repl::dest::{ListedVersion, S3ReadError, S3VersionReader, VersionHead};
use s3repl::record::stamps;
use s3repl::rules::{Action, CompiledRules, DestinationId, EventKind, VersionEvent};
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
    /// Read every version (one `HEAD` each, on both sides) and pair every replica with its
    /// source version by its stamp, not only where the listings disagree.
    #[arg(long)]
    stamps: bool,
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

/// What is known of a listed version beyond its listing.
#[derive(Debug)]
enum Head {
    /// Not read: only the listing.
    Unread,
    /// Read, and gone since it was listed.
    Gone,
    /// What its `HEAD` said.
    Read(VersionHead),
}

/// A listed version (not a delete marker) and what reading it said.
#[derive(Debug)]
struct Examined {
    listed: ListedVersion,
    head: Head,
    tags: Vec<(String, String)>,
}

impl Examined {
    fn unread(listed: ListedVersion) -> Self {
        Examined { listed, head: Head::Unread, tags: Vec::new() }
    }

    fn is_read(&self) -> bool {
        !matches!(self.head, Head::Unread)
    }

    /// The `s3repl-source-version-id` stamp its `HEAD` showed.
    fn stamp(&self) -> Option<&str> {
        let Head::Read(h) = &self.head else { return None };
        h.user_metadata().find(|(n, _)| *n == stamps::SOURCE_VERSION_ID).map(|(_, v)| v)
    }

    /// Whether its `HEAD` said it is encrypted under KMS (its replica's bytes at rest, and so
    /// size and `ETag`, differ).
    fn kms(&self) -> bool {
        matches!(&self.head, Head::Read(h) if crate::run::intake::sse_kind(h).is_kms())
    }
}

fn remote(what: &str, e: &S3ReadError) -> CliError {
    CliError::Remote(format!("{what}: {e}"))
}

/// One bucket's side of a verify: how many versions and delete markers it listed, and each
/// version (not delete marker) in listing order (keys in order, a key's versions newest first).
struct Side {
    listed: usize,
    versions: Vec<Examined>,
}

/// Reads one version: its `HEAD`, and with `tags` its tag set when it has tags.
async fn read_one(
    reader: &S3VersionReader,
    listed: ListedVersion,
    tags: bool,
) -> Result<Examined, S3ReadError> {
    let head = reader.head(&listed.key, &listed.version_id).await?;
    let tags = match &head {
        Some(h) if tags && h.tagging_count() > 0 => {
            reader.tags(&listed.key, &listed.version_id).await?
        }
        _ => Vec::new(),
    };
    Ok(Examined { listed, head: head.map_or(Head::Gone, Head::Read), tags })
}

/// Reads versions `at` (indices, each once) in place, at most `concurrency` at once.
async fn read_in_place(
    reader: &Arc<S3VersionReader>,
    versions: &mut [Examined],
    at: impl IntoIterator<Item = usize>,
    tags: bool,
    concurrency: usize,
) -> Result<usize, S3ReadError> {
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in at {
        let Some(v) = versions.get(i).filter(|v| !v.is_read()) else { continue };
        let (reader, limit, listed) = (reader.clone(), limit.clone(), v.listed.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire().await;
            read_one(&reader, listed, tags).await.map(|e| (i, e))
        });
    }
    let mut read = 0;
    while let Some(done) = tasks.join_next().await {
        let (i, examined) =
            done.map_err(|e| S3ReadError::Transient(format!("a HEAD task failed: {e}")))??;
        if let Some(slot) = versions.get_mut(i) {
            *slot = examined;
            read += 1;
        }
    }
    Ok(read)
}

/// Lists every version under `prefix`; with `read`, reads each one that is not a delete marker
/// (`HEAD`, and with `tags` its tag set when it has tags) as soon as its page arrives, at most
/// `concurrency` reads at once, while the next page is listed: a listing is one request at a
/// time, so reading only after it ended left the server idle for the listing's length. Fails
/// with what it was doing ("listing" or "reading") and why.
async fn list_side(
    reader: Arc<S3VersionReader>,
    prefix: String,
    read: bool,
    tags: bool,
    concurrency: usize,
) -> Result<Side, (&'static str, S3ReadError)> {
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut versions = Vec::new();
    let mut listed = 0usize;
    let mut after = None;
    loop {
        let page = reader
            .list_versions(&prefix, after.as_ref(), 1000)
            .await
            .map_err(|e| ("listing", e))?;
        listed += page.entries.len();
        for l in page.entries.into_iter().filter(|l| !l.delete_marker) {
            if !read {
                versions.push(Examined::unread(l));
                continue;
            }
            let (reader, limit, i) = (reader.clone(), limit.clone(), versions.len());
            versions.push(Examined::unread(l.clone()));
            tasks.spawn(async move {
                let _permit = limit.acquire().await;
                read_one(&reader, l, tags).await.map(|e| (i, e))
            });
        }
        match page.next {
            Some(next) if Some(&next) != after.as_ref() => after = Some(next),
            // No next page (or a server repeating its marker: stop rather than loop).
            _ => break,
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (i, examined) = done
            .map_err(|e| ("reading", S3ReadError::Transient(format!("a HEAD task failed: {e}"))))?
            .map_err(|e| ("reading", e))?;
        if let Some(slot) = versions.get_mut(i) {
            *slot = examined;
        }
    }
    Ok(Side { listed, versions })
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

/// Where each key's versions are in a side's listing, in listing order (newest first). Not
/// assumed consecutive: a server that interleaves keys still has each key's versions compared
/// only with that key's.
fn by_key(versions: &[Examined]) -> BTreeMap<&str, Vec<usize>> {
    let mut keys: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, v) in versions.iter().enumerate() {
        keys.entry(v.listed.key.as_str()).or_default().push(i);
    }
    keys
}

/// An `ETag` that is the MD5 of the object's bytes (not a multipart upload's).
fn plain_etag(etag: Option<&str>) -> Option<&str> {
    etag.map(|e| e.trim_matches('"')).filter(|e| !e.contains('-') && !e.is_empty())
}

/// Whether a key's selected source versions and its versions at a destination, both oldest
/// first, agree by their listings: as many, and pairwise the same size and the same (non-empty)
/// `ETag`. Equal multipart `ETag`s are the same parts' digests, so they count too.
fn listings_agree(sources: &[&Examined], replicas: &[&Examined]) -> bool {
    let etag = |e: &Examined| e.listed.etag.as_deref().map(|t| t.trim_matches('"').to_owned());
    sources.len() == replicas.len()
        && sources.iter().zip(replicas).all(|(s, r)| {
            s.listed.size == r.listed.size
                && etag(s).is_some_and(|t| !t.is_empty() && Some(t) == etag(r))
        })
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

/// The rules and what they are checked for.
struct Verifier<'a> {
    rules: &'a CompiledRules,
    bucket: &'a str,
    /// Source versions modified before this were there before the configuration.
    since_ms: u64,
    format: Format,
    tags: bool,
    summary: Summary,
}

impl Verifier<'_> {
    /// The destinations the rules send version `s` to (indices into the rules' destinations):
    /// by its `HEAD` when it was read, else by its listing as unencrypted and no replica.
    fn destinations_of(&self, s: &Examined) -> Vec<usize> {
        let listed_only = VersionHead { headers: Vec::new() };
        let head = match &s.head {
            Head::Gone => return Vec::new(),
            Head::Read(h) => h,
            Head::Unread => &listed_only,
        };
        let tags: Vec<(&str, &str)> =
            s.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let storage_class = head
            .header("x-amz-storage-class")
            .or(s.listed.storage_class.as_deref())
            .and_then(|c| c.parse::<StorageClass>().ok())
            .unwrap_or_default();
        let ev = VersionEvent {
            bucket: self.bucket,
            key: &s.listed.key,
            version_id: &s.listed.version_id,
            kind: EventKind::Put,
            tags: &tags,
            sse: crate::run::intake::sse_kind(head),
            is_replica: head.header("x-amz-replication-status") == Some("REPLICA"),
            existing: s.listed.last_modified_ms.is_some_and(|t| t < self.since_ms),
            storage_class,
            ..VersionEvent::default()
        };
        self.rules
            .match_event(&ev)
            .replications()
            .iter()
            .filter(|r| r.action == Action::CopyObject)
            .map(|r| r.destination.0 as usize)
            .collect()
    }

    /// Compares a key's source versions selected for destination `arn` with the key's
    /// versions there, every one of them read: each replica is paired with its source version
    /// by its stamp.
    fn compare_stamped(&mut self, arn: &str, key: &str, want: &[&Examined], there: &[&Examined]) {
        let wanted: HashMap<&str, &Examined> =
            want.iter().map(|s| (s.listed.version_id.as_str(), *s)).collect();
        let mut found: HashMap<&str, &Examined> = HashMap::new();
        for r in there.iter().filter(|r| matches!(r.head, Head::Read(_))) {
            let version = r.listed.version_id.as_str();
            let extra = match r.stamp() {
                Some(s) if wanted.contains_key(s) => {
                    found.insert(s, r).map(|_| format!(": a second replica of source version {s}"))
                }
                Some(s) => {
                    Some(format!(": replica of source version {s}, which no rule selects here"))
                }
                None => Some(": not a replica (no s3repl-source-version-id stamp)".to_owned()),
            };
            if let Some(why) = extra {
                self.summary.extra += 1;
                report(self.format, "extra", arn, key, version, &why);
            }
        }
        for src in want {
            let source_version = src.listed.version_id.as_str();
            self.summary.checked += 1;
            let Some(replica) = found.get(source_version) else {
                self.summary.missing += 1;
                report(self.format, "missing", arn, key, source_version, "");
                continue;
            };
            let kms = src.kms();
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
            if self.tags {
                let mut a = src.tags.clone();
                let mut b = replica.tags.clone();
                a.sort();
                b.sort();
                if a != b {
                    why.push(format!("tags {a:?} at the source, {b:?} here"));
                }
            }
            if !why.is_empty() {
                self.summary.different += 1;
                report(
                    self.format,
                    "different",
                    arn,
                    key,
                    source_version,
                    &format!(": {}", why.join("; ")),
                );
            }
        }
    }
}

/// For destination `d`: the source versions at `at` (a key's, newest first) it must have,
/// oldest first.
fn wanted<'s>(
    sources: &'s [Examined],
    selected: &[Vec<usize>],
    at: Option<&Vec<usize>>,
    d: usize,
) -> Vec<&'s Examined> {
    at.into_iter()
        .flat_map(|at| at.iter().rev().copied())
        .filter(|&i| selected.get(i).is_some_and(|ds| ds.contains(&d)))
        .filter_map(|i| sources.get(i))
        .collect()
}

/// A key's versions at a destination, oldest first (listed newest first).
fn held<'s>(versions: &'s [Examined], at: Option<&Vec<usize>>) -> Vec<&'s Examined> {
    at.into_iter().flat_map(|at| at.iter().rev()).filter_map(|&i| versions.get(i)).collect()
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
    // Every bucket is listed (and, where everything is read, read) at once, each with its own
    // `--concurrency`.
    let spawn = |reader: &Arc<S3VersionReader>, read: bool, tags: bool| {
        tokio::spawn(list_side(
            reader.clone(),
            args.target.prefix.clone(),
            read,
            tags,
            args.concurrency,
        ))
    };
    let source_side = spawn(&source, args.stamps || needs_tags, needs_tags);
    let destination_sides: Vec<_> =
        destinations.iter().map(|r| spawn(r, args.stamps || args.tags, args.tags)).collect();
    let Side { listed: listed_source, versions: mut sources } =
        side(source_side, "the source").await?;
    let mut heads = sources.iter().filter(|s| s.is_read()).count();
    let arn_of = |d: usize| {
        rules.destination(DestinationId(u32::try_from(d).unwrap_or(u32::MAX))).unwrap_or_default()
    };
    let mut theirs = Vec::with_capacity(destinations.len());
    let mut listed_destinations = 0usize;
    for (d, task) in destination_sides.into_iter().enumerate() {
        let Side { listed, versions } = side(task, arn_of(d)).await?;
        listed_destinations += listed;
        heads += versions.iter().filter(|s| s.is_read()).count();
        theirs.push(versions);
    }
    let mut verifier = Verifier {
        rules: &rules,
        bucket: &args.target.bucket,
        since_ms,
        format: args.format,
        tags: args.tags,
        summary: Summary::default(),
    };

    // First by the listings: per destination, the keys whose versions must be read.
    let mut to_read: Vec<BTreeSet<String>> = vec![BTreeSet::new(); destinations.len()];
    let mut selected: Vec<Vec<usize>> =
        sources.iter().map(|s| verifier.destinations_of(s)).collect();
    {
        let source_keys = by_key(&sources);
        for (d, versions) in theirs.iter().enumerate() {
            let keys = by_key(versions);
            let all: BTreeSet<&str> = source_keys.keys().chain(keys.keys()).copied().collect();
            for key in all {
                let want = wanted(&sources, &selected, source_keys.get(key), d);
                let there = held(versions, keys.get(key));
                if want.iter().chain(&there).all(|e| e.is_read()) {
                    verifier.compare_stamped(arn_of(d), key, &want, &there);
                } else if listings_agree(&want, &there) {
                    verifier.summary.checked += want.len() as u64;
                } else if let Some(slot) = to_read.get_mut(d) {
                    slot.insert(key.to_owned());
                }
            }
        }
    }

    // Then the keys the listings left undecided: read, and paired by their stamps.
    if to_read.iter().any(|keys| !keys.is_empty()) {
        let source_keys = by_key(&sources);
        let at: BTreeSet<usize> = to_read
            .iter()
            .flatten()
            .filter_map(|k| source_keys.get(k.as_str()).cloned())
            .flatten()
            .collect();
        heads +=
            read_in_place(&source, &mut sources, at.iter().copied(), needs_tags, args.concurrency)
                .await
                .map_err(|e| remote("reading the source", &e))?;
        // What the rules select changes only for the versions just read.
        for &i in &at {
            if let (Some(s), Some(slot)) = (sources.get(i), selected.get_mut(i)) {
                *slot = verifier.destinations_of(s);
            }
        }
        for ((d, versions), reader) in theirs.iter_mut().enumerate().zip(&destinations) {
            let keys = by_key(versions);
            let at: Vec<usize> = to_read
                .get(d)
                .into_iter()
                .flatten()
                .filter_map(|k| keys.get(k.as_str()).cloned())
                .flatten()
                .collect();
            heads += read_in_place(reader, versions, at, args.tags, args.concurrency)
                .await
                .map_err(|e| remote(&format!("reading {}", arn_of(d)), &e))?;
        }
        let source_keys = by_key(&sources);
        for (d, versions) in theirs.iter().enumerate() {
            let keys = by_key(versions);
            for key in to_read.get(d).into_iter().flatten() {
                let want = wanted(&sources, &selected, source_keys.get(key.as_str()), d);
                let there = held(versions, keys.get(key.as_str()));
                verifier.compare_stamped(arn_of(d), key, &want, &there);
            }
        }
    }
    let summary = verifier.summary;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "checked": summary.checked, "missing": summary.missing, "extra": summary.extra,
            "different": summary.different, "listed_source": listed_source,
            "listed_destinations": listed_destinations, "heads": heads,
            "seconds": (seconds * 1000.0).round() / 1000.0,
        })
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn listed(key: &str, version: &str, size: u64, etag: &str) -> ListedVersion {
        ListedVersion {
            key: key.into(),
            version_id: version.into(),
            delete_marker: false,
            is_latest: false,
            size,
            etag: Some(format!("\"{etag}\"")),
            last_modified_ms: Some(1),
            storage_class: None,
        }
    }

    fn head(headers: &[(&str, &str)]) -> Head {
        Head::Read(VersionHead {
            headers: headers.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
        })
    }

    fn rules(sse_kms: bool) -> CompiledRules {
        let sse = if sse_kms {
            "<SourceSelectionCriteria><SseKmsEncryptedObjects><Status>Enabled</Status></SseKmsEncryptedObjects></SourceSelectionCriteria>"
        } else {
            ""
        };
        let xml = format!(
            r"<ReplicationConfiguration><Role>arn:aws:iam::123456789012:role/r</Role><Rule><ID>r</ID><Priority>1</Priority><Status>Enabled</Status><Filter><Prefix>docs/</Prefix></Filter>{sse}<DeleteMarkerReplication><Status>Disabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::dst</Bucket>{}</Destination></Rule></ReplicationConfiguration>",
            if sse_kms {
                "<EncryptionConfiguration><ReplicaKmsKeyID>arn:aws:kms:us-east-1:123456789012:key/k</ReplicaKmsKeyID></EncryptionConfiguration>"
            } else {
                ""
            }
        );
        let config =
            s3repl::config::ReplicationConfiguration::from_xml(xml.as_bytes(), None).unwrap();
        CompiledRules::compile(&config).unwrap()
    }

    fn verifier(rules: &CompiledRules) -> Verifier<'_> {
        Verifier {
            rules,
            bucket: "src",
            since_ms: 0,
            format: Format::Json,
            tags: false,
            summary: Summary::default(),
        }
    }

    #[test]
    fn listings_agree_only_pairwise_in_count_size_and_etag() {
        let a = Examined::unread(listed("k", "1", 3, "aaa"));
        let b = Examined::unread(listed("k", "2", 4, "bbb"));
        let a2 = Examined::unread(listed("k", "x", 3, "aaa"));
        let b2 = Examined::unread(listed("k", "y", 4, "bbb"));
        assert!(listings_agree(&[], &[]));
        assert!(listings_agree(&[&a, &b], &[&a2, &b2]));
        // Order matters: a key's versions are paired oldest to oldest.
        assert!(!listings_agree(&[&a, &b], &[&b2, &a2]));
        assert!(!listings_agree(&[&a, &b], &[&a2]));
        assert!(!listings_agree(&[&a], &[&a2, &b2]));
        let same_size_other_bytes = Examined::unread(listed("k", "z", 3, "ccc"));
        assert!(!listings_agree(&[&a], &[&same_size_other_bytes]));
        let mut no_etag = Examined::unread(listed("k", "n", 3, ""));
        assert!(!listings_agree(&[&no_etag], &[&no_etag]));
        no_etag.listed.etag = None;
        assert!(!listings_agree(&[&no_etag], &[&no_etag]));
        // Multipart ETags compare as they are: the same parts' digests.
        let m = Examined::unread(listed("k", "m", 9, "abc-2"));
        let m2 = Examined::unread(listed("k", "m2", 9, "abc-2"));
        let m3 = Examined::unread(listed("k", "m3", 9, "abd-3"));
        assert!(listings_agree(&[&m], &[&m2]));
        assert!(!listings_agree(&[&m], &[&m3]));
    }

    #[test]
    fn by_the_listing_a_version_is_selected_as_widely_as_any_head_could_make_it() {
        let plain = rules(false);
        let v = verifier(&plain);
        let unread = Examined::unread(listed("docs/a", "1", 1, "e"));
        assert_eq!(v.destinations_of(&unread), vec![0]);
        let other = Examined::unread(listed("other/a", "1", 1, "e"));
        assert!(v.destinations_of(&other).is_empty());
        // Read: SSE-KMS and replicas are not selected by a rule without the filters.
        let mut kms = Examined::unread(listed("docs/a", "1", 1, "e"));
        kms.head = head(&[("x-amz-server-side-encryption", "aws:kms")]);
        assert!(v.destinations_of(&kms).is_empty());
        let mut replica = Examined::unread(listed("docs/a", "1", 1, "e"));
        replica.head = head(&[("x-amz-replication-status", "REPLICA")]);
        assert!(v.destinations_of(&replica).is_empty());
        let mut gone = Examined::unread(listed("docs/a", "1", 1, "e"));
        gone.head = Head::Gone;
        assert!(v.destinations_of(&gone).is_empty());
        // With SseKmsEncryptedObjects both are selected.
        let with_kms = rules(true);
        let v = verifier(&with_kms);
        assert_eq!(v.destinations_of(&kms), vec![0]);
        assert_eq!(v.destinations_of(&unread), vec![0]);
    }

    #[test]
    fn a_keys_versions_are_taken_oldest_first_and_only_where_selected() {
        // "k" listed newest first (3, 2, 1), with another key's version in between, as a
        // server that interleaves keys would list them.
        let sources: Vec<Examined> = [("k", "3"), ("k", "2"), ("j", "9"), ("k", "1")]
            .into_iter()
            .map(|(k, v)| Examined::unread(listed(k, v, 1, "e")))
            .collect();
        let selected = vec![vec![0], vec![1], vec![0, 1], vec![0, 1]];
        let ids = |v: Vec<&Examined>| -> Vec<String> {
            v.into_iter().map(|e| e.listed.version_id.clone()).collect()
        };
        let keys = by_key(&sources);
        let k = keys.get("k");
        assert_eq!(k, Some(&vec![0, 1, 3]));
        assert_eq!(keys.get("j"), Some(&vec![2]));
        assert_eq!(ids(wanted(&sources, &selected, k, 0)), ["1", "3"]);
        assert_eq!(ids(wanted(&sources, &selected, k, 1)), ["1", "2"]);
        assert!(wanted(&sources, &selected, None, 0).is_empty());
        assert_eq!(ids(held(&sources, k)), ["1", "2", "3"]);
    }

    #[test]
    fn stamps_pair_replicas_and_find_what_differs() {
        let plain = rules(false);
        let mut v = verifier(&plain);
        let mut s1 = Examined::unread(listed("docs/a", "s1", 3, "aaa"));
        s1.head = head(&[]);
        let mut s2 = Examined::unread(listed("docs/a", "s2", 3, "bbb"));
        s2.head = head(&[]);
        let replica = |id: &str, stamp: Option<&str>, etag: &str| {
            let mut r = Examined::unread(listed("docs/a", id, 3, etag));
            r.head = match stamp {
                Some(s) => head(&[("x-amz-meta-s3repl-source-version-id", s)]),
                None => head(&[]),
            };
            r
        };
        // s1's replica differs, s2's is there twice, and a stray object.
        let (r1, r2, r3, stray) = (
            replica("r1", Some("s1"), "zzz"),
            replica("r2", Some("s2"), "bbb"),
            replica("r3", Some("s2"), "bbb"),
            replica("r4", None, "aaa"),
        );
        v.compare_stamped("d", "docs/a", &[&s1, &s2], &[&r1, &r2, &r3, &stray]);
        assert_eq!(v.summary, Summary { checked: 2, missing: 0, extra: 2, different: 1 });
        let mut v = verifier(&plain);
        v.compare_stamped("d", "docs/a", &[&s1, &s2], &[&r2]);
        assert_eq!(v.summary, Summary { checked: 2, missing: 1, extra: 0, different: 0 });
    }
}
