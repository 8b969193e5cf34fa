//! `s3repl-io`: the committed-version log (segments, group-commit writer, `io_uring` reader,
//! tailing, checkpoints), and — as the pipeline lands — object sources and destinations.
//!
//! ```
//! use s3repl_io::log::{LogConfig, LogReader, LogWriter, MemStorage, ReadOptions};
//!
//! let storage = MemStorage::new();
//! let dir = std::path::Path::new("/log");
//! let writer = LogWriter::open_with(storage.clone(), dir, LogConfig::default())?;
//! let pos = writer.append("photos", "2024/cat.jpg", b"an opaque record")?;
//! let mut reader = LogReader::open(storage, dir, pos.partition, 0, ReadOptions::default());
//! let mut out = Vec::new();
//! reader.read_batch(100, &mut out)?;
//! assert_eq!(&out[0].payload[..], b"an opaque record");
//! # Ok::<(), s3repl_io::Error>(())
//! ```
//!
//! This crate is a leaf: no other s3repl crate.
#![warn(unreachable_pub, missing_docs, missing_debug_implementations)]

/// Names on the wire for a field-less enum: `as_str`, `ALL` (declaration order), `FromStr`
/// (an error listing the accepted names) and `Display`. Shared by this crate and the engine;
/// not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! wire_names {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            /// The name used on the wire, on the command line and in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name,)* }
            }
        }
        impl ::std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok($ty::$variant),)*
                    _ => Err(format!(
                        "unknown {} {s:?} (expected one of: {})",
                        stringify!($ty),
                        [$($name),*].join(", ")
                    )),
                }
            }
        }
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod dest;
mod error;
#[cfg(uring)]
pub mod files;
/// Without `io_uring` (not Linux, or built without the `io-uring` feature) there is no ring to
/// read files with: [`files::FileReader::start`] fails and callers read the portable way.
#[cfg(not(uring))]
pub mod files {
    /// Stand-in for the Linux reader; it never starts.
    #[derive(Debug, Clone)]
    pub struct FileReader;

    impl FileReader {
        /// Always fails: no `io_uring` in this build.
        pub fn start(_depth: usize, _max_len: usize) -> std::io::Result<Self> {
            Err(std::io::ErrorKind::Unsupported.into())
        }

        /// Never reached (no reader starts).
        #[allow(clippy::unused_async)] // The signature of the `io_uring` reader it stands for.
        pub async fn read(
            &self,
            _path: std::path::PathBuf,
        ) -> Option<std::io::Result<Option<bytes::Bytes>>> {
            None
        }
    }
}
pub mod log;
#[cfg(feature = "sigv4")]
pub mod sigv4;

pub use error::Error;
