//! One YAML document to JSON, as go-yaml v2 decodes it into `interface{}` and
//! `sigs.k8s.io/yaml` converts that: values are built straight from parser events, and the
//! nesting and alias limits are checked as the events arrive. Where YAML 1.1 syntax differs
//! from the parser's YAML 1.2, [`super::syntax`] rewrites or refuses the source.

use std::borrow::Cow;
use std::collections::HashMap;

use granit_parser::{
    ErrorKind as ParseErrorKind, Event, Options, Parser, ScalarStyle, Span, StructureStyle,
};
use serde_json::{Map, Value};

use super::resolve::{self, Scalar};
use super::syntax::{
    At, Failure, Fix, Scan, check_characters, marker_position, position, valid_anchor_name,
    yaml11_escape_error,
};
use super::{ErrorKind, MAX_ALIAS_NODES, MAX_DEPTH, Position};

/// Source rewrites (each costs a parse of the document) before a document is refused.
const MAX_REWRITES: usize = 64;

#[derive(Debug)]
pub(crate) struct DocError {
    pub position: Option<Position>,
    pub kind: ErrorKind,
    pub helm_template: Option<usize>,
}

/// Parses the first document of a chunk, as go-yaml's `Unmarshal` does (anything after its
/// end, such as content after `...`, is not read). `None` for a chunk without a document.
pub(crate) fn document(text: &str, first_line: usize) -> Result<Option<Value>, DocError> {
    let result = check_characters(text).and_then(|breaks| {
        let mut source = Cow::Borrowed(text);
        for _ in 0..=MAX_REWRITES {
            match parse(&source, Scan::new(&source, breaks)) {
                Err(Failure::Fix(fix)) => match fix.apply(&source) {
                    Ok(rewritten) => source = Cow::Owned(rewritten),
                    Err(failure) => return Err(failure),
                },
                Err(Failure::At(at, kind)) => return Err(((at), kind)),
                Ok(value) => return Ok(value),
            }
        }
        Err(((1, 1), ErrorKind::Syntax(format!(
            "more than {MAX_REWRITES} YAML 1.1 spellings to rewrite (`\\'` escapes, `-` before `,`, `]` or `}}`) in one document"
        ))))
    });
    result.map_err(|((line, column), kind)| {
        let helm_template = matches!(kind, ErrorKind::Syntax(_) | ErrorKind::ComplexKey(_))
            .then(|| {
                text.find("{{")
                    .map(|i| first_line + text[..i].matches('\n').count())
            })
            .flatten();
        DocError {
            position: Some(Position {
                line: first_line + line - 1,
                column,
            }),
            kind,
            helm_template,
        }
    })
}

fn options() -> Options {
    let mut o = Options::default();
    o.set_emit_comments(false);
    o.emit_anchor_events = true;
    o.emit_unresolved_aliases = true;
    // libyaml reads a BOM inside a document as content.
    o.bom_inside_document_as_content = true;
    // The scanner looks ahead, so its own limits may trip before the builder's.
    o.flow_nesting_limit = MAX_DEPTH;
    o.block_nesting_limit = MAX_DEPTH;
    o
}

/// The value of the first document.
fn parse(source: &str, mut scan: Scan<'_>) -> Result<Option<Value>, Failure> {
    let mut builder = Builder::new(source);
    for event in Parser::new_from_str_with_options(source, options()) {
        let (event, span) = match event {
            Ok(e) => e,
            Err(e) => {
                let offset = e.marker().byte_offset().unwrap_or(usize::MAX);
                return Err(match e.kind() {
                    ParseErrorKind::UnknownQuotedScalarEscape if offset < source.len() => {
                        Failure::Fix(Fix::QuoteEscape(offset))
                    }
                    ParseErrorKind::PlainScalarStartsWithDashFlowIndicator
                        if source.as_bytes().get(offset) == Some(&b'-') =>
                    {
                        Failure::Fix(Fix::Dash(offset))
                    }
                    ParseErrorKind::RecursionLimitExceeded => {
                        Failure::At(position(e.marker()), ErrorKind::TooDeep(MAX_DEPTH))
                    }
                    kind => Failure::At(position(e.marker()), ErrorKind::Syntax(kind.to_string())),
                });
            }
        };
        let (flow, indent) = builder.context();
        scan.event(&event, &span, flow, indent);
        match event {
            Event::StreamEnd => return Ok(None),
            Event::DocumentEnd => {
                scan.check().map_err(|(at, kind)| Failure::At(at, kind))?;
                // Conversion errors count only where they survive into the document.
                if let Some(p) = builder.root_poison {
                    return Err(Failure::At(p.at, p.kind));
                }
                return Ok(Some(builder.root.unwrap_or(Value::Null)));
            }
            event => builder.event(event, &span).map_err(|kind| {
                Failure::At(builder.error_at.unwrap_or(position(&span.start)), kind)
            })?,
        }
    }
    Ok(None)
}

