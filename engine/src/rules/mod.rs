//! Rule matching: a validated configuration compiled into a prefix trie with tag predicates,
//! answering "which destinations get this version, under which rule, doing what?".
//!
//! ```
//! use s3repl::config::ReplicationConfiguration;
//! use s3repl::rules::{Action, CompiledRules, VersionEvent};
//!
//! let config = ReplicationConfiguration::parse(br#"{"Role":"arn:aws:iam::123456789012:role/r",
//!   "Rules":[{"ID":"logs","Priority":1,"Status":"Enabled","Filter":{"Prefix":"logs/"},
//!             "DeleteMarkerReplication":{"Status":"Disabled"},
//!             "Destination":{"Bucket":"arn:aws:s3:::backup"}}]}"#, None)?;
//! let rules = CompiledRules::compile(&config)?;
//! let plan = rules.match_event(&VersionEvent { key: "logs/app.log", ..Default::default() });
//! assert_eq!(plan.replications().len(), 1);
//! assert_eq!(plan.replications()[0].action, Action::CopyObject);
//! # Ok::<(), s3repl::config::ValidationError>(())
//! ```
//!
//! Semantics follow S3 (`docs/s3-compatibility.md` lists the choices made where S3 is silent):
//! only Enabled rules take part, and a disabled rule never shadows an enabled one; prefixes are
//! byte-wise and case-sensitive; `And` needs every tag; per destination the highest Priority
//! wins, and each destination gets its own winner; `SourceSelectionCriteria` (SSE-KMS,
//! replica modifications) and `ExistingObjectReplication` are filters, so a rule lacking them
//! lets a lower-priority rule for the same destination win; the winning rule alone decides
//! delete-marker replication.

mod compiled;
mod event;
mod explain;
mod trie;

pub use compiled::{
    Action, CompiledRule, CompiledRules, DestinationId, Ineligible, Plan, Replication, RuleIndex,
};
pub use event::{EventKind, MetadataChanges, Origin, SseKind, VersionEvent};
pub use explain::{Explanation, Verdict};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_types_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CompiledRules>();
        assert_send_sync::<Plan>();
    }
}
