//! Where libyaml's YAML 1.1 syntax (go-yaml v2 is a port of libyaml) and the YAML 1.2 parser
//! read the same text differently: source rewrites that make the parser read what libyaml reads
//! (`\'` escapes, a lone `-` before a flow indicator), and checks that refuse what libyaml
//! refuses (control characters, `\/` and surrogate escapes, anchor names, tabs where YAML 1.1
//! wants indentation, NEL/LS/PS line breaks).

use std::ops::Range;

use granit_parser::{Event, Marker, ScalarStyle, Span, StructureStyle};

use super::ErrorKind;

/// Chunk line and 1-based column.
pub(crate) type At = (usize, usize);

pub(crate) enum Failure {
    At(At, ErrorKind),
    /// The source reads differently in YAML 1.1: rewrite it and parse again.
    Fix(Fix),
}

pub(crate) enum Fix {
    /// `\'` (YAML 1.1 only) in the double-quoted scalar starting at this byte offset.
    QuoteEscape(usize),
    /// A lone `-` before `,`, `]` or `}`: a plain scalar for libyaml, an error in YAML 1.2.
    Dash(usize),
}

impl Fix {
    pub(crate) fn apply(self, source: &str) -> Result<String, (At, ErrorKind)> {
        match self {
            Fix::Dash(offset) => Ok(format!(
                "{}\"-\"{}",
                &source[..offset],
                &source[offset + 1..]
            )),
            Fix::QuoteEscape(start) => {
                let (quotes, unknown) = scan_double_quoted(source, start);
                if let Some((offset, c)) = unknown {
                    return Err((marker_position(source, offset), ErrorKind::UnknownEscape(c)));
                }
                if quotes.is_empty() {
                    return Err((
                        marker_position(source, start),
                        ErrorKind::Syntax("found unknown escape character".to_string()),
                    ));
                }
                // `\x27` reads as `'` in both.
                let mut out = String::with_capacity(source.len() + 2 * quotes.len());
                let mut last = 0;
                for q in quotes {
                    out.push_str(&source[last..q]);
                    out.push_str("\\x27");
                    last = q + 2;
                }
                out.push_str(&source[last..]);
                Ok(out)
            }
        }
    }
}

pub(crate) fn position(m: &Marker) -> At {
    (m.line(), m.col() + 1)
}

/// Chunk line and column of a byte offset.
pub(crate) fn marker_position(text: &str, offset: usize) -> At {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// go-yaml's reader refuses control characters. Returns whether the text holds NEL, LS or PS,
/// which are line breaks in YAML 1.1 and not in YAML 1.2.
pub(crate) fn check_characters(text: &str) -> Result<bool, (At, ErrorKind)> {
    if text.is_ascii() {
        return match text
            .bytes()
            .position(|b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r') || b == 0x7f)
        {
            Some(offset) => Err((
                marker_position(text, offset),
                ErrorKind::ControlCharacter(u32::from(text.as_bytes()[offset])),
            )),
            None => Ok(false),
        };
    }
    let mut breaks = false;
    for (offset, c) in text.char_indices() {
        let allowed = matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
            || c >= '\u{10000}';
        if !allowed {
            return Err((
                marker_position(text, offset),
                ErrorKind::ControlCharacter(u32::from(c)),
            ));
        }
        breaks |= matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}');
    }
    Ok(breaks)
}

/// What the checks after parsing need to know about a document's events.
pub(crate) struct Scan<'s> {
    source: &'s str,
    tabs: bool,
    breaks: bool,
    /// Quoted scalars: raw NEL/LS/PS there read the same in both.
    quoted: Vec<Range<usize>>,
    /// Where lines are not in block context: flow collections and multi-line scalars.
    protected: Vec<Range<usize>>,
    open_flows: Vec<usize>,
    /// Token starts in block context.
    tokens: Vec<usize>,
    /// Plain scalars in block context, with the column their continuation lines must reach.
    plain: Vec<(Range<usize>, usize)>,
    end: Option<usize>,
    /// Whether the last node sat in a flow collection (its anchor event follows it).
    last_flow: bool,
}

impl<'s> Scan<'s> {
    /// Checks tabs and NEL/LS/PS only where the source holds them.
    pub(crate) fn new(source: &'s str, breaks: bool) -> Self {
        Scan {
            source,
            tabs: source.contains('\t'),
            breaks,
            quoted: Vec::new(),
            protected: Vec::new(),
            open_flows: Vec::new(),
            tokens: Vec::new(),
            plain: Vec::new(),
            end: None,
            last_flow: false,
        }
    }