/// A value or key that has no JSON form (`.inf`, a null key): `sigs.k8s.io/yaml` refuses it
/// only if it is still there once go-yaml has decoded the document, as a later duplicate key
/// can replace it.
#[derive(Clone)]
struct Poison {
    /// The key whose value holds it, or `None` for a bad key (or any, in a sequence).
    key: Option<String>,
    at: At,
    kind: ErrorKind,
}

/// A finished node, before it is placed in its parent.
struct Node {
    content: Content,
    size: usize,
    height: usize,
    /// An alias: a merge of an aliased sequence is refused.
    alias: bool,
    /// A `<<` key.
    merge: bool,
    at: At,
    poisons: Vec<Poison>,
}

#[derive(Clone)]
enum Content {
    /// Scalars keep their Go type until they are placed: a key and a value convert differently.
    Scalar(Scalar),
    Value(Value),
}

enum Anchor {
    Open,
    Closed {
        content: Content,
        size: usize,
        height: usize,
        poisons: Vec<Poison>,
    },
}

struct Frame {
    collection: Collection,
    anchor: usize,
    size: usize,
    height: usize,
    at: At,
    flow: bool,
    poisons: Vec<Poison>,
}

enum Collection {
    Sequence(Vec<Value>),
    Mapping { map: Map<String, Value>, key: Key },
}

enum Key {
    Expected,
    Ready(String),
    Merge,
    /// A key without JSON form: its value is dropped, the mapping is poisoned.
    Discard,
}

struct Builder<'s> {
    source: &'s str,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchor>,
    names: HashMap<usize, String>,
    root: Option<Value>,
    root_poison: Option<Poison>,
    /// Nodes as written, and nodes copied for anchors and aliases.
    written: usize,
    copied: usize,
    /// Where an error of the current event is, when not at the event's start.
    error_at: Option<At>,
}

impl<'s> Builder<'s> {
    fn new(source: &'s str) -> Self {
        Builder {
            source,
            stack: Vec::new(),
            anchors: HashMap::new(),
            names: HashMap::new(),
            root: None,
            root_poison: None,
            written: 0,
            copied: 0,
            error_at: None,
        }
    }

    /// Whether an event's parent is a flow collection (for an end event: whether the closing
    /// collection is one), and the column continuation lines of a plain scalar must pass: the
    /// enclosing block collection's, plus one.
    fn context(&self) -> (bool, usize) {
        let flow = self.stack.last().is_some_and(|f| f.flow);
        let indent = self
            .stack
            .iter()
            .rev()
            .find(|f| !f.flow)
            .map_or(0, |f| f.at.1);
        (flow, indent)
    }

