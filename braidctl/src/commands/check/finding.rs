//! A finding of `braidctl check`: what was checked, how it went, what it means, and the
//! fix. Rendered as `linkerd check` users know it: one line per check under its heading.

use serde::Serialize;

use crate::output::{Tone, paint};

/// How a check went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As it should be.
    Pass,
    /// Works, but not as well as it should (no failover, an old proxy): the exit code
    /// stays 0.
    Warn,
    /// Broken: the exit code is 1.
    Fail,
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The heading it is printed under.
    pub category: &'static str,
    /// How it went.
    pub verdict: Verdict,
    /// What was found, in a line.
    pub title: String,
    /// What it means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    /// A check that passed.
    pub fn pass(category: &'static str, title: impl Into<String>) -> Self {
        Self {
            category,
            verdict: Verdict::Pass,
            title: title.into(),
            detail: None,
            fix: None,
        }
    }

    /// A warning, with its fix.
    pub fn warn(category: &'static str, title: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Warn,
            fix: Some(fix.into()),
            ..Self::pass(category, title)
        }
    }

    /// A failure, with its fix.
    pub fn fail(category: &'static str, title: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Fail,
            fix: Some(fix.into()),
            ..Self::pass(category, title)
        }
    }

    /// A read that failed: a warning when the user may not make it (the install may be
    /// fine; `may` names the permission), a failure otherwise.
    pub fn unread(
        category: &'static str,
        what: &str,
        why: &str,
        fix: impl Into<String>,
        may: &str,
    ) -> Self {
        match super::snapshot::is_forbidden(why) {
            true => Self::warn(
                category,
                format!("cannot check {what}: {why}"),
                format!("run braidctl check as a user who may {may}"),
            ),
            false => Self::fail(category, format!("cannot read {what}: {why}"), fix),
        }
    }

    /// The same, saying what it means.
    pub fn meaning(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// The findings under their headings, in the order found, and a last line that counts
/// what went wrong.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    let mut heading = "";
    for f in findings {
        if f.category != heading {
            if !heading.is_empty() {
                out.push('\n');
            }
            heading = f.category;
            out.push_str(heading);
            out.push('\n');
            out.push_str(&"-".repeat(heading.chars().count()));
            out.push('\n');
        }
        let mark = match f.verdict {
            Verdict::Pass => paint("✔", Tone::Good),
            Verdict::Warn => paint("⚠", Tone::Warn),
            Verdict::Fail => paint("✘", Tone::Bad),
        };
        out.push_str(&format!("{mark} {}\n", f.title));
        if let Some(d) = &f.detail {
            out.push_str(&format!("    {d}\n"));
        }
        if let Some(fix) = &f.fix {
            out.push_str(&format!("    fix: {fix}\n"));
        }
    }
    let fails = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Fail)
        .count();
    let warns = findings
        .iter()
        .filter(|f| f.verdict == Verdict::Warn)
        .count();
    out.push('\n');
    out.push_str(&match (fails, warns) {
        (0, 0) => paint("Status check results are ✔", Tone::Good),
        (0, w) => paint(
            &format!("Status check results are ✔ with {w} warning(s)"),
            Tone::Warn,
        ),
        (f, w) => paint(
            &format!("Status check results are ✘: {f} problem(s), {w} warning(s)"),
            Tone::Bad,
        ),
    });
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_print_under_their_headings_with_the_fix_and_a_count() {
        let text = render(&[
            Finding::pass("Kubernetes", "the API server answers"),
            Finding::fail("Kubernetes", "too old", "upgrade").meaning("1.27"),
            Finding::warn("braid", "one replica", "scale it"),
        ]);
        assert_eq!(
            text,
            "Kubernetes\n----------\n✔ the API server answers\n✘ too old\n    1.27\n    fix: upgrade\n\n\
             braid\n-----\n⚠ one replica\n    fix: scale it\n\n\
             Status check results are ✘: 1 problem(s), 1 warning(s)\n"
        );
    }
}
