//! The stream as kubectl cuts it into documents (`cli-runtime` `FileVisitor`, apimachinery's
//! `YAMLOrJSONDecoder`, `YAMLReader`, `LineReader`), one document at a time.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Cursor, Read};

use serde::Deserialize;
use serde_json::Value;

use super::{Error, ErrorKind, Position, read};

/// kubectl looks this far into the stream for the `{` that makes it JSON.
const JSON_SNIFF: usize = 4096;

/// One document of the stream, in order; empty and `null` documents are skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// 1-based, counting documents as kubectl cuts the stream.
    pub number: usize,
    /// Line of the document's first line (`None` for JSON values).
    pub line: Option<usize>,
    pub value: Value,
}

/// The documents of a manifest stream, read one at a time: memory holds the document being
/// read, not the stream. Stops after the first error.
pub struct Documents<'a> {
    state: State<'a>,
    number: usize,
}

enum State<'a> {
    Start(Box<dyn Read + 'a>),
    Json(Recorder<'a>),
    Yaml(Lines<'a>),
    Done,
}

impl<'a> Documents<'a> {
    pub fn new(input: impl Read + 'a) -> Self {
        Documents {
            state: State::Start(Box::new(Utf8Reader::new(input))),
            number: 0,
        }
    }

    fn error(&self, position: Option<Position>, kind: ErrorKind) -> Error {
        Error {
            document: self.number,
            position,
            kind,
            helm_template: None,
        }
    }

    /// The next document, parsed.
    fn next_document(&mut self) -> Result<Option<Document>, Error> {
        loop {
            match self.next_cut()? {
                None => return Ok(None),
                Some(pending) => match pending.parse() {
                    Ok(Some(d)) => return Ok(Some(d)),
                    Ok(None) => continue,
                    Err(e) => {
                        self.state = State::Done;
                        return Err(e);
                    }
                },
            }
        }
    }

    /// The next document as cut from the stream, to be parsed on any thread with
    /// [`Pending::parse`] (JSON values are parsed as they are read, so they come parsed). After
    /// an error nothing more is read, as with the iterator.
    pub fn next_pending(&mut self) -> Option<Result<Pending, Error>> {
        match self.next_cut() {
            Ok(p) => p.map(Ok),
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }

    fn next_cut(&mut self) -> Result<Option<Pending>, Error> {
        loop {
            match std::mem::replace(&mut self.state, State::Done) {
                State::Done => return Ok(None),
                State::Start(mut input) => {
                    let mut head = Vec::with_capacity(JSON_SNIFF);
                    (&mut input)
                        .take(JSON_SNIFF as u64)
                        .read_to_end(&mut head)
                        .map_err(|e| self.error(None, ErrorKind::Io(e.to_string())))?;
                    let json = String::from_utf8_lossy(&head)
                        .trim_start_matches(char::is_whitespace)
                        .starts_with('{');
                    let stream = BufReader::new(Cursor::new(head).chain(input));
                    self.state = if json {
                        State::Json(Recorder::new(Box::new(stream)))
                    } else {
                        State::Yaml(Lines::new(Box::new(stream), 1))
                    };
                }
                State::Json(mut json) => {
                    let number = self.number + 1;
                    match json.next_value() {
                        Ok(None) => return Ok(None),
                        Ok(Some(value)) => {
                            self.number = number;
                            self.state = State::Json(json);
                            if value.is_null() {
                                continue;
                            }
                            return Ok(Some(Pending(Cut::Parsed(Document {
                                number,
                                line: None,
                                value,
                            }))));
                        }
                        Err(JsonFailure {
                            message,
                            depth,
                            position,
                        }) => {
                            let kind = if depth {
                                ErrorKind::TooDeep(super::MAX_DEPTH)
                            } else {
                                ErrorKind::Json(message)
                            };
                            // kubectl tries YAML instead, from after the last JSON value, when
                            // at most one value was read.
                            if json.count > 1 || message_is_final(&kind) {
                                self.number = number;
                                return Err(self.error(position, kind));
                            }
                            let first_error = self.error(position, kind);
                            match json.into_yaml() {
                                Some(lines) => {
                                    let mut documents = Documents {
                                        state: State::Yaml(lines),
                                        number: self.number,
                                    };
                                    // kubectl reports the JSON error if YAML fails as well;
                                    // keywire's own limits are named as they are.
                                    let first =
                                        documents.next_document().map_err(|e| match e.kind {
                                            ErrorKind::TooDeep(_)
                                            | ErrorKind::TooManyAliases(_) => e,
                                            _ => Error {
                                                document: number,
                                                ..first_error
                                            },
                                        })?;
                                    *self = documents;
                                    match first {
                                        Some(d) => return Ok(Some(Pending(Cut::Parsed(d)))),
                                        None => return Ok(None),
                                    }
                                }
                                None => {
                                    return Err(Error {
                                        document: number,
                                        ..first_error
                                    });
                                }
                            }
                        }
                    }
                }
                State::Yaml(mut lines) => {
                    let chunk = lines.next_chunk().map_err(|(line, kind)| {
                        self.error(Some(Position { line, column: 1 }), kind)
                    });
                    let chunk = match chunk {
                        Ok(Some(chunk)) => chunk,
                        Ok(None) => return Ok(None),
                        Err(mut e) => {
                            e.document += 1;
                            return Err(e);
                        }
                    };
                    self.number += 1;
                    self.state = State::Yaml(lines);
                    return Ok(Some(Pending(Cut::Yaml {
                        number: self.number,
                        chunk,
                    })));
                }
            }
        }
    }
}

/// A document cut from the stream but not yet parsed ([`Documents::next_pending`]).
pub struct Pending(Cut);

enum Cut {
    Parsed(Document),
    Yaml { number: usize, chunk: Chunk },
}

impl Pending {
    /// The document; `None` for an empty or `null` one, which the stream skips.
    pub fn parse(self) -> Result<Option<Document>, Error> {
        match self.0 {
            Cut::Parsed(d) => Ok(Some(d)),
            Cut::Yaml { number, chunk } => {
                let value = read::document(&chunk.text, chunk.line).map_err(|e| Error {
                    document: number,
                    position: e.position,
                    kind: e.kind,
                    helm_template: e.helm_template,
                })?;
                Ok(value.filter(|v| !v.is_null()).map(|value| Document {
                    number,
                    line: Some(chunk.line),
                    value,
                }))
            }
        }
    }
}

/// A number beyond float64 is no syntax error to Go's JSON decoder: kubectl refuses the
/// object later instead of trying YAML.
fn message_is_final(kind: &ErrorKind) -> bool {
    matches!(kind, ErrorKind::Json(m) if m.starts_with("number out of range"))
}

impl Iterator for Documents<'_> {
    type Item = Result<Document, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_document() {
            Ok(Some(d)) => Some(Ok(d)),
            Ok(None) => None,
            Err(e) => {
                self.state = State::Done;
                Some(Err(e))
            }
        }
    }
}

/// Text as kubectl's `transform.NewReader(f, unicode.BOMOverride(unicode.UTF8.NewDecoder()))`
/// gives it: a UTF-8 BOM dropped, UTF-16 with a BOM decoded, and every byte that is not part of
/// valid UTF-8 replaced by U+FFFD (one per byte, as Go's decoder does).
pub fn decode(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.starts_with(&[0xFE, 0xFF]) || bytes.starts_with(&[0xFF, 0xFE]) {
        let mut out = String::new();
        // Reading from a slice cannot fail.
        let _ = Utf8Reader::new(bytes).read_to_string(&mut out);
        return Cow::Owned(out);
    }
    lossy(bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes))
}

