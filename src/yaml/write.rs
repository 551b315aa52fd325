//! JSON values as block-style YAML that kubectl (and any YAML 1.1 or 1.2 reader) reads back as
//! the same values: two-space indent, sequences under a key not indented, keys in order, and
//! every string that could be read as something else quoted.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::number;
use super::resolve;

/// Keys longer than this are written as explicit `? key` entries: YAML limits implicit keys
/// to 1024 characters.
const MAX_IMPLICIT_KEY: usize = 1000;

/// One document.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write_document(&mut out, value);
    out
}

/// Documents separated by `---` lines.
pub fn to_string_all<'a>(values: impl IntoIterator<Item = &'a Value>) -> String {
    let mut out = String::new();
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        write_document(&mut out, v);
    }
    out
}

fn write_document(out: &mut String, value: &Value) {
    match value {
        Value::Object(m) if !m.is_empty() => write_mapping(out, m, 0, false),
        Value::Array(a) if !a.is_empty() => write_sequence(out, a, 0, false),
        scalar => {
            // Block scalar lines are indented: a line at column 0 starting with `---` would
            // end the document for kubectl.
            write_inline(out, scalar, 2);
            out.push('\n');
        }
    }
}

fn indent(out: &mut String, mut n: usize) {
    const SPACES: &str = "                                                                ";
    while n > SPACES.len() {
        out.push_str(SPACES);
        n -= SPACES.len();
    }
    out.push_str(&SPACES[..n]);
}

/// A mapping at `at` columns; `inline` when the cursor already stands after `- `.
fn write_mapping(out: &mut String, map: &Map<String, Value>, at: usize, inline: bool) {
    for (i, (key, value)) in map.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, at);
        }
        let style = style(key, true);
        // Quoting writes at most four characters per byte, plus the quotes.
        if key.len() * 4 + 2 <= MAX_IMPLICIT_KEY {
            push_scalar(out, key, style);
        } else {
            let mut key_text = String::new();
            push_scalar(&mut key_text, key, style);
            if key_text.chars().count() > MAX_IMPLICIT_KEY {
                out.push_str("? ");
                out.push_str(&key_text);
                out.push('\n');
                indent(out, at);
            } else {
                out.push_str(&key_text);
            }
        }
        out.push(':');
        match value {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                write_mapping(out, m, at + 2, false);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                write_sequence(out, a, at, false);
            }
            scalar => {
                out.push(' ');
                write_inline(out, scalar, at + 2);
                out.push('\n');
            }
        }
    }
}

/// A sequence with its `- ` at `at` columns; `inline` when the cursor already stands after `- `.
fn write_sequence(out: &mut String, items: &[Value], at: usize, inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline {
            indent(out, at);
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_mapping(out, m, at + 2, true),
            Value::Array(a) if !a.is_empty() => write_sequence(out, a, at + 2, true),
            scalar => {
                write_inline(out, scalar, at + 2);
                out.push('\n');
            }
        }
    }
}

/// A scalar or empty collection after `key: ` or `- `; block scalars indent their lines by `at`.
fn write_inline(out: &mut String, value: &Value, at: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // Writing to a String cannot fail.
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => drop(write!(out, "{i}")),
            (_, Some(u), _) => drop(write!(out, "{u}")),
            (_, _, Some(f)) => out.push_str(&number::go_json(f)),
            _ => drop(write!(out, "{n}")),
        },
        Value::String(s) => match style(s, false) {
            Style::Literal => write_literal(out, s, at),
            style => push_scalar(out, s, style),
        },
        Value::Array(_) => out.push_str("[]"),
        Value::Object(_) => out.push_str("{}"),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Style {
    Plain,
    Single,
    Double,
    Literal,
}

