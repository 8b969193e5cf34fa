//! `s3repl backfill`: existing objects into the log. Lists every version of a source bucket on
//! its S3 endpoint (under a prefix) and appends those a rule with `ExistingObjectReplication`
//! Enabled selects — or, with `--all`, every version any rule selects, as S3 Batch Replication
//! does — each key's versions oldest first, marked as existing. Appends go through the same
//! intake as bucket events (`[intake]`'s marks): a version already appended, by an event or an
//! earlier backfill, is skipped. The position (the last key whose versions were all taken) is
//! saved after each page's records are durable, so a killed backfill resumes there.
//!
//! Each version a rule's prefix could select costs one `HEAD` (and `GetObjectTagging` when it
//! has tags) for its record; keys no rule's prefix selects cost nothing beyond the listing.
//! Ends with one JSON line `{"listed":..,"enqueued":..,"skipped":..,"seconds":..}`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use s3repl::dest::ListedVersion;
use s3repl::record::VersionRecord;
use s3repl::rules::{CompiledRules, EventKind};
use serde_json::json;

use crate::error::CliError;
use crate::run::events::{Event, Kind};
use crate::run::intake::{Intake, record_for};

/// Arguments of `s3repl backfill`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: crate::bucket_args::BucketArgs,
    /// Every version a rule selects, not only under `ExistingObjectReplication` (S3 Batch
    /// Replication).
    #[arg(long)]
    all: bool,
    /// Start from the beginning instead of where an earlier backfill stopped.
    #[arg(long)]
    restart: bool,
    /// No progress bar: a JSON line on stderr per page taken instead (the final JSON line on
    /// stdout is printed either way).
    #[arg(long)]
    json: bool,
    /// Versions read (`HEAD`) at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// Runs `s3repl backfill`.
pub(crate) fn run(args: &Args) -> ExitCode {
    let Some(outcome) = crate::bucket_args::block_on(backfill(args)) else {
        return ExitCode::from(2);
    };
    match outcome {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A backfill's counts so far (shared with `/-/status` when `s3repl run` backfills).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub(crate) listed: AtomicU64,
    pub(crate) enqueued: AtomicU64,
    pub(crate) skipped: AtomicU64,
}

impl Progress {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The counts as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        json!({
            "listed": self.listed.load(Ordering::Relaxed),
            "enqueued": self.enqueued.load(Ordering::Relaxed),
            "skipped": self.skipped.load(Ordering::Relaxed),
        })
    }
}

/// What one backfill does.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) bucket: String,
    pub(crate) prefix: String,
    /// Every version the rules select, not only under `ExistingObjectReplication`.
    pub(crate) all: bool,
    /// From the start, not from the saved position.
    pub(crate) restart: bool,
    /// Versions read at once.
    pub(crate) concurrency: usize,
}

