//! `s3repl validate`: parse and validate a configuration, report in text or JSON.

use crate::error::CliError;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use s3repl::config::{BucketContext, ReplicationConfiguration, ValidationError, Variant};
use serde::Serialize;

/// Arguments of `s3repl validate`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The API the document is for; by default taken from the XML namespace or the
    /// s3control-only JSON members.
    #[arg(long, value_enum)]
    variant: Option<VariantArg>,
    /// Bucket state for the bucket checks (JSON: account, source, buckets).
    #[arg(long, value_name = "CTX.json")]
    context: Option<PathBuf>,
    /// Report format; with `json` the last line of stdout is the verdict.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    format: ReportFormat,
    /// Also write the normalized configuration (IDs filled in) in this syntax.
    #[arg(long, value_enum)]
    print: Option<PrintFormat>,
    /// The configuration file, or `-` for standard input.
    file: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum VariantArg {
    S3,
    S3control,
}

impl From<VariantArg> for Variant {
    fn from(v: VariantArg) -> Self {
        match v {
            VariantArg::S3 => Variant::S3,
            VariantArg::S3control => Variant::S3Control,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PrintFormat {
    Xml,
    Json,
}

/// The verdict line of `--format json`: `{"valid":true}` or the error with its rule.
#[derive(Serialize)]
#[serde(untagged)]
enum Verdict<'a> {
    Valid {
        valid: bool,
    },
    Invalid {
        valid: bool,
        code: &'a str,
        message: &'a str,
        rule_id: Option<&'a str>,
        /// The rule's position (from 1) when the document gave it no ID (`rule_id` was
        /// generated).
        #[serde(skip_serializing_if = "Option::is_none")]
        unnamed_rule: Option<usize>,
    },
}

/// Reads a file, or standard input for `-`.
pub(crate) fn read_input(path: &PathBuf) -> std::io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path)
    }
}

fn load_context(path: Option<&PathBuf>) -> Result<BucketContext, CliError> {
    let Some(path) = path else { return Ok(BucketContext::default()) };
    let bytes = std::fs::read(path).map_err(CliError::file(path))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| CliError::settings(format!("bad context file {}: {e}", path.display())))
}

/// Runs the subcommand; see the crate docs for exit codes.
pub(crate) fn run(args: &Args) -> ExitCode {
    let body = match read_input(&args.file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("s3repl validate: cannot read {}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let ctx = match load_context(args.context.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("s3repl validate: {e}");
            return ExitCode::from(2);
        }
    };
    let parsed = ReplicationConfiguration::parse(&body, args.variant.map(Variant::from));
    let outcome = parsed.as_ref().map_err(Clone::clone).and_then(|c| c.validate(&ctx));
    let mut out = std::io::stdout().lock();
    if let (Ok(config), Some(print)) = (&parsed, args.print) {
        let text = match print {
            PrintFormat::Xml => config.to_xml(),
            PrintFormat::Json => config.to_json() + "\n",
        };
        if out.write_all(text.as_bytes()).is_err() {
            return ExitCode::from(2);
        }
    }
    let report = match args.format {
        ReportFormat::Json => json_report(&outcome),
        ReportFormat::Text => text_report(parsed.as_ref().ok(), &outcome),
    };
    if out.write_all(report.as_bytes()).and_then(|()| out.flush()).is_err() {
        return ExitCode::from(2);
    }
    if outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn json_report(outcome: &Result<(), ValidationError>) -> String {
    let verdict = match outcome {
        Ok(()) => Verdict::Valid { valid: true },
        Err(e) => Verdict::Invalid {
            valid: false,
            code: e.code.as_str(),
            message: &e.message,
            rule_id: e.rule_id.as_deref(),
            unnamed_rule: e.unnamed_rule,
        },
    };
    serde_json::to_string(&verdict).unwrap_or_else(|_| String::from("{\"valid\":false}")) + "\n"
}

fn text_report(
    config: Option<&ReplicationConfiguration>,
    outcome: &Result<(), ValidationError>,
) -> String {
    match (config, outcome) {
        (Some(c), Ok(())) => {
            let enabled = c.rules.iter().filter(|r| r.is_enabled()).count();
            let mut s = format!(
                "valid: {} configuration, schema {}, {} rule(s) ({} enabled)\n",
                c.variant,
                c.schema_version(),
                c.rules.len(),
                enabled
            );
            for r in &c.rules {
                let _ = writeln!(
                    s,
                    "  rule {:?}: {} -> {}{}",
                    r.id,
                    r.status.as_str(),
                    r.destination.bucket,
                    r.priority.map(|p| format!(" (priority {p})")).unwrap_or_default()
                );
            }
            s
        }
        (_, Err(e)) => {
            let rule = match (e.unnamed_rule, e.rule_id.as_deref()) {
                (Some(n), _) => format!("rule #{n} (it has no ID)"),
                (None, Some(r)) => format!("rule {r:?}"),
                (None, None) => String::from("the configuration as a whole"),
            };
            format!("invalid: {}\n  in:      {rule}\n  message: {}\n", e.code, e.message)
        }
        (None, Ok(())) => String::from("valid\n"),
    }
}
