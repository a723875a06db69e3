//! Printing as kubectl does: aligned tables with upper-case headers, or the data as JSON
//! or YAML; colour only when standard output is a terminal.

use std::io::IsTerminal;

use serde::Serialize;

use crate::cli::Format;

/// A table: headers, then rows of cells.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these headers.
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: columns three spaces apart, as kubectl prints them. Widths
    /// count characters as printed (colour codes excluded).
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(visible_len(cell));
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.next().unwrap_or("");
                text.push_str(cell);
                if i + 1 < columns {
                    let pad = width.saturating_sub(visible_len(cell)) + 3;
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        };
        line(&mut out, &mut self.headers.iter().copied());
        for row in &self.rows {
            line(&mut out, &mut row.iter().map(String::as_str));
        }
        out
    }
}

/// Characters as printed: ANSI colour sequences take no room.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut escape = false;
    for c in s.chars() {
        match (escape, c) {
            (false, '\u{1b}') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, _) => n += 1,
        }
    }
    n
}

/// Prints `data` as JSON or YAML, or `table()` for the table formats.
pub fn print<T: Serialize>(
    format: Format,
    data: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(data)? + "\n",
        Format::Yaml => serde_norway::to_string(data)?,
        Format::Table | Format::Wide => table(),
    };
    write_out(&text)
}

/// Writes `text` to standard output; a reader that went away (`| head`, `| grep -q`)
/// is no error.
pub fn write_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// How a finding reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    /// All is well.
    Good,
    /// Needs a look.
    Warn,
    /// Broken.
    Bad,
}

/// `text` in the tone's colour when standard output is a terminal.
pub fn paint(text: &str, tone: Tone) -> String {
    if !colour() {
        return text.to_owned();
    }
    let code = match tone {
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
    };
    format!("\u{1b}[{code}m{text}\u{1b}[0m")
}

fn colour() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// How long ago `then` was, as kubectl's AGE column writes it (`45s`, `3m`, `2h`, `5d`).
pub fn age(then: std::time::SystemTime, now: std::time::SystemTime) -> String {
    let secs = now.duration_since(then).map_or(0, |d| d.as_secs());
    short_duration(secs)
}

/// `secs` as kubectl writes durations: the largest unit, or two for short ones.
pub fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Parses an RFC 3339 time as the operator writes them.
pub fn parse_time(s: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_and_lines_have_no_trailing_spaces() {
        let mut t = Table::new(&["POD", "CONFIG", "VERSION"]);
        t.row(vec!["shop/a".into(), "current".into(), "0.1.0".into()]);
        t.row(vec![
            "shop/frontend".into(),
            "\u{1b}[31mSTALE\u{1b}[0m".into(),
            String::new(),
        ]);
        assert_eq!(
            t.render(),
            "POD             CONFIG    VERSION\n\
             shop/a          current   0.1.0\n\
             shop/frontend   \u{1b}[31mSTALE\u{1b}[0m\n"
        );
    }

    #[test]
    fn ages_read_as_kubectl_writes_them() {
        assert_eq!(short_duration(45), "45s");
        assert_eq!(short_duration(185), "3m5s");
        assert_eq!(short_duration(3000), "50m");
        assert_eq!(short_duration(7 * 3600), "7h");
        assert_eq!(short_duration(5 * 86400), "5d");
    }
}