/// UTF-8 with each byte of an invalid sequence replaced by U+FFFD, as Go's `utf8.DecodeRune`
/// loops do it (Rust's `from_utf8_lossy` replaces a whole invalid prefix with one).
pub(crate) fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 8);
            push_lossy(&mut out, bytes, true);
            Cow::Owned(out)
        }
    }
}

/// Appends `bytes` decoded; without `at_end`, returns how many trailing bytes of an incomplete
/// sequence were left for the next call.
fn push_lossy(out: &mut String, mut bytes: &[u8], at_end: bool) -> usize {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return 0;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = match e.error_len() {
                    Some(n) => n,
                    None if !at_end => return rest.len(),
                    None => rest.len(),
                };
                out.extend(std::iter::repeat_n('\u{FFFD}', bad));
                bytes = &rest[bad..];
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Encoding {
    Unknown,
    Utf8,
    Utf16 { big_endian: bool },
}

/// [`decode`] as a stream.
struct Utf8Reader<R> {
    inner: R,
    encoding: Encoding,
    raw: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    eof: bool,
    /// A UTF-16 high surrogate waiting for its low half.
    high: Option<u16>,
}

impl<R: Read> Utf8Reader<R> {
    fn new(inner: R) -> Self {
        Utf8Reader {
            inner,
            encoding: Encoding::Unknown,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            eof: false,
            high: None,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 16 * 1024];
        while self.out_pos >= self.out.len() && !(self.eof && self.raw.is_empty()) {
            self.out.clear();
            self.out_pos = 0;
            if !self.eof {
                let n = match self.inner.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.eof = n == 0;
                self.raw.extend_from_slice(&buf[..n]);
            }
            if let Encoding::Unknown = self.encoding {
                if self.raw.len() < 3 && !self.eof {
                    continue;
                }
                self.encoding = if self.raw.starts_with(&[0xEF, 0xBB, 0xBF]) {
                    self.raw.drain(..3);
                    Encoding::Utf8
                } else if self.raw.starts_with(&[0xFE, 0xFF]) || self.raw.starts_with(&[0xFF, 0xFE])
                {
                    let big_endian = self.raw[0] == 0xFE;
                    self.raw.drain(..2);
                    Encoding::Utf16 { big_endian }
                } else {
                    Encoding::Utf8
                };
            }
            let mut text = String::new();
            let kept = match self.encoding {
                Encoding::Utf16 { big_endian } => self.push_utf16(&mut text, big_endian),
                _ => push_lossy(&mut text, &self.raw, self.eof),
            };
            let used = self.raw.len() - kept;
            self.raw.drain(..used);
            self.out = text.into_bytes();
        }
        Ok(())
    }

    /// Decodes whole UTF-16 units; returns the bytes kept for later (half a unit).
    fn push_utf16(&mut self, out: &mut String, big_endian: bool) -> usize {
        let units = self.raw.chunks_exact(2);
        let odd = units.remainder().len();
        for pair in units {
            let unit = if big_endian {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_le_bytes([pair[0], pair[1]])
            };
            match (self.high.take(), unit) {
                (Some(high), 0xDC00..=0xDFFF) => {
                    let c =
                        0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                    out.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                }
                (high, _) => {
                    if high.is_some() {
                        out.push('\u{FFFD}');
                    }
                    match unit {
                        0xD800..=0xDBFF => self.high = Some(unit),
                        _ => out.push(char::from_u32(u32::from(unit)).unwrap_or('\u{FFFD}')),
                    }
                }
            }
        }
        if self.eof {
            if self.high.take().is_some() {
                out.push('\u{FFFD}');
            }
            if odd > 0 {
                out.push('\u{FFFD}');
            }
            self.raw.clear();
            return 0;
        }
        odd
    }
}

impl<R: Read> Read for Utf8Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.fill()?;
        let n = (self.out.len() - self.out_pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// A chunk of lines that kubectl parses as one YAML document.
pub(crate) struct Chunk {
    pub text: String,
    /// Line number of the chunk's first line.
    pub line: usize,
}

/// apimachinery's `YAMLReader` over `LineReader`: documents end at lines that start with `---`.
pub(crate) struct Lines<'a> {
    input: Box<dyn BufRead + 'a>,
    /// Number of the next line to read.
    line: usize,
    buf: Vec<u8>,
}

impl<'a> Lines<'a> {
    fn new(input: Box<dyn BufRead + 'a>, line: usize) -> Self {
        Lines {
            input,
            line,
            buf: Vec::new(),
        }
    }

    /// The next chunk; errors carry the line of the bad separator.
    fn next_chunk(&mut self) -> Result<Option<Chunk>, (usize, ErrorKind)> {
        let mut chunk = Chunk {
            text: String::new(),
            line: self.line,
        };
        loop {
            self.buf.clear();
            let n = self
                .input
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| (self.line, ErrorKind::Io(e.to_string())))?;
            if n == 0 {
                return Ok((!chunk.text.is_empty()).then_some(chunk));
            }
            let line_no = self.line;
            self.line += 1;
            // LineReader drops "\n" and the "\r" of "\r\n", then appends "\n".
            let mut line: &[u8] = &self.buf;
            if let Some(l) = line.strip_suffix(b"\n") {
                line = l.strip_suffix(b"\r").unwrap_or(l);
            }
            let line = lossy(line);
            if let Some(rest) = line.strip_prefix("---") {
                let rest = rest.trim_matches(char::is_whitespace);
                if !rest.is_empty() && !rest.starts_with('#') {
                    return Err((line_no, ErrorKind::Separator));
                }
                if !chunk.text.is_empty() {
                    return Ok(Some(chunk));
                }
            }
            if chunk.text.is_empty() {
                chunk.line = line_no;
            }
            chunk.text.push_str(&line);
            chunk.text.push('\n');
        }
    }
}

