//! Mirroring: a copy of a share of a rule's requests for another group (shadow traffic).
//! The copy is sent fire-and-forget by the forwarder; only the decision lives here.

use super::policy::roll;
use crate::config::InvalidField;
use crate::config::routes::Mirror;

/// Where a rule's copies go, and how many.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MirrorPolicy {
    /// The index of the group receiving copies (as for weighted groups).
    pub group: usize,
    percent: f64,
}

impl MirrorPolicy {
    /// Compiles `mirror`, whose group is `groups[group]`; errors name the field under `at`.
    pub fn compile(mirror: &Mirror, groups: &[&str], at: &str) -> Result<Self, InvalidField> {
        let group = groups
            .iter()
            .position(|g| *g == mirror.group)
            .ok_or_else(|| {
                InvalidField::new(
                    format!("{at}.mirror.group"),
                    format!("no group {:?} (have: {})", mirror.group, groups.join(", ")),
                )
            })?;
        if !(0.0..=100.0).contains(&mirror.percent) {
            return Err(InvalidField::new(
                format!("{at}.mirror.percent"),
                format!("{} is not a percentage from 0 to 100", mirror.percent),
            ));
        }
        Ok(Self {
            group,
            percent: mirror.percent,
        })
    }

    /// The share of requests copied, in percent.
    pub fn percent(&self) -> f64 {
        self.percent
    }

    /// Whether this request is copied.
    pub fn roll(&self) -> bool {
        roll(self.percent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_group_and_checks_the_percentage() {
        let groups = ["stable", "shadow"];
        let m = MirrorPolicy::compile(
            &Mirror {
                group: "shadow".into(),
                percent: 100.0,
            },
            &groups,
            "r",
        )
        .unwrap();
        assert_eq!(m.group, 1);
        assert!(m.roll());
        let err = MirrorPolicy::compile(
            &Mirror {
                group: "nope".into(),
                percent: 5.0,
            },
            &groups,
            "routes[0].rules[0]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("routes[0].rules[0].mirror.group"), "{err}");
        let err = MirrorPolicy::compile(
            &Mirror {
                group: "shadow".into(),
                percent: -1.0,
            },
            &groups,
            "r",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("r.mirror.percent"), "{err}");
    }
}
