//! A linear pre-pass that finds how deep a YAML document nests flow collections
//! (`[…]`, `{…}`, which is all of JSON), before the YAML parser sees it.
//!
//! The parser (libyaml, inside serde_norway) checks its recursion limit only after it has
//! scanned the whole document, and its scanner does work proportional to the flow depth
//! for every token: a 200 KB file of 100,000 nested `[` kept it busy for about 100 s.
//! Block nesting (indentation) costs it nothing extra, and the recursion limit then stops
//! it, so only flow depth is measured here.
//!
//! To never under-count, this follows libyaml's scanner token by token: where a token
//! starts, what ends a plain, quoted or block scalar, a tag or an anchor, and the state
//! those depend on (flow level, block indentation, simple keys). It does not check for
//! errors: libyaml stops at the first one, so what this pass does past it does not
//! matter, as long as it never stops where libyaml does not.

/// Where the flow depth first exceeded the limit (1-based, as the YAML parser reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep {
    /// The line of the opening bracket.
    pub line: usize,
    /// Its column, in characters.
    pub column: usize,
}

/// A possible simple key (a key without `?`) at one flow level, as libyaml keeps it.
#[derive(Clone, Copy, Default)]
struct SimpleKey {
    possible: bool,
    index: usize,
    line: usize,
    column: usize,
}

struct Scanner<'a> {
    text: &'a [u8],
    /// Byte offset (libyaml's `mark.index` counts bytes too).
    index: usize,
    line: usize,
    /// In characters.
    column: usize,
    flow_level: usize,
    indent: isize,
    indents: Vec<isize>,
    simple_key_allowed: bool,
    /// One per flow level, plus the block level's.
    simple_keys: Vec<SimpleKey>,
}

/// Fails if `text` nests flow collections deeper than `limit`.
pub fn check(text: &str, limit: usize) -> Result<(), TooDeep> {
    let mut s = Scanner {
        text: text.as_bytes(),
        index: 0,
        line: 0,
        column: 0,
        flow_level: 0,
        indent: -1,
        indents: Vec::new(),
        simple_key_allowed: true,
        simple_keys: vec![SimpleKey::default()],
    };
    while s.next_token() {
        if s.flow_level > limit {
            return Err(TooDeep {
                line: s.line + 1,
                // The bracket was just consumed.
                column: s.column,
            });
        }
    }
    Ok(())
}