/// Why a JSON value could not be read.
struct JsonFailure {
    message: String,
    /// serde_json's recursion limit.
    depth: bool,
    position: Option<Position>,
}

/// JSON values read one at a time, keeping what was read until kubectl can no longer switch to
/// YAML (two values read).
struct Recorder<'a> {
    input: Box<dyn BufRead + 'a>,
    log: Vec<u8>,
    /// Bytes of the log consumed by values read so far.
    consumed: usize,
    count: usize,
    /// Line and column (in characters) of the next byte.
    line: usize,
    column: usize,
}

impl<'a> Recorder<'a> {
    fn new(input: Box<dyn BufRead + 'a>) -> Self {
        Recorder {
            input,
            log: Vec::new(),
            consumed: 0,
            count: 0,
            line: 1,
            column: 1,
        }
    }

    fn advance(&mut self, bytes: &[u8]) {
        if self.count < 2 {
            self.log.extend_from_slice(bytes);
        }
        for &b in bytes {
            if b == b'\n' {
                self.line += 1;
                self.column = 1;
            } else if b & 0xC0 != 0x80 {
                self.column += 1;
            }
        }
    }

    fn recording(&self) -> bool {
        self.count < 2
    }

    fn next_value(&mut self) -> Result<Option<Value>, JsonFailure> {
        let failure = |e: io::Error| JsonFailure {
            message: e.to_string(),
            depth: false,
            position: None,
        };
        // Skip JSON whitespace; a clean end of input ends the stream.
        loop {
            let buf = self.input.fill_buf().map_err(failure)?;
            if buf.is_empty() {
                return Ok(None);
            }
            let n = buf
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            let whole = n == buf.len();
            let skipped = buf[..n].to_vec();
            self.advance(&skipped);
            self.input.consume(n);
            if !whole {
                break;
            }
        }
        let (line, column) = (self.line, self.column);
        let parsed = {
            let mut de = serde_json::Deserializer::from_reader(&mut *self);
            Value::deserialize(&mut de)
        };
        match parsed {
            Ok(mut value) => {
                super::number::normalize(&mut value);
                self.count += 1;
                self.consumed = self.log.len();
                if !self.recording() {
                    self.log = Vec::new();
                }
                Ok(Some(value))
            }
            Err(e) => {
                // serde_json counts from where this value started.
                let position = (e.line() > 0).then(|| Position {
                    line: line + e.line() - 1,
                    column: if e.line() == 1 {
                        column + e.column().saturating_sub(1)
                    } else {
                        e.column()
                    },
                });
                let text = e.to_string();
                let message = text
                    .rsplit_once(" at line ")
                    .map_or(text.as_str(), |(m, _)| m);
                Err(JsonFailure {
                    depth: message == "recursion limit exceeded",
                    message: message.to_string(),
                    position,
                })
            }
        }
    }

