//! Explanations: every rule's verdict for one event, in words. The slow, thorough path behind
//! `s3repl explain`, answering "why did (or didn't) this object replicate?".

use std::fmt;

use super::compiled::{CompiledRule, CompiledRules, Ineligible, Plan, decide};
use super::event::{EventKind, VersionEvent};

/// What one rule made of the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The rule won its destination.
    Selected,
    /// The rule is `Disabled`.
    Disabled,
    /// The key does not start with the rule's prefix.
    PrefixMismatch,
    /// A delete marker carries no tags, so a tag-filtered rule cannot match it.
    TagRuleDeleteMarker,
    /// A required tag is absent or has another value.
    TagMismatch {
        /// The tag key.
        key: String,
    },
    /// The rule's `Not` excludes the object.
    Excluded {
        /// What excluded it: `prefix "p"` or `tag "k"="v"`.
        by: String,
    },
    /// The object is SSE-KMS/DSSE-KMS and the rule does not select such objects.
    SseKmsNotSelected,
    /// The object predates the configuration and the rule lacks `ExistingObjectReplication`.
    ExistingNotSelected,
    /// The object is a replica and the rule lacks `ReplicaModifications`.
    ReplicaNotSelected,
    /// Another matching rule with a higher priority won the same destination.
    Outranked {
        /// The winning rule's ID.
        by: String,
    },
    /// The rule won its destination but does not replicate delete markers.
    DeleteMarkersDisabled,
    /// The rule won its destination, but nothing it replicates changed: the change set is
    /// empty, or only the ACL changed and the rule makes the destination account own the
    /// replicas (`AccessControlTranslation`), under which S3 does not replicate ACL changes.
    NoReplicatedChange,
    /// The event is ineligible whatever the rules.
    Ineligible,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Selected => f.write_str("selected"),
            Verdict::Disabled => f.write_str("skipped: the rule is Disabled"),
            Verdict::PrefixMismatch => f.write_str("skipped: the key does not start with the rule's prefix"),
            Verdict::TagRuleDeleteMarker => {
                f.write_str("skipped: delete markers carry no tags, so a tag filter cannot match")
            }
            Verdict::TagMismatch { key } => {
                write!(f, "skipped: tag {key:?} is missing or has another value")
            }
            Verdict::Excluded { by } => write!(f, "skipped: the rule's Not excludes {by}"),
            Verdict::SseKmsNotSelected => f.write_str(
                "skipped: the object is KMS-encrypted and the rule lacks SseKmsEncryptedObjects Enabled",
            ),
            Verdict::ExistingNotSelected => f.write_str(
                "skipped: the object predates the configuration and the rule lacks ExistingObjectReplication Enabled",
            ),
            Verdict::ReplicaNotSelected => f.write_str(
                "skipped: the object is a replica and the rule lacks ReplicaModifications Enabled",
            ),
            Verdict::Outranked { by } => {
                write!(f, "skipped: rule {by:?} has a higher priority for the same destination")
            }
            Verdict::DeleteMarkersDisabled => f.write_str(
                "matched, but the rule does not replicate delete markers (DeleteMarkerReplication is not Enabled)",
            ),
            Verdict::NoReplicatedChange => f.write_str(
                "matched, but nothing the rule replicates changed (ACL changes are not replicated when AccessControlTranslation makes the destination account own the replicas)",
            ),
            Verdict::Ineligible => f.write_str("not considered: the event is ineligible"),
        }
    }
}

/// Every rule's verdict for one event, with the resulting plan.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Why nothing replicates whatever the rules, if so.
    pub ineligible: Option<Ineligible>,
    /// `(rule ID, verdict)` in document order.
    pub rules: Vec<(String, Verdict)>,
    /// The same plan [`CompiledRules::match_into`] produces.
    pub plan: Plan,
}

fn filter_verdict(rule: &CompiledRule, ev: &VersionEvent<'_>) -> Option<Verdict> {
    if !rule.enabled {
        return Some(Verdict::Disabled);
    }
    if !ev.key.as_bytes().starts_with(rule.prefix.as_bytes()) {
        return Some(Verdict::PrefixMismatch);
    }
    if ev.kind == EventKind::DeleteMarker && !rule.tags.is_empty() {
        return Some(Verdict::TagRuleDeleteMarker);
    }
    if let Some((k, _)) =
        rule.tags.iter().find(|(k, v)| !ev.tags.iter().any(|(tk, tv)| tk == k && tv == v))
    {
        return Some(Verdict::TagMismatch { key: k.clone() });
    }
    if let Some(p) = rule.excluding_prefix(ev.key) {
        return Some(Verdict::Excluded { by: format!("prefix {p:?}") });
    }
    if ev.kind != EventKind::DeleteMarker
        && let Some((k, v)) = rule.excluding_tag(ev.tags)
    {
        return Some(Verdict::Excluded { by: format!("tag {k:?}={v:?}") });
    }
    if ev.sse.is_kms() && !rule.sse_kms {
        return Some(Verdict::SseKmsNotSelected);
    }
    if ev.existing && !rule.existing_objects {
        return Some(Verdict::ExistingNotSelected);
    }
    if ev.is_replica && !rule.replica_modifications {
        return Some(Verdict::ReplicaNotSelected);
    }
    None
}

impl CompiledRules {
    /// Evaluates every rule (linearly) and says what each made of the event.
    pub fn explain(&self, ev: &VersionEvent<'_>) -> Explanation {
        let ineligible = self.ineligible(ev);
        if ineligible.is_some() {
            return Explanation {
                ineligible,
                rules: self.rules().iter().map(|r| (r.id.clone(), Verdict::Ineligible)).collect(),
                plan: Plan::default(),
            };
        }
        let verdicts: Vec<Option<Verdict>> =
            self.rules().iter().map(|r| filter_verdict(r, ev)).collect();
        // Winner per destination among the rules that passed.
        let mut winners: Vec<Option<usize>> = vec![None; self.destinations().len()];
        for (i, rule) in self.rules().iter().enumerate() {
            if verdicts.get(i).is_some_and(Option::is_none)
                && let Some(w) = winners.get_mut(rule.destination.0 as usize)
                && w.and_then(|j| self.rules().get(j))
                    .is_none_or(|cur| rule.priority > cur.priority)
            {
                *w = Some(i);
            }
        }
        let mut plan = Plan::default();
        let mut rules = Vec::with_capacity(self.rules().len());
        for (i, rule) in self.rules().iter().enumerate() {
            let verdict = if let Some(v) = verdicts.get(i).cloned().flatten() {
                v
            } else {
                let winner = winners.get(rule.destination.0 as usize).copied().flatten();
                if winner == Some(i) {
                    let dest = rule.destination.0 as usize;
                    let index = u32::try_from(i).unwrap_or(u32::MAX);
                    match decide(rule, ev, dest, index) {
                        Some(r) => {
                            plan.push(r);
                            Verdict::Selected
                        }
                        None if ev.kind == EventKind::MetadataUpdate => Verdict::NoReplicatedChange,
                        None => Verdict::DeleteMarkersDisabled,
                    }
                } else {
                    let by = winner
                        .and_then(|w| self.rules().get(w))
                        .map(|w| w.id.clone())
                        .unwrap_or_default();
                    Verdict::Outranked { by }
                }
            };
            rules.push((rule.id.clone(), verdict));
        }
        plan.sort_by_destination();
        Explanation { ineligible: None, rules, plan }
    }
}