    /// Records an event; `flow`: whether its parent is a flow collection (for an end event,
    /// whether the closing one is); `indent`: the 0-based column of the enclosing block
    /// collection plus one (0 at the top).
    pub(crate) fn event(&mut self, event: &Event<'_>, span: &Span, flow: bool, indent: usize) {
        if !self.tabs && !self.breaks {
            return;
        }
        let Some(range) = span.byte_range() else {
            return;
        };
        if !matches!(
            event,
            Event::Anchor(..) | Event::SequenceEnd | Event::MappingEnd
        ) {
            self.last_flow = flow;
        }
        match event {
            Event::Scalar(_, style, ..) => {
                match style {
                    ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                        self.quoted.push(range.clone());
                        self.protected.push(range.clone());
                    }
                    ScalarStyle::Literal | ScalarStyle::Folded => {
                        self.protected.push(range.clone());
                        // Its token is the `|` or `>` header, before the content.
                        if let Some(header) = block_scalar_header(self.source, range.start) {
                            self.token(header, span, flow);
                        }
                        return;
                    }
                    _ if !flow => self.plain.push((range.clone(), indent)),
                    _ => {}
                }
                self.token(range.start, span, flow);
            }
            Event::SequenceStart(style, ..) | Event::MappingStart(style, ..) => {
                if *style == StructureStyle::Flow {
                    self.open_flows.push(range.start);
                }
                self.token(range.start, span, flow);
            }
            Event::SequenceEnd | Event::MappingEnd if flow => {
                if let Some(start) = self.open_flows.pop() {
                    self.protected.push(start..range.end);
                }
            }
            Event::Alias(_) => self.token(range.start, span, flow),
            Event::Anchor(..) => self.token(range.start, span, self.last_flow),
            Event::DocumentEnd => self.end = Some(range.start),
            _ => {}
        }
    }

    fn token(&mut self, start: usize, span: &Span, flow: bool) {
        if self.tabs && !flow {
            self.tokens.push(start);
            if let Some(tag) = span.tag_start.and_then(|m| m.byte_offset()) {
                self.tokens.push(tag);
            }
        }
    }

    /// The checks, once the document is parsed.
    pub(crate) fn check(&self) -> Result<(), (At, ErrorKind)> {
        if self.breaks {
            self.check_breaks()?;
        }
        if self.tabs {
            self.check_tabs()?;
        }
        Ok(())
    }

    /// A raw NEL anywhere, or LS/PS outside a quoted scalar or next to a blank, reads
    /// differently in YAML 1.1: libyaml ends the line there, or folds around it.
    fn check_breaks(&self) -> Result<(), (At, ErrorKind)> {
        let source = self.source;
        for (offset, c) in source.char_indices() {
            if !matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}') {
                continue;
            }
            let inside = self
                .quoted
                .iter()
                .any(|r| r.start < offset && offset < r.end);
            let blank = |i: usize| matches!(source.as_bytes().get(i), Some(b' ' | b'\t'));
            if c == '\u{85}'
                || !inside
                || (offset > 0 && blank(offset - 1))
                || blank(offset + c.len_utf8())
            {
                let name = match c {
                    '\u{85}' => "NEL (U+0085)",
                    '\u{2028}' => "line separator (U+2028)",
                    _ => "paragraph separator (U+2029)",
                };
                return Err((
                    marker_position(source, offset),
                    ErrorKind::YamlLineBreak(name),
                ));
            }
        }
        Ok(())
    }

    /// libyaml skips a tab as whitespace in block context only where no key may start: not
    /// before the first token of a line, nor after a `-`, `?` or explicit `:` indicator. The
    /// lines that follow a plain scalar (its continuation, blank and comment lines) may hold
    /// tabs only from the column the scalar's continuation must reach.
    fn check_tabs(&self) -> Result<(), (At, ErrorKind)> {
        let (source, b) = (self.source, self.source.as_bytes());
        let tab = |offset: usize| Err((marker_position(source, offset), ErrorKind::Tab));
        for &p in &self.tokens {
            let mut i = source[..p].rfind('\n').map_or(0, |i| i + 1);
            while i < p {
                match b[i] {
                    b' ' => {}
                    b'\t' => return tab(i),
                    b'-' | b'?' | b':' if matches!(b.get(i + 1), Some(b' ' | b'\t' | b'\n')) => {}
                    _ => break,
                }
                i += 1;
            }
        }
        let end = self.end.unwrap_or(source.len());
        let mut line = 0;
        while line < end {
            let next = source[line..]
                .find('\n')
                .map_or(source.len(), |i| line + i + 1);
            let text = &source[line..next];
            let lead = text
                .bytes()
                .take_while(|c| matches!(c, b' ' | b'\t'))
                .count();
            let first_tab = text[..lead].find('\t');
            let (check, line_start) = (first_tab.is_some(), line);
            line = next;
            if !check {
                continue;
            }
            let t = first_tab.unwrap_or(0);
            // Within or right after a plain scalar: its continuation threshold.
            if let Some((_, indent)) = self.plain.iter().rev().find(|(r, _)| {
                r.start < line_start
                    && (line_start < r.end || only_comments(&source[r.end..line_start]))
            }) {
                if t < *indent {
                    return tab(line_start + t);
                }
                continue;
            }
            let rest = text[lead..].trim_end_matches(['\n', '\r']);
            let inside = self
                .protected
                .iter()
                .any(|r| r.start < line_start && line_start < r.end);
            if !inside && (rest.is_empty() || rest.starts_with('#')) {
                return tab(line_start + t);
            }
        }
        Ok(())
    }
}