impl Scanner<'_> {
    fn at(&self, offset: usize) -> u8 {
        // NUL stands for the end, as in libyaml.
        self.text.get(self.index + offset).copied().unwrap_or(0)
    }

    fn is_break_at(&self, offset: usize) -> bool {
        match self.at(offset) {
            b'\r' | b'\n' => true,
            0xC2 => self.at(offset + 1) == 0x85,
            0xE2 => self.at(offset + 1) == 0x80 && matches!(self.at(offset + 2), 0xA8 | 0xA9),
            _ => false,
        }
    }

    fn is_blank_at(&self, offset: usize) -> bool {
        matches!(self.at(offset), b' ' | b'\t')
    }

    fn is_z_at(&self, offset: usize) -> bool {
        self.at(offset) == 0
    }

    fn is_breakz_at(&self, offset: usize) -> bool {
        self.is_break_at(offset) || self.is_z_at(offset)
    }

    fn is_blankz_at(&self, offset: usize) -> bool {
        self.is_blank_at(offset) || self.is_breakz_at(offset)
    }

    fn is_alpha(&self) -> bool {
        matches!(self.at(0), b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'_' | b'-')
    }

    fn at_end(&self) -> bool {
        self.index >= self.text.len()
    }

    /// Skips one character (not a line break).
    fn skip(&mut self) {
        let width = match self.at(0) {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            _ => 4,
        };
        self.index = (self.index + width).min(self.text.len());
        self.column += 1;
    }

    /// Skips a line break (CR LF counts as one).
    fn skip_line(&mut self) {
        if self.at(0) == b'\r' && self.at(1) == b'\n' {
            self.index += 2;
        } else if self.at(0) == b'\r' || self.at(0) == b'\n' {
            self.index += 1;
        } else if self.is_break_at(0) {
            self.index += if self.at(0) == 0xC2 { 2 } else { 3 };
        } else {
            return;
        }
        self.column = 0;
        self.line += 1;
    }

    fn skip_to_break(&mut self) {
        while !self.at_end() && !self.is_breakz_at(0) {
            self.skip();
        }
    }

    fn column(&self) -> isize {
        isize::try_from(self.column).unwrap_or(isize::MAX)
    }

    fn top_key(&mut self) -> &mut SimpleKey {
        let level = self
            .flow_level
            .min(self.simple_keys.len().saturating_sub(1));
        &mut self.simple_keys[level]
    }

    fn save_simple_key(&mut self) {
        if self.simple_key_allowed {
            let key = SimpleKey {
                possible: true,
                index: self.index,
                line: self.line,
                column: self.column,
            };
            *self.top_key() = key;
        }
    }

    fn remove_simple_key(&mut self) {
        self.top_key().possible = false;
    }

    fn roll_indent(&mut self, column: isize) {
        if self.flow_level == 0 && self.indent < column {
            self.indents.push(self.indent);
            self.indent = column;
        }
    }

    fn unroll_indent(&mut self, column: isize) {
        if self.flow_level != 0 {
            return;
        }
        while self.indent > column {
            self.indent = self.indents.pop().unwrap_or(-1);
        }
    }

    /// Consumes one token; false at the end of the text.
    fn next_token(&mut self) -> bool {
        self.skip_to_next_token();
        // A possible key goes stale past its line or 1024 bytes (libyaml checks every
        // token; only `:` reads it, and staleness only grows).
        let (index, line) = (self.index, self.line);
        for key in &mut self.simple_keys {
            if key.possible && (key.line < line || key.index + 1024 < index) {
                key.possible = false;
            }
        }
        self.unroll_indent(self.column());
        if self.at_end() {
            return false;
        }
        let c = self.at(0);
        let document_marker = self.column == 0
            && ((c == b'-' && self.at(1) == b'-' && self.at(2) == b'-')
                || (c == b'.' && self.at(1) == b'.' && self.at(2) == b'.'))
            && self.is_blankz_at(3);
        if self.column == 0 && c == b'%' {
            // A directive fills its line.
            self.unroll_indent(-1);
            self.remove_simple_key();
            self.simple_key_allowed = false;
            self.skip_to_break();
        } else if document_marker {
            self.unroll_indent(-1);
            self.remove_simple_key();
            self.simple_key_allowed = false;
            self.skip();
            self.skip();
            self.skip();
        } else if c == b'[' || c == b'{' {
            self.save_simple_key();
            self.flow_level += 1;
            self.simple_keys.push(SimpleKey::default());
            self.simple_key_allowed = true;
            self.skip();
        } else if c == b']' || c == b'}' {
            self.remove_simple_key();
            if self.flow_level > 0 {
                self.flow_level -= 1;
                self.simple_keys.pop();
            }
            self.simple_key_allowed = false;
            self.skip();
        } else if c == b',' {
            self.remove_simple_key();
            self.simple_key_allowed = true;
            self.skip();
        } else if c == b'-' && self.is_blankz_at(1) {
            self.roll_indent(self.column());
            self.remove_simple_key();
            self.simple_key_allowed = true;
            self.skip();
        } else if c == b'?' && (self.flow_level != 0 || self.is_blankz_at(1)) {
            self.roll_indent(self.column());
            self.remove_simple_key();
            self.simple_key_allowed = self.flow_level == 0;
            self.skip();
        } else if c == b':' && (self.flow_level != 0 || self.is_blankz_at(1)) {
            let key = *self.top_key();
            if key.possible {
                self.roll_indent(isize::try_from(key.column).unwrap_or(isize::MAX));
                self.top_key().possible = false;
                self.simple_key_allowed = false;
            } else {
                self.roll_indent(self.column());
                self.simple_key_allowed = self.flow_level == 0;
            }
            self.skip();
        } else if c == b'*' || c == b'&' {
            self.save_simple_key();
            self.simple_key_allowed = false;
            self.skip();
            while self.is_alpha() {
                self.skip();
            }
        } else if c == b'!' {
            self.save_simple_key();
            self.simple_key_allowed = false;
            self.scan_tag();
        } else if (c == b'|' || c == b'>') && self.flow_level == 0 {
            self.remove_simple_key();
            self.simple_key_allowed = true;
            self.scan_block_scalar();
        } else if c == b'\'' || c == b'"' {
            self.save_simple_key();
            self.simple_key_allowed = false;
            self.scan_quoted(c);
        } else if !(self.is_blankz_at(0) || b"-?:,[]{}#&*!|>'\"%@`".contains(&c))
            || (c == b'-' && !self.is_blank_at(1))
            || (self.flow_level == 0 && (c == b'?' || c == b':') && !self.is_blankz_at(1))
        {
            self.save_simple_key();
            self.simple_key_allowed = false;
            self.scan_plain();
        } else {
            // libyaml stops here ("cannot start any token"); so can this pass.
            return false;
        }
        true
    }

    fn skip_to_next_token(&mut self) {
        loop {
            if self.column == 0 && self.text[self.index..].starts_with(b"\xEF\xBB\xBF") {
                self.skip();
            }
            while self.at(0) == b' '
                || ((self.flow_level != 0 || !self.simple_key_allowed) && self.at(0) == b'\t')
            {
                self.skip();
            }
            if self.at(0) == b'#' {
                self.skip_to_break();
            }
            if !self.is_break_at(0) {
                return;
            }
            self.skip_line();
            if self.flow_level == 0 {
                self.simple_key_allowed = true;
            }
        }
    }

    /// `!<verbatim>` or `!handle!suffix`: `!` and URI characters (`[`, `]` and `,` only
    /// in the verbatim form).
    fn scan_tag(&mut self) {
        let verbatim = self.at(1) == b'<';
        self.skip();
        if verbatim {
            self.skip();
        }
        while self.is_alpha()
            || b";/?:@&=+$.%!~*'()".contains(&self.at(0))
            || (verbatim && b",[]".contains(&self.at(0)))
        {
            self.skip();
        }
        if verbatim && self.at(0) == b'>' {
            self.skip();
        }
    }

    /// A single- (`''` escapes a quote) or double-quoted (`\` escapes anything) scalar.
    fn scan_quoted(&mut self, quote: u8) {
        self.skip();
        while !self.at_end() {
            let c = self.at(0);
            if quote == b'\'' && c == b'\'' && self.at(1) == b'\'' {
                self.skip();
                self.skip();
            } else if c == quote {
                self.skip();
                return;
            } else if quote == b'"' && c == b'\\' && self.is_break_at(1) {
                self.skip();
                self.skip_line();
            } else if quote == b'"' && c == b'\\' {
                self.skip();
                self.skip();
            } else if self.is_break_at(0) {
                self.skip_line();
            } else {
                self.skip();
            }
        }
    }

    /// A literal (`|`) or folded (`>`) scalar: its header line, then every line indented
    /// at least as far as its content.
    fn scan_block_scalar(&mut self) {
        self.skip();
        let mut increment = 0;
        for _ in 0..2 {
            match self.at(0) {
                b'+' | b'-' => self.skip(),
                d @ b'1'..=b'9' => {
                    increment = isize::from(d - b'0');
                    self.skip();
                }
                _ => {}
            }
        }
        while self.is_blank_at(0) {
            self.skip();
        }
        if self.at(0) == b'#' {
            self.skip_to_break();
        }
        if self.is_break_at(0) {
            self.skip_line();
        }
        let mut indent = match increment {
            0 => 0,
            n if self.indent >= 0 => self.indent + n,
            n => n,
        };
        self.block_scalar_breaks(&mut indent);
        while self.column() == indent && !self.at_end() {
            self.skip_to_break();
            if self.at_end() {
                break;
            }
            self.skip_line();
            self.block_scalar_breaks(&mut indent);
        }
    }

    /// Skips the indentation and empty lines before a block scalar's next line; fixes its
    /// indentation from the first one when it has no indicator.
    fn block_scalar_breaks(&mut self, indent: &mut isize) {
        let mut max_indent = 0;
        loop {
            while (*indent == 0 || self.column() < *indent) && self.at(0) == b' ' {
                self.skip();
            }
            max_indent = max_indent.max(self.column());
            if !self.is_break_at(0) {
                break;
            }
            self.skip_line();
        }
        if *indent == 0 {
            *indent = max_indent.max(self.indent + 1).max(1);
        }
    }

    /// A plain scalar: until `: `, ` #`, a flow indicator (in flow context), or a line
    /// indented no further than the block it is in.
    fn scan_plain(&mut self) {
        let indent = self.indent + 1;
        let mut leading_blanks = false;
        loop {
            let document_marker = self.column == 0
                && ((self.at(0) == b'-' && self.at(1) == b'-' && self.at(2) == b'-')
                    || (self.at(0) == b'.' && self.at(1) == b'.' && self.at(2) == b'.'))
                && self.is_blankz_at(3);
            if document_marker || self.at(0) == b'#' {
                break;
            }
            while !self.is_blankz_at(0) {
                let c = self.at(0);
                if self.flow_level != 0 && c == b':' && b",?[]{}".contains(&self.at(1)) {
                    // libyaml refuses this and stops.
                    self.index = self.text.len();
                    return;
                }
                if (c == b':' && self.is_blankz_at(1))
                    || (self.flow_level != 0 && b",[]{}".contains(&c))
                {
                    break;
                }
                leading_blanks = false;
                self.skip();
            }
            if !(self.is_blank_at(0) || self.is_break_at(0)) {
                break;
            }
            while self.is_blank_at(0) || self.is_break_at(0) {
                if self.is_blank_at(0) {
                    self.skip();
                } else {
                    self.skip_line();
                    leading_blanks = true;
                }
            }
            if self.flow_level == 0 && self.column() < indent {
                break;
            }
        }
        if leading_blanks {
            self.simple_key_allowed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        check(text, limit).is_ok()
    }

    #[test]
    fn flow_nesting_is_measured() {
        assert!(depth_ok("a: [[[1]]]", 3));
        assert_eq!(
            check("a: [[[[1]]]]", 3),
            Err(TooDeep { line: 1, column: 7 })
        );
        assert!(!depth_ok(r#"{"a":{"a":{"a":{"a":1}}}}"#, 3));
        assert!(depth_ok(r#"{"a":{"a":{"a":1}},"b":{"b":{"b":1}}}"#, 3));
        let deep = format!("listeners: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            check(&deep, 64),
            Err(TooDeep {
                line: 1,
                column: 12 + 64
            })
        );
    }

    #[test]
    fn brackets_in_scalars_and_comments_are_not_flow() {
        let text = "\
regex: ^/api/[a-z]+[[[[$
quoted: '[[[[ it''s ['
double: \"[[[[ \\\" [[[[\"
# [[[[[[
folded: >
  [[[[[[
  [[[[
literal: |2
    [[[[
plain: a [[[[
  continued [[[[
tag: !<tag:x[[[[> v
url: http://x/[[[[
";
        assert!(depth_ok(text, 0), "{:?}", check(text, 0));
        // Valid YAML, with no flow collection indeed.
        let parsed: serde_norway::Value = serde_norway::from_str(text).unwrap();
        assert!(!format!("{parsed:?}").contains("Sequence"), "{parsed:?}");
    }

    #[test]
    fn quotes_inside_plain_scalars_do_not_hide_brackets() {
        // Each would hide the flow collection after it from a scanner that took any
        // quote for the start of a string.
        for hiding in [
            "a: it's\nb: [[[1]]]",
            "a: x 'y\nb: [[[1]]]",
            "a: b:\"c\nb: [[[1]]]",
            "a: |\n  '\nb: [[[1]]]",
            "a: !t'x\nb: [[[1]]]",
            "a: plain\n  'continued\nb: [[[1]]]",
            "a: # '\nb: [[[1]]]",
            r#"a: {"b":"x, "}"#,
        ] {
            let text = format!("{hiding}\nc: [[[1]]]");
            assert!(!depth_ok(&text, 2), "{hiding:?}");
            // Valid YAML, whose depth libyaml does reach.
            serde_norway::from_str::<serde_norway::Value>(&text).unwrap();
        }
    }
}