async fn backfill(args: &Args) -> Result<serde_json::Value, CliError> {
    let started = Instant::now();
    let (settings, config, _) = args.target.load()?;
    let rules = CompiledRules::compile(&config)?;
    let intake = Arc::new(crate::run::open_intake(&settings).map_err(|e| {
        CliError::settings(format!(
            "{e} (a replicator taking bucket events holds the log and its marks: install a configuration with ExistingObjectReplication there and it backfills by itself)"
        ))
    })?);
    let job = Job {
        bucket: args.target.bucket.clone(),
        prefix: args.target.prefix.clone(),
        all: args.all,
        restart: args.restart,
        concurrency: args.concurrency,
    };
    let progress = Progress::default();
    let bar = if args.json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    let hidden = bar.is_hidden();
    let show = |p: &Progress| {
        if hidden {
            // Without a terminal: one JSON line on stderr per page taken (its position saved).
            eprintln!("{}", json!({"progress": p.json()}));
            return;
        }
        let listed = p.listed.load(Ordering::Relaxed);
        let rate = listed as f64 / started.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!(
            "listed {listed}, enqueued {}, skipped {} ({rate:.0} versions/s listed)",
            p.enqueued.load(Ordering::Relaxed),
            p.skipped.load(Ordering::Relaxed)
        ));
        bar.tick();
    };
    run_job(&intake, &rules, &job, &progress, show).await?;
    bar.finish_and_clear();
    Ok(json!({
        "listed": progress.listed.load(Ordering::Relaxed),
        "enqueued": progress.enqueued.load(Ordering::Relaxed),
        "skipped": progress.skipped.load(Ordering::Relaxed),
        "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    }))
}

/// Runs one backfill into `intake` with `rules`, counting in `progress` (`show` after each
/// page). Saves its position after each page and marks it complete at the end.
pub(crate) async fn run_job(
    intake: &Arc<Intake>,
    rules: &CompiledRules,
    job: &Job,
    progress: &Progress,
    show: impl Fn(&Progress),
) -> Result<(), CliError> {
    let reader = intake.reader(&job.bucket).ok_or_else(|| {
        CliError::settings(format!("bucket {:?} is not in [source] buckets", job.bucket))
    })?;
    let after =
        if job.restart { None } else { intake.backfill_position(&job.bucket, &job.prefix)? };
    if let Some(k) = &after {
        tracing::info!(bucket = %job.bucket, after = %k, "Resuming a backfill.");
    }
    // A key's versions run over pages: the last key of a page waits for the next one. The next
    // page is listed while the versions of this one are read and appended: a listing is one
    // request at a time, and without the overlap a remote server's listing latency would be
    // added to every page's reads. (On a loopback SeaweedFS, where the server's CPU is the
    // limit, scripts/intake-load.sh shows no difference either way.)
    let list_page = |marker: Option<(String, String)>| {
        let (reader, prefix, bucket) = (reader.clone(), job.prefix.clone(), job.bucket.clone());
        tokio::spawn(async move {
            reader
                .list_versions(&prefix, marker.as_ref(), 1000)
                .await
                .map_err(|e| CliError::Remote(format!("listing {bucket}: {e}")))
                .map(|page| (page, marker))
        })
    };
    let mut carried: Vec<ListedVersion> = Vec::new();
    let mut listing = Some(list_page(after.map(|k| (k, String::new()))));
    while let Some(pending) = listing.take() {
        let (page, marker) =
            pending.await.map_err(|e| CliError::internal(format!("a listing failed: {e}")))??;
        Progress::add(&progress.listed, page.entries.len() as u64);
        carried.extend(page.entries);
        let last = page.next.is_none() || page.next == marker;
        if !last {
            listing = Some(list_page(page.next));
        }
        // Complete keys: every key but the last, unless this was the last page.
        let complete = if last {
            std::mem::take(&mut carried)
        } else {
            let tail_key = carried.last().map(|l| l.key.clone());
            let split = carried.iter().position(|l| Some(&l.key) == tail_key.as_ref()).unwrap_or(0);
            let rest = carried.split_off(split);
            std::mem::replace(&mut carried, rest)
        };
        if let Some(done_key) = complete.last().map(|l| l.key.clone()) {
            let taken = take_page(intake, rules, job, complete, progress).await.and_then(|()| {
                intake.save_backfill_position(&job.bucket, &job.prefix, Some(&done_key))
            });
            if let Err(e) = taken {
                if let Some(next) = listing {
                    next.abort();
                }
                return Err(e);
            }
        }
        show(progress);
    }
    intake.save_backfill_position(&job.bucket, &job.prefix, None)
}

/// Appends the versions of complete keys that the rules select, oldest first per key.
async fn take_page(
    intake: &Arc<Intake>,
    rules: &CompiledRules,
    job: &Job,
    listed: Vec<ListedVersion>,
    progress: &Progress,
) -> Result<(), CliError> {
    let listed_here = listed.len() as u64;
    // Listings give a key's versions newest first: reversed per key, keys in order.
    let mut ordered: Vec<ListedVersion> = Vec::with_capacity(listed.len());
    let mut key_start = 0;
    for l in listed {
        if ordered.last().is_some_and(|p: &ListedVersion| p.key != l.key) {
            if let Some(slice) = ordered.get_mut(key_start..) {
                slice.reverse();
            }
            key_start = ordered.len();
        }
        ordered.push(l);
    }
    if let Some(slice) = ordered.get_mut(key_start..) {
        slice.reverse();
    }
    // Only versions some enabled rule's prefix selects, and not appended before (by an event
    // or an earlier backfill), are read.
    let selectable: Vec<ListedVersion> = ordered
        .into_iter()
        .filter(|l| rules.rules().iter().any(|r| r.enabled && l.key.starts_with(&r.prefix)))
        .collect();
    let ids: Vec<(&str, &str)> =
        selectable.iter().map(|l| (l.key.as_str(), l.version_id.as_str())).collect();
    let appended = intake.appended(&job.bucket, &ids)?;
    let candidates: Vec<ListedVersion> = selectable
        .into_iter()
        .zip(appended)
        .filter_map(|(l, before)| (!before).then_some(l))
        .collect();
    Progress::add(&progress.skipped, listed_here - candidates.len() as u64);
    let limit = Arc::new(tokio::sync::Semaphore::new(job.concurrency.max(1)));
    let mut reading = tokio::task::JoinSet::new();
    for (i, l) in candidates.into_iter().enumerate() {
        let event = Event {
            bucket: job.bucket.clone(),
            key: l.key.clone(),
            kind: if l.delete_marker { Kind::DeleteMarker } else { Kind::Created },
            version_id: l.version_id.clone(),
            size: Some(l.size),
            etag: l.etag.clone(),
            // No sequencer: a key's versions keep the order they are given in.
            sequencer: String::new(),
        };
        let (intake, limit) = (intake.clone(), limit.clone());
        reading.spawn(async move {
            let _permit = limit.acquire().await;
            let Some(reader) = intake.reader(&event.bucket) else { return (i, event, Ok(None)) };
            let record = record_for(&reader, &event).await;
            (i, event, record)
        });
    }
    let mut read: Vec<(usize, Event, VersionRecord)> = Vec::new();
    while let Some(done) = reading.join_next().await {
        let (i, event, record) =
            done.map_err(|e| CliError::internal(format!("a read failed: {e}")))?;
        match record.map_err(|e| CliError::Remote(format!("reading {}: {e}", event.key)))? {
            Some(mut r) => {
                r.existing = !job.all;
                read.push((i, event, r));
            }
            // Deleted since it was listed.
            None => Progress::add(&progress.skipped, 1),
        }
    }
    read.sort_by_key(|(i, _, _)| *i);
    let mut batch = Vec::with_capacity(read.len());
    for (_, event, record) in read {
        let selected = record.with_event(|ev| {
            rules.match_event(ev).replications().iter().any(|r| {
                matches!(
                    (ev.kind, r.action),
                    (EventKind::Put, s3repl::rules::Action::CopyObject)
                        | (EventKind::DeleteMarker, s3repl::rules::Action::ReplicateDeleteMarker)
                )
            })
        });
        if selected {
            batch.push((event, record));
        } else {
            Progress::add(&progress.skipped, 1);
        }
    }
    if batch.is_empty() {
        return Ok(());
    }
    let outcome = intake.submit(vec![batch]).await.pop().unwrap_or_else(|| {
        Err(crate::run::intake::Refusal { status: 500, reason: "no answer".into() })
    });
    let (appended, duplicates) =
        outcome.map_err(|r| CliError::Remote(format!("appending: {}", r.reason)))?;
    Progress::add(&progress.enqueued, appended);
    Progress::add(&progress.skipped, duplicates);
    Ok(())
}
