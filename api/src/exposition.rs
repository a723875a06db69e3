//! Reads the samples of a Prometheus text exposition (what the proxy's
//! `/stats/prometheus` and the operator's `/metrics` serve): name, labels in their
//! order, and value per line. `braidctl stat` sums them; the metrics reference lists
//! their label names.

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series name (`braid_requests_total`, `…_bucket`).
    pub name: String,
    /// Its labels, in the order the line gives them.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, `""` when absent.
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The samples of `text` whose name starts with `prefix`; lines that do not parse are
/// skipped (a newer proxy's format is not braidctl's to refuse).
pub fn parse(text: &str, prefix: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(sample)
        .collect()
}

/// The sample of one line, `None` for a comment or a line that does not parse.
pub fn sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = match rest.strip_prefix('{') {
        Some(mut r) => loop {
            r = r.trim_start_matches(',');
            if let Some(after) = r.strip_prefix('}') {
                break after;
            }
            let (key, after) = r.split_once("=\"")?;
            let (value, after) = quoted(after)?;
            labels.push((key.to_owned(), value));
            r = after;
        },
        None => rest,
    };
    // A value, then perhaps a timestamp or an exemplar.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A label value up to its closing quote, unescaped, and what follows.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_escaped_labels_and_infinities() {
        let text = "# HELP braid_requests HTTP requests.\n# TYPE braid_requests counter\n\
            braid_requests_total{workload=\"a\",direction=\"inbound\",target=\"x \\\"y\\\"\"} 12\n\
            braid_request_duration_seconds_bucket{le=\"+Inf\"} 3 1700000000\n\
            braid_request_duration_seconds_bucket{le=\"0.1\"} 2\n\
            braid_other 1\nbraid_broken{a=\"b} 1\n";
        let s = parse(text, "braid_request");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].name, "braid_requests_total");
        assert_eq!(s[0].label("target"), "x \"y\"");
        assert_eq!(s[0].label("missing"), "");
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].label("le"), "+Inf");
        assert_eq!(s[1].value, 3.0);
        assert_eq!(parse("braid_x 4\n", "braid_x")[0].value, 4.0);
        assert_eq!(sample("# TYPE braid_x counter"), None);
    }
}
