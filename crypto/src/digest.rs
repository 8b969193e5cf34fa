//! BLAKE3 digests of plaintext computed while streaming: whole object, and optionally per
//! part, so a replica can be checked against its source without reading either again.

/// A finished digest: the whole object's BLAKE3 and, if asked for, each part's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDigest {
    /// BLAKE3 of all the plaintext.
    pub whole: blake3::Hash,
    /// BLAKE3 of each part's plaintext, in order (empty unless per-part digests were asked for).
    pub parts: Vec<blake3::Hash>,
    /// Plaintext length.
    pub len: u64,
}

/// An incremental BLAKE3 over plaintext.
#[derive(Debug, Clone)]
pub struct PlaintextDigest {
    whole: blake3::Hasher,
    part: Option<blake3::Hasher>,
    parts: Vec<blake3::Hash>,
    len: u64,
}

impl PlaintextDigest {
    /// A digest of the whole object; with `per_part`, also of each part (costs a second hash
    /// of every byte, so ask only when part digests are needed).
    pub fn new(per_part: bool) -> Self {
        PlaintextDigest {
            whole: blake3::Hasher::new(),
            part: per_part.then(blake3::Hasher::new),
            parts: Vec::new(),
            len: 0,
        }
    }

    /// Adds plaintext.
    pub fn update(&mut self, data: &[u8]) {
        self.whole.update(data);
        if let Some(p) = &mut self.part {
            p.update(data);
        }
        self.len += data.len() as u64;
    }

    /// Ends the current part (a no-op without per-part digests).
    pub fn finish_part(&mut self) -> Option<blake3::Hash> {
        let p = self.part.as_mut()?;
        let h = p.finalize();
        p.reset();
        self.parts.push(h);
        Some(h)
    }

    /// The digest so far.
    pub fn finalize(&self) -> ObjectDigest {
        ObjectDigest { whole: self.whole.finalize(), parts: self.parts.clone(), len: self.len }
    }
}