/// Text after a scalar holding nothing but blanks, line breaks and comments.
fn only_comments(text: &str) -> bool {
    text.split('\n').all(|l| {
        let l = l.trim_start_matches([' ', '\t']);
        l.is_empty() || l.starts_with('#') || l == "\r"
    })
}

/// The `|` or `>` that opens the block scalar whose content starts at `content`: the last one
/// before it that only its indentation and chomping indicators and a comment follow.
fn block_scalar_header(source: &str, content: usize) -> Option<usize> {
    let before = source.get(..content)?;
    let mut end = before.rfind('\n')?;
    loop {
        let line_start = before[..end].rfind('\n').map_or(0, |i| i + 1);
        let line = &before[line_start..end];
        let header = line.char_indices().rev().find(|&(i, c)| {
            matches!(c, '|' | '>') && {
                let rest = line[i + 1..]
                    .trim_start_matches(|c: char| c.is_ascii_digit() || c == '+' || c == '-');
                let rest = rest.trim_start_matches([' ', '\t']);
                rest.is_empty() || rest.starts_with('#')
            }
        });
        if let Some((i, _)) = header {
            return Some(line_start + i);
        }
        if line_start == 0 || !line.trim().is_empty() {
            return None;
        }
        end = line_start - 1;
    }
}

/// libyaml's anchor names: letters, digits, `_` and `-`.
pub(crate) fn valid_anchor_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Escapes that YAML 1.2 reads but go-yaml v2 refuses: `\/`, and surrogates in `\u`/`\U`
/// (YAML 1.2 pairs them up). Returns the byte offset of the backslash in `raw`.
pub(crate) fn yaml11_escape_error(raw: &str) -> Option<(usize, ErrorKind)> {
    if !raw.contains('\\') {
        return None;
    }
    let b = raw.as_bytes();
    let mut i = 1;
    while i + 1 < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        let width = match b[i + 1] {
            b'/' => return Some((i, ErrorKind::UnknownEscape('/'))),
            b'u' => 4,
            b'U' => 8,
            _ => 0,
        };
        if width > 0 {
            let code = raw
                .get(i + 2..i + 2 + width)
                .and_then(|h| u32::from_str_radix(h, 16).ok());
            if code.is_some_and(|c| (0xD800..=0xDFFF).contains(&c)) {
                return Some((i, ErrorKind::SurrogateEscape));
            }
        }
        i += 2;
    }
    None
}

/// libyaml's double-quoted escapes (YAML 1.1 has `\'`, has no `\/`).
fn is_yaml11_escape(c: char) -> bool {
    matches!(
        c,
        '0' | 'a'
            | 'b'
            | 't'
            | '\t'
            | 'n'
            | 'v'
            | 'f'
            | 'r'
            | 'e'
            | ' '
            | '"'
            | '\''
            | '\\'
            | 'N'
            | '_'
            | 'L'
            | 'P'
            | 'x'
            | 'u'
            | 'U'
            | '\n'
            | '\r'
    )
}

/// Backslash escapes of the double-quoted scalar starting at `start`: the offsets of `\'`, and
/// the first escape libyaml does not know.
fn scan_double_quoted(source: &str, start: usize) -> (Vec<usize>, Option<(usize, char)>) {
    let mut quotes = Vec::new();
    let Some(body) = source.get(start..).and_then(|s| s.strip_prefix('"')) else {
        return (quotes, None);
    };
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some((_, '\'')) => quotes.push(start + 1 + i),
                Some((_, e)) if !is_yaml11_escape(e) => return (quotes, Some((start + 1 + i, e))),
                Some(_) => {}
                None => break,
            },
            _ => {}
        }
    }
    (quotes, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_that_differ_between_yaml_1_1_and_1_2() {
        assert!(matches!(
            yaml11_escape_error(r#""a\/b""#),
            Some((2, ErrorKind::UnknownEscape('/')))
        ));
        assert!(matches!(
            yaml11_escape_error(r#""\ud83d\ude00""#),
            Some((1, ErrorKind::SurrogateEscape))
        ));
        assert!(yaml11_escape_error(r#""a\\/b \u00e9""#).is_none());
        assert_eq!(
            Fix::QuoteEscape(3)
                .apply(r#"a: "it\'s \'x\'" # \'"#)
                .ok()
                .as_deref(),
            Some(r#"a: "it\x27s \x27x\x27" # \'"#)
        );
        assert_eq!(
            Fix::Dash(4).apply("a: [-, b]").ok().as_deref(),
            Some("a: [\"-\", b]")
        );
        assert_eq!(scan_double_quoted(r#""a\q""#, 0), (vec![], Some((2, 'q'))));
    }
}
