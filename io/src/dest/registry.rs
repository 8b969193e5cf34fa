//! Destination bucket ARN → destination.

use std::collections::HashMap;

use super::{Destination, DestinationError};

/// Writer threads for local destinations (one pool per process): file creation on a local file
/// system is CPU work in the kernel (tmpfs) or waits on the journal (ext4, where more writers in
/// flight help).
pub const LOCAL_WRITERS: usize = 8;

/// Destination bucket ARN → destination.
#[derive(Debug, Clone, Default)]
pub struct DestinationRegistry {
    by_arn: HashMap<String, Destination>,
}

impl DestinationRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        DestinationRegistry::default()
    }

    /// Registers a destination under its ARN (replacing any previous one).
    pub fn insert(&mut self, d: Destination) {
        self.by_arn.insert(d.arn().to_owned(), d);
    }

    /// The destination for an ARN.
    pub fn get(&self, arn: &str) -> Option<&Destination> {
        self.by_arn.get(arn)
    }

    /// [`Destination::sync`] of every destination (blocking).
    pub fn sync(&self) -> Result<(), DestinationError> {
        self.by_arn.values().try_for_each(Destination::sync)
    }

    /// Every registered destination.
    pub fn iter(&self) -> impl Iterator<Item = &Destination> + '_ {
        self.by_arn.values()
    }
}