    fn in_key_position(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame {
                collection: Collection::Mapping {
                    key: Key::Expected,
                    ..
                },
                ..
            })
        )
    }

    fn name(&self, id: usize) -> String {
        self.names.get(&id).cloned().unwrap_or_default()
    }

    fn copy(&mut self, size: usize) -> Result<(), ErrorKind> {
        self.copied += size;
        let limit = MAX_ALIAS_NODES.min(10 * self.written + 10_000);
        if self.copied > limit {
            return Err(ErrorKind::TooManyAliases(limit));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), ErrorKind> {
        self.error_at = None;
        let at = position(&span.start);
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                if style == ScalarStyle::DoubleQuoted
                    && let Some(range) = span.byte_range()
                    && let Some(raw) = self.source.get(range.clone())
                    && let Some((offset, kind)) = yaml11_escape_error(raw)
                {
                    self.error_at = Some(marker_position(self.source, range.start + offset));
                    return Err(kind);
                }
                let plain = style == ScalarStyle::Plain;
                if plain && self.stack.last().is_some_and(|f| f.flow) {
                    // libyaml ends a plain scalar in a flow collection at `?`, and reads a
                    // leading `?` or `:` as an indicator.
                    if let Some(c) = text.chars().next().filter(|c| matches!(c, '?' | ':')) {
                        return Err(ErrorKind::FlowIndicator(c));
                    }
                    if let Some(i) = text.find('?') {
                        self.error_at = Some((at.0, at.1 + text[..i].chars().count()));
                        return Err(ErrorKind::FlowIndicator('?'));
                    }
                }
                let tag = tag.map(|t| format!("{}{}", t.handle(), t.suffix()));
                let merge = self.in_key_position()
                    && text == "<<"
                    && match tag.as_deref() {
                        None => plain,
                        Some(t) => t == "!" || t == resolve::MERGE,
                    };
                let scalar = resolve::resolve(tag.as_deref(), &text, plain)?;
                self.written += 1;
                let content = Content::Scalar(scalar);
                if anchor != 0 {
                    self.copy(1)?;
                    self.anchors.insert(
                        anchor,
                        Anchor::Closed {
                            content: content.clone(),
                            size: 1,
                            height: 0,
                            poisons: Vec::new(),
                        },
                    );
                }
                self.place(Node {
                    content,
                    size: 1,
                    height: 0,
                    alias: false,
                    merge,
                    at,
                    poisons: Vec::new(),
                })
            }
            Event::SequenceStart(style, anchor, _) | Event::MappingStart(style, anchor, _) => {
                let sequence = matches!(event, Event::SequenceStart(..));
                if self.in_key_position() {
                    return Err(ErrorKind::ComplexKey(if sequence {
                        "sequence"
                    } else {
                        "mapping"
                    }));
                }
                if self.stack.len() >= MAX_DEPTH {
                    return Err(ErrorKind::TooDeep(MAX_DEPTH));
                }
                self.written += 1;
                if anchor != 0 {
                    self.anchors.insert(anchor, Anchor::Open);
                }
                let collection = if sequence {
                    Collection::Sequence(Vec::new())
                } else {
                    Collection::Mapping {
                        map: Map::new(),
                        key: Key::Expected,
                    }
                };
                let flow = style == StructureStyle::Flow;
                self.stack.push(Frame {
                    collection,
                    anchor,
                    size: 1,
                    height: 1,
                    at,
                    flow,
                    poisons: Vec::new(),
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Ok(());
                };
                let value = match frame.collection {
                    Collection::Sequence(items) => Value::Array(items),
                    Collection::Mapping { map, .. } => Value::Object(map),
                };
                let content = Content::Value(value);
                if frame.anchor != 0 {
                    self.copy(frame.size)?;
                    self.anchors.insert(
                        frame.anchor,
                        Anchor::Closed {
                            content: content.clone(),
                            size: frame.size,
                            height: frame.height,
                            poisons: frame.poisons.clone(),
                        },
                    );
                }
                self.place(Node {
                    content,
                    size: frame.size,
                    height: frame.height,
                    alias: false,
                    merge: false,
                    at: frame.at,
                    poisons: frame.poisons,
                })
            }
            Event::Alias(id) => {
                let raw = span
                    .byte_range()
                    .and_then(|r| self.source.get(r))
                    .unwrap_or("*");
                if !valid_anchor_name(raw.trim_start_matches('*')) {
                    return Err(ErrorKind::AnchorName);
                }
                let (content, size, height, poisons) = match self.anchors.get(&id) {
                    Some(Anchor::Closed {
                        content,
                        size,
                        height,
                        poisons,
                    }) => (content.clone(), *size, *height, poisons.clone()),
                    Some(Anchor::Open) => return Err(ErrorKind::RecursiveAnchor(self.name(id))),
                    None => return Err(ErrorKind::UnknownAnchor(self.name(id))),
                };
                if self.in_key_position() && matches!(content, Content::Value(_)) {
                    return Err(ErrorKind::ComplexKey("collection"));
                }
                if self.stack.len() + height > MAX_DEPTH {
                    return Err(ErrorKind::TooDeep(MAX_DEPTH));
                }
                self.copy(size)?;
                self.place(Node {
                    content,
                    size,
                    height,
                    alias: true,
                    merge: false,
                    at,
                    poisons,
                })
            }
            Event::UnresolvedAlias(name) => Err(ErrorKind::UnknownAnchor(name.into_owned())),
            Event::Anchor(id, name) => {
                if !valid_anchor_name(&name) {
                    return Err(ErrorKind::AnchorName);
                }
                self.names.insert(id, name.into_owned());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn place(&mut self, node: Node) -> Result<(), ErrorKind> {
        self.error_at = Some(node.at);
        let Node {
            content,
            size,
            height,
            alias,
            merge: merge_key,
            at,
            poisons,
        } = node;
        let Some(frame) = self.stack.last_mut() else {
            let (value, poison) = settle(content, poisons, at);
            self.root = Some(value);
            self.root_poison = poison;
            return Ok(());
        };
        frame.size += size;
        frame.height = frame.height.max(height + 1);
        match &mut frame.collection {
            Collection::Sequence(items) => {
                let (value, poison) = settle(content, poisons, at);
                items.push(value);
                if frame.poisons.is_empty()
                    && let Some(p) = poison
                {
                    frame.poisons.push(Poison { key: None, ..p });
                }
            }
            Collection::Mapping { map, key } => match std::mem::replace(key, Key::Expected) {
                Key::Expected if merge_key => *key = Key::Merge,
                Key::Expected => match content {
                    Content::Scalar(s) => match s.into_key() {
                        Ok(k) => *key = Key::Ready(k),
                        Err(kind) => {
                            frame.poisons.push(Poison {
                                key: None,
                                at,
                                kind,
                            });
                            *key = Key::Discard;
                        }
                    },
                    Content::Value(_) => return Err(ErrorKind::ComplexKey("collection")),
                },
                Key::Ready(k) => {
                    let (value, poison) = settle(content, poisons, at);
                    frame
                        .poisons
                        .retain(|p| p.key.as_deref() != Some(k.as_str()));
                    if let Some(p) = poison {
                        frame.poisons.push(Poison {
                            key: Some(k.clone()),
                            ..p
                        });
                    }
                    map.insert(k, value);
                }
                Key::Discard => {}
                Key::Merge => merge(map, &mut frame.poisons, content, alias, poisons)?,
            },
        }
        Ok(())
    }
}

/// The value a node places, and the first poison it carries.
fn settle(content: Content, poisons: Vec<Poison>, at: At) -> (Value, Option<Poison>) {
    let value = match content {
        Content::Scalar(s) => s.into_value(),
        Content::Value(v) => Ok(v),
    };
    match value {
        Ok(v) => (v, poisons.into_iter().next()),
        Err(kind) => (
            Value::Null,
            Some(Poison {
                key: None,
                at,
                kind,
            }),
        ),
    }
}

/// go-yaml v2's merge: the merged mapping's keys overwrite what the mapping holds so far (later
/// keys overwrite them in turn); of a sequence of mappings, the first listed wins.
fn merge(
    map: &mut Map<String, Value>,
    frame_poisons: &mut Vec<Poison>,
    content: Content,
    alias: bool,
    poisons: Vec<Poison>,
) -> Result<(), ErrorKind> {
    let replaced = |frame_poisons: &mut Vec<Poison>, merged: &Map<String, Value>| {
        frame_poisons.retain(|p| !p.key.as_ref().is_some_and(|k| merged.contains_key(k)));
    };
    match content {
        Content::Value(Value::Object(merged)) => {
            replaced(frame_poisons, &merged);
            frame_poisons.extend(poisons);
            map.extend(merged);
        }
        Content::Value(Value::Array(items)) if !alias => {
            let mut maps = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Object(m) => maps.push(m),
                    _ => return Err(ErrorKind::Merge),
                }
            }
            for m in maps.into_iter().rev() {
                replaced(frame_poisons, &m);
                map.extend(m);
            }
            // Which item a poison came from is not kept: it stays with the mapping.
            frame_poisons.extend(poisons.into_iter().map(|p| Poison { key: None, ..p }));
        }
        _ => return Err(ErrorKind::Merge),
    }
    Ok(())
}
