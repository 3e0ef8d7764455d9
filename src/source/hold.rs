//! Whether a new revision removes too much of what runs to be applied
//! without an admin's word: the one rule the reconciler holds revisions by,
//! and `labpool diff` and `plan` warn with. Pure.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::HoldConfig;
use crate::course::Course;

/// What a revision removes from the one in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Removal {
    /// Courses in the revision in force.
    pub courses_before: usize,
    /// Courses in the new revision.
    pub courses_after: usize,
    /// The courses it removes, by name.
    pub removed: Vec<String>,
    /// `pool.warm` summed over the courses in force.
    pub warm_before: u64,
    /// Warm VMs it takes away: the `pool.warm` of removed courses plus what
    /// lowered counts give up (outside schedule windows).
    pub warm_removed: u64,
}

impl Removal {
    /// What going from `before` (the revision in force) to `after` removes.
    pub fn between(before: &[Course], after: &[Course]) -> Removal {
        let after_by: BTreeMap<&str, &Course> =
            after.iter().map(|c| (c.name.as_str(), c)).collect();
        let mut removal = Removal {
            courses_before: before.len(),
            courses_after: after.len(),
            ..Removal::default()
        };
        for c in before {
            removal.warm_before += u64::from(c.pool.warm);
            match after_by.get(c.name.as_str()) {
                None => {
                    removal.removed.push(c.name.to_string());
                    removal.warm_removed += u64::from(c.pool.warm);
                }
                Some(h) => {
                    removal.warm_removed += u64::from(c.pool.warm.saturating_sub(h.pool.warm));
                }
            }
        }
        removal.removed.sort();
        removal
    }

    /// Why this removal must wait for an admin, if it must: it removes every
    /// course (when there were any), or more than a configured share of the
    /// courses or of the warm VMs.
    pub fn crosses(&self, policy: &HoldConfig) -> Option<String> {
        let share = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64
            }
        };
        let removed = self.removed.len() as u64;
        if self.courses_before > 0 && self.courses_after == 0 {
            Some("it removes every course".to_string())
        } else if share(removed, self.courses_before as u64) > policy.max_removed_share {
            Some(format!(
                "it removes more than source.hold.max_removed_share ({}) of the courses",
                policy.max_removed_share
            ))
        } else if share(self.warm_removed, self.warm_before) > policy.max_warm_removed_share {
            Some(format!(
                "it removes more than source.hold.max_warm_removed_share ({}) of the warm VMs",
                policy.max_warm_removed_share
            ))
        } else {
            None
        }
    }

    /// `removes 3 of 4 courses (warm VMs -7)`.
    pub fn describe(&self) -> String {
        format!(
            "removes {} of {} courses (warm VMs -{})",
            self.removed.len(),
            self.courses_before,
            self.warm_removed
        )
    }
}

/// A revision held back, as status, the API and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Held {
    /// The revision id (the commit id of a Git revision).
    pub id: String,
    /// The commit's subject, author and time, for a Git revision.
    pub commit: Option<serde_json::Value>,
    #[serde(flatten)]
    pub removal: Removal,
    /// Why it is held.
    pub reason: String,
    /// Held since (unix ms).
    pub at: i64,
    /// The admin who confirmed it (it applies at the next pass).
    pub confirmed_by: Option<String>,
    pub confirmed_at: Option<i64>,
}

impl Held {
    /// The held revision as the store records it.
    pub fn from_row(row: &crate::store::SourceRevisionRow) -> Held {
        let detail: serde_json::Value = serde_json::from_str(&row.detail_json).unwrap_or_default();
        Held {
            id: row.revision.clone(),
            commit: row
                .commit_json
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok()),
            removal: serde_json::from_value(detail["removal"].clone()).unwrap_or_default(),
            reason: detail["reason"].as_str().unwrap_or_default().to_string(),
            at: row.at,
            confirmed_by: row.confirmed_by.clone(),
            confirmed_at: row.confirmed_at,
        }
    }

    /// The warning `labpool diff` and `plan` print.
    pub fn warning(&self) -> String {
        match &self.confirmed_by {
            None => format!(
                "warning: revision {} {}: {}; labpool holds it until an admin confirms it (labpool revision confirm {})",
                self.id,
                self.removal.describe(),
                self.reason,
                self.id
            ),
            Some(by) => format!(
                "warning: revision {} {}: held, confirmed by {by}; it applies at the next pass",
                self.id,
                self.removal.describe()
            ),
        }
    }

    /// The one line status and logs print: `revision abc removes 3 of 4
    /// courses (warm VMs -7): it removes more than …`.
    pub fn line(&self) -> String {
        format!(
            "revision {} {}: {}",
            self.id,
            self.removal.describe(),
            self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn course(name: &str, warm: u32) -> Course {
        serde_json::from_value(serde_json::json!({
            "name": name, "title": "T", "image": "busybox",
            "vm": {"vcpus": 1, "memory": "192MiB"},
            "pool": {"warm": warm, "max": 10},
        }))
        .unwrap()
    }

    #[test]
    fn shares_decide_and_removing_everything_always_holds() {
        let policy = HoldConfig::default();
        let four = [
            course("a", 2),
            course("b", 2),
            course("c", 3),
            course("d", 1),
        ];
        let r = Removal::between(&four, &four[..1]);
        assert_eq!(r.removed, ["b", "c", "d"]);
        assert_eq!((r.warm_before, r.warm_removed), (8, 6));
        assert_eq!(r.describe(), "removes 3 of 4 courses (warm VMs -6)");
        assert!(r.crosses(&policy).unwrap().contains("max_removed_share"));
        // Half is not more than half.
        let r = Removal::between(&four, &four[..2]);
        assert_eq!(r.crosses(&policy), None, "{r:?}");
        // Lowered counts are warm capacity removed too.
        let lowered = [
            course("a", 0),
            course("b", 0),
            course("c", 1),
            course("d", 1),
        ];
        let r = Removal::between(&four, &lowered);
        assert!(r.removed.is_empty());
        assert_eq!(r.warm_removed, 6);
        assert!(r.crosses(&policy).unwrap().contains("warm"));
        // Everything: held whatever the shares say.
        let lax = HoldConfig {
            max_removed_share: 1.0,
            max_warm_removed_share: 1.0,
        };
        let r = Removal::between(&four, &[]);
        assert_eq!(r.crosses(&lax).unwrap(), "it removes every course");
        // Nothing ran before: nothing to remove.
        assert_eq!(Removal::between(&[], &[]).crosses(&policy), None);
        assert_eq!(Removal::between(&[], &four).crosses(&policy), None);
    }
}
