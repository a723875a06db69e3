//! The metrics reference, `docs/metrics.md`, generated from what the proxy and the
//! operator really register: each renders its section from its own text exposition
//! (families, their type, help and label names), and a test in each crate fails when the
//! section in the file is not what it renders now (`make docs` rewrites it).

use std::path::Path;

/// One metric family of a text exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricFamily {
    /// The family's name, as `# TYPE` gives it.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, …
    pub kind: String,
    /// Its `# HELP` text.
    pub help: String,
    /// The label names its samples carry (histograms' `le` left out), in order of first
    /// appearance.
    pub labels: Vec<String>,
}

impl MetricFamily {
    /// The name to query: counters' samples end in `_total`.
    pub fn series(&self) -> String {
        if self.kind == "counter" && !self.name.ends_with("_total") {
            format!("{}_total", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// The families of an exposition, in its order.
pub fn families(exposition: &str) -> Vec<MetricFamily> {
    let mut out: Vec<MetricFamily> = Vec::new();
    let mut help = String::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest
                .split_once(' ')
                .map(|(_, h)| h)
                .unwrap_or("")
                .to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push(MetricFamily {
                name: name.to_owned(),
                kind: kind.to_owned(),
                help: std::mem::take(&mut help),
                labels: Vec::new(),
            });
        } else if !line.starts_with('#') {
            let Some(family) = out.last_mut() else {
                continue;
            };
            let Some(sample) = crate::exposition::sample(line) else {
                continue;
            };
            for (label, _) in sample.labels {
                if label != "le" && !family.labels.contains(&label) {
                    family.labels.push(label);
                }
            }
        }
    }
    out
}

/// A markdown table of `families`.
pub fn markdown(families: &[MetricFamily]) -> String {
    let mut out =
        String::from("| metric | type | labels | what it counts |\n| --- | --- | --- | --- |\n");
    for f in families {
        let labels = if f.labels.is_empty() {
            "—".to_owned()
        } else {
            f.labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{}` | {} | {labels} | {} |\n",
            f.series(),
            f.kind,
            f.help.replace('|', "\\|")
        ));
    }
    out
}

/// Why a generated section is not what the file holds.
#[derive(Debug, thiserror::Error)]
pub enum StaleSection {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file lacks the section's markers.
    #[error(
        "{path} has no section {section:?} (markers `<!-- BEGIN {section} -->` and `<!-- END {section} -->`)"
    )]
    NoSection {
        /// The file.
        path: String,
        /// The section.
        section: String,
    },
    /// The section differs from what is generated now.
    #[error("{path}: section {section:?} is stale: run `make docs` and commit the result")]
    Stale {
        /// The file.
        path: String,
        /// The section.
        section: String,
    },
}

/// Checks that the part of `path` between `<!-- BEGIN section -->` and
/// `<!-- END section -->` is `generated`; with `BRAID_UPDATE_DOCS=1` in the environment
/// it writes `generated` there instead (what `make docs` does).
pub fn check_section(path: &Path, section: &str, generated: &str) -> Result<(), StaleSection> {
    let shown = path.display().to_string();
    let io = |source| StaleSection::Io {
        path: shown.clone(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let (begin, end) = (
        format!("<!-- BEGIN {section} -->\n"),
        format!("<!-- END {section} -->"),
    );
    let (Some(a), Some(b)) = (text.find(&begin), text.find(&end)) else {
        return Err(StaleSection::NoSection {
            path: shown,
            section: section.to_owned(),
        });
    };
    let from = a + begin.len();
    if b < from {
        return Err(StaleSection::NoSection {
            path: shown,
            section: section.to_owned(),
        });
    }
    if &text[from..b] == generated {
        return Ok(());
    }
    if std::env::var_os("BRAID_UPDATE_DOCS").is_some_and(|v| v == "1") {
        let updated = format!("{}{generated}{}", &text[..from], &text[b..]);
        return std::fs::write(path, updated).map_err(io);
    }
    Err(StaleSection::Stale {
        path: shown,
        section: section.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = r#"# HELP braid_requests Requests served.
# TYPE braid_requests counter
braid_requests_total{direction="inbound",target="a,b \"q\"",code="200"} 1
braid_requests_total{direction="outbound",target="x",code="503",rule="r"} 2
# HELP braid_latency_seconds Latency.
# TYPE braid_latency_seconds histogram
braid_latency_seconds_sum{direction="inbound"} 0.1
braid_latency_seconds_bucket{direction="inbound",le="0.005"} 1
# HELP braid_limit The limit.
# TYPE braid_limit gauge
braid_limit 3
# EOF
"#;

    #[test]
    fn families_carry_their_type_help_and_label_names() {
        let f = families(EXPOSITION);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].series(), "braid_requests_total");
        assert_eq!(f[0].help, "Requests served.");
        assert_eq!(f[0].labels, ["direction", "target", "code", "rule"]);
        assert_eq!(f[1].labels, ["direction"], "no le");
        assert_eq!((f[2].kind.as_str(), f[2].labels.len()), ("gauge", 0));
        let table = markdown(&f);
        assert!(table.contains("| `braid_requests_total` | counter | `direction`, `target`, `code`, `rule` | Requests served. |"), "{table}");
        assert!(
            table.contains("| `braid_limit` | gauge | — | The limit. |"),
            "{table}"
        );
    }

    #[test]
    fn a_stale_section_is_named_and_a_fresh_one_passes() {
        let dir = std::env::temp_dir().join(format!("braid-metrics-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("metrics.md");
        std::fs::write(
            &file,
            "# M\n<!-- BEGIN proxy -->\nold\n<!-- END proxy -->\n",
        )
        .unwrap();
        assert!(check_section(&file, "proxy", "old\n").is_ok());
        let err = check_section(&file, "proxy", "new\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("make docs"), "{err}");
        let err = check_section(&file, "operator", "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no section \"operator\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