/// YAML's printable characters, less what a YAML 1.1 reader takes for a line break (NEL, LS,
/// PS) or a byte-order mark.
fn printable(c: char) -> bool {
    matches!(c, ' '..='~' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{FEFF}')
}

fn style(s: &str, key: bool) -> Style {
    let simple = s.bytes().all(|b| matches!(b, b' '..=b'~')) || s.chars().all(printable);
    if !simple {
        let multiline = s.contains('\n') && s.chars().all(|c| c == '\n' || printable(c));
        return if multiline && !key && literal_allowed(s) {
            Style::Literal
        } else {
            Style::Double
        };
    }
    if needs_quotes(s, key) {
        Style::Single
    } else {
        Style::Plain
    }
}

/// Block literal (`|`) only where it reads back exactly: no leading blank or break (the
/// indentation would be misread), no blank before a line break (editors and libyaml drop it).
fn literal_allowed(s: &str) -> bool {
    !s.starts_with([' ', '\t', '\n'])
        && !s.contains(" \n")
        && !s.contains("\t\n")
        && !s.ends_with(' ')
        && s.trim_end_matches('\n').contains(|c| c != '\n')
}

/// Whether a printable one-line string must be quoted to read back as this string.
fn needs_quotes(s: &str, key: bool) -> bool {
    let Some(first) = s.chars().next() else {
        return true;
    };
    let second = s[first.len_utf8()..].chars().next();
    s.starts_with(' ')
        || s.ends_with(' ')
        || matches!(
            first,
            ',' | '['
                | ']'
                | '{'
                | '}'
                | '#'
                | '&'
                | '*'
                | '!'
                | '|'
                | '>'
                | '\''
                | '"'
                | '%'
                | '@'
                | '`'
        )
        || (matches!(first, '-' | '?' | ':') && matches!(second, None | Some(' ')))
        || contains_pair(s, b':', b' ')
        || contains_pair(s, b' ', b'#')
        || s.ends_with(':')
        || s.starts_with("---")
        || s.starts_with("...")
        || (key && s == "<<")
        || resolve::is_ambiguous(s)
}

/// Whether `s` holds the two bytes side by side (`str::contains` sets up a searcher that costs
/// more than the short strings of a manifest).
fn contains_pair(s: &str, first: u8, second: u8) -> bool {
    s.as_bytes()
        .windows(2)
        .any(|w| w[0] == first && w[1] == second)
}

/// The scalar as it appears on one line: plain, `'single'` or `"double"` quoted.
#[cfg(test)]
fn scalar_text(s: &str, key: bool) -> String {
    let mut out = String::new();
    push_scalar(&mut out, s, style(s, key));
    out
}

/// Appends the scalar in `style` (a literal block is written double-quoted here).
fn push_scalar(out: &mut String, s: &str, style: Style) {
    match style {
        Style::Plain => out.push_str(s),
        Style::Single => {
            out.push('\'');
            for (i, part) in s.split('\'').enumerate() {
                if i > 0 {
                    out.push_str("''");
                }
                out.push_str(part);
            }
            out.push('\'');
        }
        Style::Double | Style::Literal => push_double_quoted(out, s),
    }
}

fn push_double_quoted(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xFF => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
}

/// `|`, `|-` or `|+` and the lines indented by `at`.
fn write_literal(out: &mut String, s: &str, at: usize) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.push_str(match trailing {
        0 => "|-",
        1 => "|",
        _ => "|+",
    });
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            indent(out, at);
            out.push_str(line);
        }
    }
    // The last line's break is written by the caller; the rest are kept lines.
    for _ in 1..trailing {
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_style_as_serde_yaml_wrote_it() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "app", "labels": {"keywire.dev/inject": "true"}, "annotations": {}},
            "spec": {
                "containers": [
                    {"name": "app", "args": ["-c", "--port=8080", "1e3"], "ports": [{"containerPort": 80}]},
                    {"name": "b", "env": []}
                ],
                "matrix": [[1, 2], [], [{"a": null}]],
                "ratio": 0.5,
            }
        });
        assert_eq!(
            to_string(&v),
            "apiVersion: v1
kind: Pod
metadata:
  name: app
  labels:
    keywire.dev/inject: 'true'
  annotations: {}
spec:
  containers:
  - name: app
    args:
    - -c
    - --port=8080
    - '1e3'
    ports:
    - containerPort: 80
  - name: b
    env: []
  matrix:
  - - 1
    - 2
  - []
  - - a: null
  ratio: 0.5
"
        );
    }

    #[test]
    fn strings_that_read_as_something_else_are_quoted() {
        let cases = [
            ("on", "'on'"),
            ("y", "'y'"),
            ("NO", "'NO'"),
            ("1_000", "'1_000'"),
            ("0644", "'0644'"),
            ("0x1f", "'0x1f'"),
            ("1e3", "'1e3'"),
            (".inf", "'.inf'"),
            ("1:30", "'1:30'"),
            ("2001-12-14", "'2001-12-14'"),
            ("~", "'~'"),
            ("", "''"),
            (" lead", "' lead'"),
            ("trail ", "'trail '"),
            ("a: b", "'a: b'"),
            ("a #b", "'a #b'"),
            ("key:", "'key:'"),
            ("- x", "'- x'"),
            ("-", "'-'"),
            ("*ref", "'*ref'"),
            ("it's", "it's"),
            ("'q'", "'''q'''"),
            ("@x", "'@x'"),
            ("`x", "'`x'"),
            ("---", "'---'"),
            ("a\tb", "\"a\\tb\""),
            ("bell\x07", "\"bell\\a\""),
            ("nul\0", "\"nul\\0\""),
            ("del\x7f", "\"del\\x7F\""),
            ("bom\u{feff}", "\"bom\\uFEFF\""),
            ("ls\u{2028}", "\"ls\\L\""),
            ("cr\r", "\"cr\\r\""),
            ("caf\u{e9} \u{1f600}", "caf\u{e9} \u{1f600}"),
            ("a:b", "a:b"),
            ("a#b", "a#b"),
            (
                "0f6c2d9e-7b1a-4e3f-8c5d-9a0b1c2d3e4f",
                "0f6c2d9e-7b1a-4e3f-8c5d-9a0b1c2d3e4f",
            ),
            (
                "https://login.microsoftonline.com/",
                "https://login.microsoftonline.com/",
            ),
        ];
        for (s, want) in cases {
            assert_eq!(scalar_text(s, false), want, "{s:?}");
        }
        assert_eq!(scalar_text("<<", true), "'<<'");
    }

    #[test]
    fn multi_line_strings_are_literal_blocks_where_they_read_back() {
        let v =
            json!({"a": "x\ny\n", "b": "x\ny", "c": "x\n\n", "d": " lead\nx", "e": ["one\ntwo"]});
        assert_eq!(
            to_string(&v),
            "a: |\n  x\n  y\nb: |-\n  x\n  y\nc: |+\n  x\n\nd: \" lead\\nx\"\ne:\n- |-\n  one\n  two\n"
        );
    }

    #[test]
    fn numbers_and_long_keys() {
        let v = json!({"big": 1.8446744073709552e19, "tiny": 1e-7, "u": u64::MAX, "neg": -5});
        assert_eq!(
            to_string(&v),
            "big: 18446744073709552000\ntiny: 1e-7\nu: 18446744073709551615\nneg: -5\n"
        );
        let key = "k".repeat(1001);
        let mut m = Map::new();
        m.insert(key.clone(), json!(1));
        assert_eq!(to_string(&Value::Object(m)), format!("? {key}\n: 1\n"));
        // The length that counts is the written one, quotes included.
        for (key, written, explicit) in [
            (
                format!(" {}", "k".repeat(998)),
                format!("' {}'", "k".repeat(998)),
                true,
            ),
            (
                format!(" {}", "k".repeat(997)),
                format!("' {}'", "k".repeat(997)),
                false,
            ),
        ] {
            let mut m = Map::new();
            m.insert(key, json!(1));
            let want = if explicit {
                format!("? {written}\n: 1\n")
            } else {
                format!("{written}: 1\n")
            };
            assert_eq!(to_string(&Value::Object(m)), want);
        }
    }
}
