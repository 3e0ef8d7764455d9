//! Per-course exponential backoff after failed boots: the first failure
//! waits `base`, each further one doubles the wait up to `cap`, and a VM that
//! becomes warm resets it. A course whose image is broken then costs a boot
//! every few minutes, not a boot loop.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failures {
    count: u32,
    until: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Backoff {
    base_ms: i64,
    cap_ms: i64,
    courses: HashMap<String, Failures>,
}

impl Backoff {
    pub fn new(base_ms: i64, cap_ms: i64) -> Self {
        Backoff {
            base_ms: base_ms.max(1),
            cap_ms: cap_ms.max(base_ms),
            courses: HashMap::new(),
        }
    }

    /// Records a failed boot at `now`; returns when the course may boot again.
    pub fn failed(&mut self, course: &str, now: i64) -> i64 {
        let entry = self.courses.entry(course.to_string()).or_insert(Failures {
            count: 0,
            until: now,
        });
        entry.count = entry.count.saturating_add(1);
        let factor = 1_i64 << (entry.count - 1).min(30);
        let wait = self.base_ms.saturating_mul(factor).min(self.cap_ms);
        entry.until = now + wait;
        entry.until
    }

    /// A VM of the course became ready: boots are healthy again.
    pub fn succeeded(&mut self, course: &str) {
        self.courses.remove(course);
    }

    /// No new VM before this time, if the course is backing off.
    pub fn until(&self, course: &str) -> Option<i64> {
        self.courses.get(course).map(|f| f.until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets_on_success() {
        let mut b = Backoff::new(1_000, 5_000);
        assert_eq!(b.until("c"), None);
        assert_eq!(b.failed("c", 0), 1_000);
        assert_eq!(b.failed("c", 0), 2_000);
        assert_eq!(b.failed("c", 0), 4_000);
        assert_eq!(b.failed("c", 0), 5_000);
        assert_eq!(b.failed("c", 10), 5_010);
        assert_eq!(b.until("other"), None);
        b.succeeded("c");
        assert_eq!(b.until("c"), None);
        assert_eq!(b.failed("c", 0), 1_000);
    }
}