    /// The YAML reader kubectl switches to: from after the last JSON value, less the
    /// whitespace up to and including the first line break (`consumeWhitespace`). `None` when
    /// only whitespace is left, or when a U+FFFD follows (kubectl then keeps the JSON error).
    fn into_yaml(self) -> Option<Lines<'a>> {
        let tail = self.log.get(self.consumed..).unwrap_or_default().to_vec();
        let mut line = 1 + self.log[..self.consumed.min(self.log.len())]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        let mut input = BufReader::new(Cursor::new(tail).chain(self.input));
        let mut skip = 0;
        loop {
            let buf = input.fill_buf().ok()?;
            let text = String::from_utf8_lossy(&buf[..buf.len().min(4)]).into_owned();
            let c = text.chars().next()?;
            if c == '\u{FFFD}' {
                return None;
            }
            if !c.is_whitespace() {
                break;
            }
            let width = c.len_utf8();
            input.consume(width);
            skip += width;
            if c == '\n' {
                line += 1;
                break;
            }
        }
        let _ = skip;
        Some(Lines::new(Box::new(input), line))
    }
}

impl Read for Recorder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.input.read(buf)?;
        self.advance(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> String {
        let mut out = String::new();
        Utf8Reader::new(bytes).read_to_string(&mut out).unwrap();
        assert_eq!(decode(bytes), out, "decode and the stream agree");
        out
    }

    #[test]
    fn text_is_decoded_as_kubectls_file_reader_decodes_it() {
        assert_eq!(decoded(b"\xEF\xBB\xBFa: 1\n"), "a: 1\n");
        assert_eq!(decoded(b"a: \xff\xfe\n"), "a: \u{fffd}\u{fffd}\n");
        assert_eq!(decoded(b"\xe2\x82A"), "\u{fffd}\u{fffd}A");
        assert_eq!(decoded(b"x\xe2\x82"), "x\u{fffd}\u{fffd}");
        assert_eq!(decoded(b"\xFF\xFEa\x00:\x00 \x00\xe9\x00"), "a: \u{e9}");
        assert_eq!(decoded(b"\xFE\xFF\x00a\xd8\x3d\xde\x00"), "a\u{1f600}");
        assert_eq!(decoded(b"\xFF\xFE\x3d\xd8a\x00\x00"), "\u{fffd}a\u{fffd}");
        assert_eq!(decoded(b""), "");
        assert_eq!(decoded(b"ab"), "ab");
    }

    #[test]
    fn streamed_decoding_keeps_sequences_split_across_reads() {
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.split_first() {
                    Some((b, rest)) if !buf.is_empty() => {
                        buf[0] = *b;
                        self.0 = rest;
                        Ok(1)
                    }
                    _ => Ok(0),
                }
            }
        }
        for bytes in [
            "h\u{e9}llo \u{1f600} \u{4e16}".as_bytes(),
            b"\xFF\xFEh\x00\x3d\xd8\x00\xde",
            b"a\xe2\x82\xffb",
        ] {
            let mut streamed = String::new();
            Utf8Reader::new(OneByte(bytes))
                .read_to_string(&mut streamed)
                .unwrap();
            assert_eq!(streamed, decode(bytes));
        }
    }

    fn chunks(text: &str) -> Vec<(usize, String)> {
        let mut lines = Lines::new(Box::new(text.as_bytes()), 1);
        let mut out = Vec::new();
        while let Some(c) = lines.next_chunk().map_err(|(l, _)| l).unwrap() {
            out.push((c.line, c.text));
        }
        out
    }

    #[test]
    fn documents_are_cut_at_lines_that_start_with_three_dashes() {
        assert_eq!(
            chunks("a: 1\r\n---\r\nb: 2\n--- # c\n---\nc: 3"),
            vec![
                (1, "a: 1\n".to_string()),
                (3, "b: 2\n".to_string()),
                (5, "---\nc: 3\n".to_string()),
            ]
        );
        // kubectl keeps a separator that opens a document, and ends the document at the next.
        assert_eq!(chunks("---\n---\n"), vec![(1, "---\n".to_string())]);
        assert_eq!(chunks(""), vec![]);
        // kubectl refuses a bad separator before it hands on the document above it.
        let mut lines = Lines::new(Box::new("a: 1\n--- {b: 2}\n".as_bytes()), 1);
        assert!(matches!(lines.next_chunk(), Err((2, ErrorKind::Separator))));
    }
}
