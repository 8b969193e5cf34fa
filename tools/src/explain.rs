//! `s3repl explain`: which rule replicates an object where, and why the others do not.

use crate::error::CliError;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use s3repl::config::{ReplicationConfiguration, StorageClass, Variant};
use s3repl::record::{SseInfo, VersionRecord};
use s3repl::rules::{
    Action, CompiledRules, EventKind, Explanation, MetadataChanges, Origin, SseKind,
};
use serde::{Deserialize, Serialize};

use crate::validate::{VariantArg, read_input};

/// Arguments of `s3repl explain`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["key", "objects"])))]
pub(crate) struct Args {
    /// The replication configuration (XML or JSON).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The API the configuration is for (default: from the document).
    #[arg(long, value_enum)]
    variant: Option<VariantArg>,
    /// Output format: words, or one JSON line per object.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// The object key to explain.
    #[arg(long)]
    key: Option<String>,
    /// An object tag, `key=value` (repeatable).
    #[arg(long = "tag", value_name = "K=V", value_parser = parse_tag)]
    tags: Vec<(String, String)>,
    /// The event kind.
    #[arg(long, default_value = "put", value_parser = |s: &str| s.parse::<EventKind>())]
    kind: EventKind,
    /// The object's server-side encryption.
    #[arg(long, default_value = "none", value_parser = |s: &str| s.parse::<SseKind>())]
    sse: SseKind,
    /// The object is a replica.
    #[arg(long)]
    replica: bool,
    /// The object predates the configuration.
    #[arg(long)]
    existing: bool,
    /// The object's storage class.
    #[arg(long, default_value = "STANDARD", value_parser = parse_storage_class)]
    storage_class: StorageClass,
    /// Who caused the event.
    #[arg(long, default_value = "user", value_parser = |s: &str| s.parse::<Origin>())]
    origin: Origin,
    /// For `--kind metadata_update`: what changed (`tags`, `acl`, `retention`, `legal_hold`,
    /// joined with `+`).
    #[arg(long, default_value = "tags", value_parser = |s: &str| s.parse::<MetadataChanges>())]
    changes: MetadataChanges,
    /// JSON lines of objects to explain (`-` for standard input).
    #[arg(long, value_name = "FILE|-", conflicts_with_all = ["key", "tags", "replica", "existing"])]
    objects: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("a tag is key=value, got {s:?}"))
}

fn parse_storage_class(s: &str) -> Result<StorageClass, String> {
    s.parse().map_err(|()| format!("unknown storage class {s:?}"))
}

/// One line of `--objects`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectLine {
    key: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    sse: Option<String>,
    #[serde(default)]
    is_replica: bool,
    #[serde(default)]
    existing: bool,
    #[serde(default)]
    storage_class: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    changes: Option<String>,
}

/// Reads one `--objects` line into the record the matcher is asked about.
fn object_from_line(line: &str) -> Result<VersionRecord, CliError> {
    let bad = |e: String| CliError::settings(format!("bad object line: {e}"));
    let o: ObjectLine = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    Ok(VersionRecord {
        key: o.key,
        tags: o.tags.into_iter().collect(),
        operation: o.kind.as_deref().map_or(Ok(EventKind::Put), str::parse).map_err(bad)?,
        sse: SseInfo {
            kind: o.sse.as_deref().map_or(Ok(SseKind::None), str::parse).map_err(bad)?,
            ..SseInfo::default()
        },
        is_replica: o.is_replica,
        existing: o.existing,
        storage_class: o
            .storage_class
            .as_deref()
            .map_or(Ok(StorageClass::Standard), parse_storage_class)
            .map_err(bad)?,
        origin: o.origin.as_deref().map_or(Ok(Origin::User), str::parse).map_err(bad)?,
        changes: o.changes.as_deref().map_or(Ok(MetadataChanges::TAGS), str::parse).map_err(bad)?,
        ..VersionRecord::default()
    })
}

#[derive(Serialize)]
struct Target<'a> {
    bucket: &'a str,
    rule_id: &'a str,
    storage_class: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonLine<'a> {
    replicate_to: Vec<Target<'a>>,
    why: Vec<String>,
}

