//! How input is echoed back: names, keys and values from manifests reach terminals, CI logs and
//! API-server messages, so control characters in them are escaped and can never start a line
//! (a forged `::error::` in a GitHub Actions log) or drive a terminal.

use std::borrow::Cow;

/// Characters that must not reach output raw: C0 and C1 controls and DEL (newline, carriage
/// return, ESC...), the Unicode line and paragraph separators, and the bidirectional overrides
/// that reorder what a reader sees.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every such character written as a Rust escape (`\n`, `\r`, `\t`, `\u{1b}`); other
/// text, backslashes included, unchanged, so escaping twice is escaping once.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(must_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if must_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        let cases = [
            ("web", "web"),
            ("a\nb", "a\\nb"),
            ("a\r\n::error::x", "a\\r\\n::error::x"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("tab\there", "tab\\there"),
            ("nel\u{85}x", "nel\\u{85}x"),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            ("rlo\u{202e}x", "rlo\\u{202e}x"),
            ("back\\slash é 名前", "back\\slash é 名前"),
        ];
        for (input, want) in cases {
            assert_eq!(escape(input), want, "{input:?}");
            assert!(!escape(input).contains('\n'));
            assert_eq!(
                escape(&escape(input)),
                escape(input),
                "idempotent: {input:?}"
            );
        }
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
    }
}
