//! The `s3repl` command line: `validate` checks a replication configuration as S3 would;
//! `explain` says which rules replicate an object where. A library so that the fuzz targets
//! reach what the binary does with its input (`fuzzing`); the binary is `src/main.rs`.
//!
//! Exit codes are shared by every subcommand: 0 success, 1 the input was judged and found
//! wanting (an invalid configuration), 2 usage or I/O errors.

// Reports divide counts by seconds; f64 precision is ample for them.
#![allow(clippy::cast_precision_loss)]

mod backfill;
mod bench;
mod bucket_args;
mod error;
mod explain;
#[doc(hidden)]
pub mod fuzzing;
mod loadtest;
mod log_cmd;
mod run;
mod validate;
mod verify;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// s3repl: S3 bucket replication engine tools.
#[derive(Debug, Parser)]
#[command(name = "s3repl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a replication configuration (S3 XML or AWS CLI JSON) exactly as S3 does.
    Validate(validate::Args),
    /// Explain which rules replicate an object to which destinations, and why others do not.
    Explain(explain::Args),
    /// Benchmark the replication engine on embedded defaults and report rates and latencies.
    Bench(bench::Args),
    /// The standalone replicator: replicate the log's versions and serve the S3-compatible
    /// admin endpoint (`PUT/GET/DELETE /{bucket}?replication`).
    Run(run::Args),
    /// Load-test the engine: open-loop arrivals at a rate (or a ramp), latency corrected for
    /// coordinated omission, RTC compliance, a latency-over-time plot.
    Loadtest(loadtest::Args),
    /// The committed-version log: generate synthetic versions, inspect, tail.
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Existing objects: list a source bucket and append the versions the rules select (under
    /// `ExistingObjectReplication`, or all with `--all`) to the log, resumably.
    Backfill(backfill::Args),
    /// Prove a source bucket and its destinations agree: every version the rules select has
    /// its replica, nothing else is there, and each replica matches its source version.
    Verify(verify::Args),
}

/// The `s3repl` command line (the binary's `main`).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Log(cmd) => log_cmd::run(&cmd),
        Command::Bench(args) => bench::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Loadtest(args) => loadtest::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Backfill(args) => backfill::run(&args),
    }
}