fn why(rules: &CompiledRules, ex: &Explanation) -> Vec<String> {
    if let Some(reason) = ex.ineligible {
        return vec![format!("not replicated: {reason}")];
    }
    let mut out = Vec::with_capacity(ex.rules.len() + ex.plan.replications().len());
    for r in ex.plan.replications() {
        let (Some(rule), Some(dest)) = (rules.rule(r.rule), rules.destination(r.destination))
        else {
            continue;
        };
        let class = r.storage_class.map(|c| format!(", storage class {c}")).unwrap_or_default();
        // S3 replicates a metadata change only to a version that was itself replicated.
        let only_if = if r.action == Action::SyncMetadata {
            " (only if this version was replicated there: a change to a version no rule replicated is not)"
        } else {
            ""
        };
        out.push(format!(
            "replicate to {dest} under rule {:?}: {}{class}{only_if}",
            rule.id,
            r.action.as_str()
        ));
    }
    out.extend(ex.rules.iter().map(|(id, verdict)| format!("rule {id:?}: {verdict}")));
    if ex.plan.is_empty() {
        out.push(String::from("not replicated: no rule selects this object"));
    }
    out
}

fn render(rules: &CompiledRules, object: &VersionRecord, format: Format) -> String {
    let ex = object.with_event(|ev| rules.explain(ev));
    match format {
        Format::Json => {
            let line = JsonLine {
                replicate_to: ex
                    .plan
                    .replications()
                    .iter()
                    .filter_map(|r| {
                        Some(Target {
                            bucket: rules.destination(r.destination)?,
                            rule_id: &rules.rule(r.rule)?.id,
                            storage_class: r.storage_class.map(StorageClass::as_str),
                        })
                    })
                    .collect(),
                why: why(rules, &ex),
            };
            serde_json::to_string(&line).unwrap_or_default() + "\n"
        }
        Format::Text => {
            let tags: Vec<String> = object.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let operation = if object.operation == EventKind::MetadataUpdate {
                format!("{} of {}", object.operation, object.changes)
            } else {
                object.operation.to_string()
            };
            let mut s = format!(
                "{:?} ({}, sse {}, {}{}{}{})\n",
                object.key,
                operation,
                object.sse.kind,
                object.storage_class,
                if tags.is_empty() { String::new() } else { format!(", tags {}", tags.join(" ")) },
                if object.is_replica { ", replica" } else { "" },
                if object.existing { ", existing" } else { "" },
            );
            for line in why(rules, &ex) {
                s.push_str("  ");
                s.push_str(&line);
                s.push('\n');
            }
            s
        }
    }
}

/// Runs the subcommand: exit 0, 1 when the configuration is invalid, 2 on usage, I/O or
/// object-line errors (each bad line is reported in place and the rest still explained).
pub(crate) fn run(args: &Args) -> ExitCode {
    let body = match read_input(&args.config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("s3repl explain: cannot read {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let compiled = ReplicationConfiguration::parse(&body, args.variant.map(Variant::from))
        .and_then(|c| CompiledRules::compile(&c));
    let rules = match compiled {
        Ok(r) => r,
        Err(e) => {
            eprintln!("s3repl explain: the configuration is invalid: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let mut status = ExitCode::SUCCESS;
    let mut emit = |text: &str| out.write_all(text.as_bytes()).is_ok();
    if let Some(path) = &args.objects {
        let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
            Box::new(BufReader::new(std::io::stdin()))
        } else {
            match std::fs::File::open(path) {
                Ok(f) => Box::new(BufReader::new(f)),
                Err(e) => {
                    eprintln!("s3repl explain: cannot read {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
        };
        for (n, line) in reader.lines().enumerate() {
            let line = match line {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("s3repl explain: read error: {e}");
                    return ExitCode::from(2);
                }
            };
            let text = match object_from_line(&line) {
                Ok(object) => render(&rules, &object, args.format),
                Err(e) => {
                    eprintln!("s3repl explain: line {}: {e}", n + 1);
                    status = ExitCode::from(2);
                    match args.format {
                        Format::Json => {
                            serde_json::json!({ "error": e.to_string() }).to_string() + "\n"
                        }
                        Format::Text => format!("line {}: {e}\n", n + 1),
                    }
                }
            };
            if !emit(&text) {
                return ExitCode::from(2);
            }
        }
    } else {
        let object = VersionRecord {
            key: args.key.clone().unwrap_or_default(),
            tags: args.tags.clone(),
            operation: args.kind,
            sse: SseInfo { kind: args.sse, ..SseInfo::default() },
            is_replica: args.replica,
            existing: args.existing,
            storage_class: args.storage_class,
            origin: args.origin,
            changes: args.changes,
            ..VersionRecord::default()
        };
        if !emit(&render(&rules, &object, args.format)) {
            return ExitCode::from(2);
        }
    }
    status
}
