//! What the benchmark measures besides the engine: the file system's own create rate (the
//! baseline), CPU time, peak RSS, and the latency plot.

use std::fmt::Write as _;
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::error::CliError;

/// How fast this file system takes files the way the local destination writes them.
#[derive(Debug, Clone, Copy)]
pub(super) struct FsRate {
    pub(super) files_per_s: f64,
    pub(super) bytes_per_s: f64,
}

/// Creates files the way the local destination does (a staging file written, then renamed
/// into place, its directory created when the first file needs it) over one thread per core:
/// up to `count` files of `size` bytes (at most 64 MiB each, and about 1 GiB in all, so a
/// large-object run does not first write as much again), named by the run's own keys (`key`
/// of version 0, 1, ...), so the baseline spreads its files over the same directories as the
/// run does (on tmpfs here, 20,000 files in two directories went about 10% faster than over
/// the 1,000 directories of the default keys). The files stay until the benchmark's directory is
/// removed, so that their deletion does not slow the measured run.
pub(super) fn fs_create_rate(
    dir: &std::path::Path,
    size: u64,
    count: u64,
    key: &(dyn Fn(u64) -> String + Sync),
) -> Result<FsRate, CliError> {
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get) as u64;
    let data = vec![0x5au8; usize::try_from(size.min(64 << 20)).unwrap_or(0)];
    let count = count.min(((1u64 << 30) / (data.len() as u64).max(1)).max(1));
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let data = &data;
                scope.spawn(move || -> std::io::Result<()> {
                    for i in (t..count).step_by(usize::try_from(threads).unwrap_or(1)) {
                        let path = dir.join(key(i));
                        let mut staging = path.clone().into_os_string();
                        staging.push(format!(".{t}.tmp"));
                        if let Err(e) = std::fs::write(&staging, data) {
                            let parent =
                                path.parent().filter(|_| e.kind() == std::io::ErrorKind::NotFound);
                            std::fs::create_dir_all(parent.ok_or(e)?)?;
                            std::fs::write(&staging, data)?;
                        }
                        std::fs::rename(&staging, &path)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| CliError::internal("file system baseline thread panicked"))?
                .map_err(CliError::file(dir))?;
        }
        Ok::<(), CliError>(())
    })?;
    // Made durable the way the local destination makes its replicas durable (one syncfs for
    // the lot), so both sides of the ratio pay for durability, and the engine's first sync
    // does not pay for the baseline's files.
    s3repl::dest::sync_file_system(dir).map_err(CliError::file(dir))?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    Ok(FsRate {
        files_per_s: count as f64 / secs,
        bytes_per_s: (count * data.len() as u64) as f64 / secs,
    })
}

/// What this process has used so far, from `/proc/self/stat`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuUsage {
    /// User CPU seconds.
    pub(crate) user: f64,
    /// System (kernel) CPU seconds.
    pub(crate) system: f64,
    /// Minor page faults (a fresh page mapped and zeroed by the kernel: memory touched for
    /// the first time).
    pub(crate) minor_faults: u64,
}

impl CpuUsage {
    /// This process's usage now.
    pub(crate) fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// Parses a `/proc/<pid>/stat` line (the command name, in parentheses, may hold spaces).
    pub(super) fn parse(stat: &str) -> Option<Self> {
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let minor_faults = fields.get(7)?.parse().ok()?;
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // Clock ticks are 100 per second on Linux.
        Some(CpuUsage { user: utime / 100.0, system: stime / 100.0, minor_faults })
    }

    /// User + system seconds.
    pub(crate) fn seconds(&self) -> f64 {
        self.user + self.system
    }

    /// What was used between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        CpuUsage {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
        }
    }
}

/// Resets this process's peak resident set size (`VmHWM`) to its current one, so that
/// [`peak_rss`] then covers only what follows: a run's peak, not its setup's (uploading source
/// objects, measuring baselines) once that memory is freed. False where the kernel refuses
/// (then the peak stays the whole process's).
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size of this process (`VmHWM`), bytes.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub(super) fn svg(hist: &Histogram<u64>) -> String {
    // Latency (ms, log scale) against percentile, the usual HdrHistogram view.
    let (width, height, pad) = (640.0, 360.0, 50.0);
    let max_ms = (hist.max() as f64 / 1000.0).max(0.001);
    let min_ms = (hist.min().max(1) as f64 / 1000.0).min(max_ms);
    let (lo, hi) = (min_ms.log10(), max_ms.log10().max(min_ms.log10() + 1e-9));
    let mut points = String::new();
    for i in 0..=200 {
        let quantile = 1.0 - 10f64.powf(-(f64::from(i) / 200.0) * 5.0);
        let value = hist.value_at_quantile(quantile) as f64 / 1000.0;
        let x = pad + (f64::from(i) / 200.0) * (width - 2.0 * pad);
        let y =
            height - pad - ((value.max(min_ms).log10() - lo) / (hi - lo)) * (height - 2.0 * pad);
        let _ = write!(points, "{x:.1},{y:.1} ");
    }
    let mut labels = String::new();
    for (i, name) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].iter().enumerate() {
        let x = pad + (i as f64 / 5.0) * (width - 2.0 * pad);
        let _ = write!(
            labels,
            r#"<text x="{x:.0}" y="{}" font-size="11" text-anchor="middle">{name}</text>"#,
            height - pad + 16.0
        );
    }
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="{tx}" y="20" font-size="14" text-anchor="middle">s3repl bench: commit → replicated latency by percentile</text>
<line x1="{pad}" y1="{by}" x2="{rx}" y2="{by}" stroke="black"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{by}" stroke="black"/>
<text x="8" y="{pad}" font-size="11">{max_ms:.2} ms</text><text x="8" y="{by}" font-size="11">{min_ms:.3} ms</text>
{labels}
<polyline fill="none" stroke="steelblue" stroke-width="2" points="{points}"/>
</svg>
"#,
        tx = width / 2.0,
        by = height - pad,
        rx = width - pad,
    )
}
