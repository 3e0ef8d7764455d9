//! Whose an object on a host is. Every mark labpool writes names its
//! instance (the store's id); this decides, from a mark's instance and
//! whether the store knows the VM, what labpool may do with the object.
//! Pure: no host, no store.

/// The instances whose objects count as this labpool's: its own, and those
/// an operator adopted (`reconcile.adopt_instances`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    pub instance: String,
    pub adopted: Vec<String>,
}

/// What a marked object is to this labpool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The store knows its VM: it is this labpool's, managed through its row.
    Known,
    /// The store knows its VM but its mark names no instance (made by an
    /// earlier version): this labpool adopts it (re-marks it where it can).
    KnownLegacy,
    /// This labpool's (or an adopted instance's) and unknown to the store:
    /// an orphan, collected after the grace.
    Orphan,
    /// Another instance's, or a legacy object this store does not know:
    /// reported under this name (the instance id, `legacy`, or `invalid`
    /// for an instance attribute of no form labpool makes), never touched.
    Foreign(String),
}

/// The name legacy objects unknown to the store are reported under.
pub const LEGACY: &str = "legacy";

impl Owners {
    pub fn new(instance: impl Into<String>, adopted: &[String]) -> Owners {
        Owners {
            instance: instance.into(),
            adopted: adopted.to_vec(),
        }
    }

    /// Is a mark naming `instance` one of ours? A mark naming none never is:
    /// only the store can prove a legacy object ours.
    pub fn owns(&self, instance: Option<&str>) -> bool {
        instance.is_some_and(|i| i == self.instance || self.adopted.iter().any(|a| a == i))
    }

    /// The verdict on an object whose mark names `instance`, whose VM the
    /// store does (`known`) or does not know.
    pub fn judge(&self, instance: Option<&str>, known: bool) -> Verdict {
        match (instance, known) {
            (None, true) => Verdict::KnownLegacy,
            (None, false) => Verdict::Foreign(LEGACY.into()),
            (Some(_), _) if self.owns(instance) => {
                if known {
                    Verdict::Known
                } else {
                    Verdict::Orphan
                }
            }
            (Some(i), _) if super::xml::is_instance_id(i) => Verdict::Foreign(i.to_string()),
            (Some(_), _) => Verdict::Foreign("invalid".into()),
        }
    }
}

/// What removing an orphan came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// It was there, it was ours, it is gone now; with it, the volume (or
    /// network) of its own VM, if that went too.
    Removed(Option<String>),
    /// Nothing by that name any more (collected already, or never there).
    Gone,
    /// The re-read mark is not ours (another instance's, or none): left.
    NotOurs,
    /// A volume some domain still uses: left for a later pass.
    InUse,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINE: &str = "0123456789ab";
    const OTHER: &str = "ba9876543210";
    const LOST: &str = "00000000abcd";

    #[test]
    fn only_our_instance_and_adopted_ones_are_ours() {
        let o = Owners::new(MINE, &[LOST.to_string()]);
        assert!(o.owns(Some(MINE)));
        assert!(o.owns(Some(LOST)));
        assert!(!o.owns(Some(OTHER)));
        assert!(!o.owns(None), "a legacy mark is never ours by itself");
    }

    #[test]
    fn verdicts() {
        let o = Owners::new(MINE, &[LOST.to_string()]);
        assert_eq!(o.judge(Some(MINE), true), Verdict::Known);
        assert_eq!(o.judge(Some(MINE), false), Verdict::Orphan);
        assert_eq!(o.judge(Some(LOST), false), Verdict::Orphan);
        assert_eq!(o.judge(Some(LOST), true), Verdict::Known);
        assert_eq!(o.judge(Some(OTHER), false), Verdict::Foreign(OTHER.into()));
        // A known VM id under another instance's mark is still not ours.
        assert_eq!(o.judge(Some(OTHER), true), Verdict::Foreign(OTHER.into()));
        assert_eq!(o.judge(None, true), Verdict::KnownLegacy);
        assert_eq!(o.judge(None, false), Verdict::Foreign(LEGACY.into()));
        assert_eq!(
            o.judge(Some("<script>"), false),
            Verdict::Foreign("invalid".into())
        );
        // Without adoption the lost instance is someone else's.
        let plain = Owners::new(MINE, &[]);
        assert_eq!(
            plain.judge(Some(LOST), false),
            Verdict::Foreign(LOST.into())
        );
    }
}
