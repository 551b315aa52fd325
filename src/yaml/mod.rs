//! YAML as kubectl reads it (`sigs.k8s.io/yaml` over go-yaml v2, YAML 1.1), and YAML that kubectl reads back as the same JSON.
//!
//! Reading follows `kubectl apply -f` step by step: the file is decoded (UTF-8 BOM dropped,
//! UTF-16 with a BOM decoded, bytes that are not UTF-8 become U+FFFD), a stream that starts
//! with `{` is read as JSON values until that fails, and YAML is cut into documents at lines
//! starting with `---` before each document is parsed on its own ([`input`]). A document
//! becomes JSON with go-yaml v2's rules: YAML 1.1 booleans and octal, `<<` merge keys,
//! `!!binary`, tags, non-string keys turned into strings, `.inf`/`.nan` refused ([`read`],
//! [`resolve`]). Numbers end up as kubectl holds them: an integer that fits int64 is an
//! integer, everything else a float ([`number`]).
//!
//! The event parser underneath is `granit-parser`, the fork of `saphyr-parser` that
//! `serde-saphyr` (and so kube 5) now reads YAML with: it is already in the build, it gives
//! every event a source span and the tag as written, lets us read anchor names, keep a BOM
//! inside a document as libyaml does, and it bounds nesting in the scanner itself.
//! saphyr-parser 0.3 has no span byte ranges or anchor names and no nesting limit. Both parse
//! YAML 1.2 syntax; where libyaml's YAML 1.1 syntax differs in ways kubectl users meet
//! (`\/` and surrogate escapes are errors, `\'` is an escape, anchor names are `[A-Za-z0-9_-]`)
//! [`read`] checks or rewrites the source around the parser.

use std::fmt;

mod input;
pub mod number;
mod read;
mod resolve;
mod syntax;
mod write;

pub use input::{Document, Documents, Pending, decode};
pub use write::{to_string, to_string_all};

/// Deepest nesting of sequences and mappings in one document. serde_json stops at the same
/// depth, so the webhook (which reads JSON) and `keywire mutate` refuse the same objects;
/// kubectl itself allows 10,000, far beyond any Kubernetes object.
pub const MAX_DEPTH: usize = 128;

/// Nodes that aliases (and anchors, which are copied when they close) may add to one
/// document: at most this many, and at most ten times the nodes written plus 10,000.
/// Billion-laughs documents stop here after a few thousand events.
pub const MAX_ALIAS_NODES: usize = 1_000_000;

/// Reads every document of a manifest stream, skipping empty and `null` documents.
pub fn from_str(text: &str) -> Result<Vec<serde_json::Value>, Error> {
    Documents::new(text.as_bytes())
        .map(|d| d.map(|d| d.value))
        .collect()
}

/// Where in the input an error is: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// A document that cannot be read. The message names the document (as kubectl cuts the
/// stream) and the position, never the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    pub document: usize,
    pub position: Option<Position>,
    pub kind: ErrorKind,
    /// Line of the first `{{` when the document looks like an unrendered Helm template.
    pub helm_template: Option<usize>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(p) = self.position {
            write!(f, ", line {}, column {}", p.line, p.column)?;
        }
        write!(f, ": {}", self.kind)?;
        if let Some(line) = self.helm_template {
            write!(
                f,
                " (this looks like an unrendered Helm template, `{{{{` on line {line}: render it with `helm template` first)"
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read the input: {0}")]
    Io(String),
    #[error("{0}")]
    Syntax(String),
    #[error("{0} (the stream started with `{{`, so kubectl read it as JSON)")]
    Json(String),
    #[error("only spaces and a `#` comment may follow a `---` document separator")]
    Separator,
    #[error(
        "control character U+{0:04X} is not allowed in YAML; write it as an escape in a double-quoted string"
    )]
    ControlCharacter(u32),
    #[error("found unknown escape character `\\{0}` (YAML 1.1, as kubectl reads it)")]
    UnknownEscape(char),
    #[error("found invalid Unicode character escape code (YAML 1.1 has no surrogate escapes)")]
    SurrogateEscape,
    #[error(
        "a raw {0} is a line break in YAML 1.1 (kubectl) but not in YAML 1.2; write it as an escape in a double-quoted string"
    )]
    YamlLineBreak(&'static str),
    #[error(
        "`{0}` in a plain scalar inside `[...]` or `{{...}}` is an indicator in YAML 1.1 (kubectl): quote the string"
    )]
    FlowIndicator(char),
    #[error(
        "found a tab character that violates indentation (YAML 1.1, as kubectl reads it, wants spaces there)"
    )]
    Tab,
    #[error("nesting is deeper than keywire's limit of {0} levels")]
    TooDeep(usize),
    #[error("aliases expand to more than {0} nodes, keywire's limit")]
    TooManyAliases(usize),
    #[error("unknown anchor '{0}' referenced")]
    UnknownAnchor(String),
    #[error("anchor '{0}' value contains itself")]
    RecursiveAnchor(String),
    #[error(
        "anchor and alias names may only hold letters, digits, `_` and `-` (YAML 1.1, as kubectl reads it)"
    )]
    AnchorName,
    #[error("invalid map key: a {0} cannot be a key")]
    ComplexKey(&'static str),
    #[error("a null key has no JSON form")]
    NullKey,
    #[error("an integer key beyond int64 has no JSON form in kubectl (quote it)")]
    Uint64Key,
    #[error("{0} has no JSON form (quote it if it is text)")]
    NotFinite(&'static str),
    #[error("cannot decode !!{found} as a !!{tag}")]
    TagMismatch { found: String, tag: String },
    #[error("!!binary value contains invalid base64 data")]
    Base64,
    #[error("map merge requires map or sequence of maps as the value")]
    Merge,
}

#[cfg(test)]
#[allow(clippy::excessive_precision)] // The digits are the point: values as Go rounds them.
mod tests;
