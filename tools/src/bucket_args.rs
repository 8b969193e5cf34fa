//! What `s3repl verify` and `s3repl backfill` both take: the replicator's settings, a source
//! bucket on its S3 endpoint, a prefix, and the replication configuration to go by.

use std::path::PathBuf;

use s3repl::config::ReplicationConfiguration;

use crate::error::CliError;
use crate::run::settings::Settings;

/// A source bucket on an S3 endpoint and its configuration.
#[derive(Debug, clap::Args)]
pub(crate) struct BucketArgs {
    /// The `s3repl run` settings file: the source endpoint (`[source] kind = "s3"`), the
    /// destinations, the log and the data directory with the installed configurations.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// The source bucket.
    #[arg(long)]
    pub(crate) bucket: String,
    /// Only keys under this prefix.
    #[arg(long, default_value = "")]
    pub(crate) prefix: String,
    /// The replication configuration (XML or JSON); by default the one installed for the
    /// bucket in the data directory.
    #[arg(long, value_name = "FILE")]
    pub(crate) replication: Option<PathBuf>,
}

impl BucketArgs {
    /// The settings, and the configuration with the time since which it is in force (Unix
    /// ms; 0 for one given with `--replication`).
    pub(crate) fn load(&self) -> Result<(Settings, ReplicationConfiguration, u64), CliError> {
        let settings = Settings::load(&self.config)?;
        if settings.source.kind != "s3" || !settings.source.buckets.contains(&self.bucket) {
            return Err(CliError::settings(format!(
                "the source bucket is read from its S3 endpoint: the settings need [source] kind = \"s3\" with {:?} in its buckets",
                self.bucket
            )));
        }
        if let Some(path) = &self.replication {
            let body = std::fs::read(path).map_err(CliError::file(path))?;
            return Ok((settings, ReplicationConfiguration::parse(&body, None)?, 0));
        }
        let dir = settings.data_dir().join("replication");
        let (config, since_ms) = s3repl::pipeline::installed_configuration(&dir, &self.bucket)?
            .ok_or_else(|| {
                CliError::settings(format!(
                    "bucket {:?} has no installed replication configuration in {} (give --replication)",
                    self.bucket,
                    dir.display()
                ))
            })?;
        Ok((settings, config, since_ms))
    }
}

/// Runs `work` on a multi-threaded runtime; `None` (after saying why) when none can start.
pub(crate) fn block_on<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => Some(r.block_on(work)),
        Err(e) => {
            eprintln!("error: cannot start a runtime: {e}");
            None
        }
    }
}
