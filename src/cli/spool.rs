//! The objects `keywire mutate` keeps between its two passes. The first pass reads the YAML
//! once and writes each object here, compactly; the second reads them back in order. Memory
//! holds up to [`MEMORY_BUDGET`] bytes of it; past that the spool moves to an unnamed
//! temporary file (or stays in memory if none can be made), so a large input costs disk, not
//! memory.
//!
//! An object is a `u32` length, the index of its input file and its value: a tag byte, then
//! LEB128 lengths, UTF-8 strings and little-endian numbers. Numbers keep their kind (`u64`,
//! `i64` or `f64`) and their exact bits, so an object read back equals the one written.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use serde_json::{Map, Number, Value};

/// Bytes of spooled objects held in memory before they move to a temporary file: the 10,000
/// Deployments of `benches/run-mutate-scale.sh` take 7.4 MiB.
pub const MEMORY_BUDGET: usize = 16 << 20;

/// Nesting beyond anything the readers accept (their limit is 128): a deeper value read back
/// means the spool is damaged.
const MAX_DEPTH: usize = 512;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const UNSIGNED: u8 = 3;
const SIGNED: u8 = 4;
const FLOAT: u8 = 5;
const STRING: u8 = 6;
const ARRAY: u8 = 7;
const OBJECT: u8 = 8;

pub struct Spool {
    memory: Vec<u8>,
    file: Option<BufWriter<File>>,
    budget: usize,
    record: Vec<u8>,
    len: usize,
}

impl Default for Spool {
    fn default() -> Self {
        Spool::with_budget(MEMORY_BUDGET)
    }
}

impl Spool {
    pub fn with_budget(budget: usize) -> Self {
        Spool {
            memory: Vec::new(),
            file: None,
            budget,
            record: Vec::new(),
            len: 0,
        }
    }

    /// Objects written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, source: u32, value: &Value) -> io::Result<()> {
        self.record.clear();
        self.record.extend_from_slice(&source.to_le_bytes());
        encode(&mut self.record, value);
        let len = u32::try_from(self.record.len())
            .map_err(|_| io::Error::other("an object of 4 GiB or more"))?;
        self.len += 1;
        // Moved before the memory would pass the budget, so it never holds more.
        if self.file.is_none()
            && self.memory.len() + 4 + self.record.len() > self.budget
            && let Ok(file) = tempfile::tempfile()
        {
            let mut file = BufWriter::with_capacity(1 << 16, file);
            file.write_all(&self.memory)?;
            self.memory = Vec::new();
            self.file = Some(file);
        }
        match &mut self.file {
            Some(file) => {
                file.write_all(&len.to_le_bytes())?;
                file.write_all(&self.record)
            }
            None => {
                self.memory.extend_from_slice(&len.to_le_bytes());
                self.memory.extend_from_slice(&self.record);
                Ok(())
            }
        }
    }

    /// The objects in the order written, each with its input file's index.
    pub fn into_reader(self) -> io::Result<Reader> {
        let source: Box<dyn Read + Send> = match self.file {
            Some(file) => {
                let mut file = file.into_inner().map_err(|e| e.into_error())?;
                file.seek(SeekFrom::Start(0))?;
                Box::new(BufReader::with_capacity(1 << 16, file))
            }
            None => Box::new(io::Cursor::new(self.memory)),
        };
        Ok(Reader {
            source,
            record: Vec::new(),
        })
    }
}

pub struct Reader {
    source: Box<dyn Read + Send>,
    record: Vec<u8>,
}

impl Reader {
    /// The next object and its input file's index; `None` at the end.
    pub fn next_object(&mut self) -> io::Result<Option<(u32, Value)>> {
        let mut len = [0u8; 4];
        match self.source.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        self.record.resize(len, 0);
        self.source.read_exact(&mut self.record)?;
        let mut bytes = Bytes(&self.record);
        let source = u32::from_le_bytes(bytes.array()?);
        let value = decode(&mut bytes, 0)?;
        if !bytes.0.is_empty() {
            return Err(damaged());
        }
        Ok(Some((source, value)))
    }
}

impl Iterator for Reader {
    type Item = io::Result<(u32, Value)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_object().transpose()
    }
}

fn encode(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(UNSIGNED);
                out.extend_from_slice(&u.to_le_bytes());
            } else if let Some(i) = n.as_i64() {
                out.push(SIGNED);
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                out.push(FLOAT);
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(STRING);
            encode_str(out, s);
        }
        Value::Array(items) => {
            out.push(ARRAY);
            encode_len(out, items.len());
            for item in items {
                encode(out, item);
            }
        }
        Value::Object(map) => {
            out.push(OBJECT);
            encode_len(out, map.len());
            for (k, v) in map {
                encode_str(out, k);
                encode(out, v);
            }
        }
    }
}

fn encode_str(out: &mut Vec<u8>, s: &str) {
    encode_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn encode_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn damaged() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "the spooled objects are damaged",
    )
}

struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(damaged());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| damaged())
    }

    fn len(&mut self) -> io::Result<usize> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let [b] = self.array::<1>()?;
            n |= usize::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                // Every element takes at least a byte, so a longer length is damage.
                return if n <= self.0.len() {
                    Ok(n)
                } else {
                    Err(damaged())
                };
            }
        }
        Err(damaged())
    }

    fn string(&mut self) -> io::Result<String> {
        let n = self.len()?;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| damaged())
    }
}

fn decode(bytes: &mut Bytes<'_>, depth: usize) -> io::Result<Value> {
    if depth > MAX_DEPTH {
        return Err(damaged());
    }
    let [tag] = bytes.array::<1>()?;
    Ok(match tag {
        NULL => Value::Null,
        FALSE => Value::Bool(false),
        TRUE => Value::Bool(true),
        UNSIGNED => Value::from(u64::from_le_bytes(bytes.array()?)),
        SIGNED => Value::from(i64::from_le_bytes(bytes.array()?)),
        FLOAT => {
            let f = f64::from_bits(u64::from_le_bytes(bytes.array()?));
            Value::Number(Number::from_f64(f).ok_or_else(damaged)?)
        }
        STRING => Value::String(bytes.string()?),
        ARRAY => {
            let n = bytes.len()?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(decode(bytes, depth + 1)?);
            }
            Value::Array(items)
        }
        OBJECT => {
            let n = bytes.len()?;
            let mut map = Map::with_capacity(n);
            for _ in 0..n {
                let key = bytes.string()?;
                map.insert(key, decode(bytes, depth + 1)?);
            }
            Value::Object(map)
        }
        _ => return Err(damaged()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects() -> Vec<Value> {
        vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web",
                "labels": {"z": "1", "a": "2"}}, "spec": {"replicas": 2, "template": {"spec": {
                "containers": [{"name": "app", "env": [{"name": "MODE", "value": "on"}]}]}}}}),
            json!({"n": [0, -1, i64::MIN, u64::MAX, 0.1, -0.0, 1.8446744073709552e19, 5e-324,
                f64::MAX], "s": ["", "caf\u{e9} \u{1f600}", "x".repeat(300)], "b": [true, false, null],
                "e": {}, "a": [[]], "deep": [[[[{"k": [{"v": null}]}]]]]}),
            json!(null),
            json!("a string alone"),
        ]
    }

    fn read_back(spool: Spool) -> Vec<(u32, Value)> {
        spool
            .into_reader()
            .unwrap()
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    }

    /// Every kind of value comes back equal, with keys in their order and numbers of the same
    /// kind and bits, from memory and from the temporary file alike.
    #[test]
    fn objects_come_back_as_written_in_memory_and_on_disk() {
        for budget in [MEMORY_BUDGET, 0, 300, 2000] {
            let mut spool = Spool::with_budget(budget);
            let mut want = Vec::new();
            for round in 0..3u32 {
                for o in objects() {
                    spool.push(round, &o).unwrap();
                    assert!(spool.memory.len() <= budget, "budget {budget}");
                    want.push((round, o));
                }
            }
            assert_eq!(spool.len(), want.len());
            assert_eq!(
                spool.file.is_some(),
                budget < MEMORY_BUDGET,
                "budget {budget}"
            );
            let got = read_back(spool);
            assert_eq!(got, want, "budget {budget}");
            for ((_, g), (_, w)) in got.iter().zip(&want) {
                assert_eq!(
                    serde_json::to_string(g).unwrap(),
                    serde_json::to_string(w).unwrap()
                );
                if let (Some(g), Some(w)) = (g.get("n"), w.get("n")) {
                    for (g, w) in g.as_array().unwrap().iter().zip(w.as_array().unwrap()) {
                        assert_eq!(
                            (g.is_u64(), g.is_i64(), g.is_f64()),
                            (w.is_u64(), w.is_i64(), w.is_f64())
                        );
                        assert_eq!(g.as_f64().map(f64::to_bits), w.as_f64().map(f64::to_bits));
                    }
                }
            }
        }
        assert!(read_back(Spool::default()).is_empty());
    }

    /// Damage is an error, never a panic or a huge allocation.
    #[test]
    fn damaged_records_are_errors() {
        let mut spool = Spool::default();
        spool.push(0, &objects()[1]).unwrap();
        let whole = spool.memory.clone();
        for cut in 0..whole.len() {
            let mut bytes = whole.clone();
            bytes.truncate(cut);
            if cut >= 4 {
                // Keep the length honest, so the value itself is short.
                let len = (cut - 4) as u32;
                bytes[..4].copy_from_slice(&len.to_le_bytes());
            }
            let mut reader = Reader {
                source: Box::new(io::Cursor::new(bytes)),
                record: Vec::new(),
            };
            match reader.next_object() {
                Ok(None) if cut < 4 => {}
                Err(e) if cut >= 4 || e.kind() == io::ErrorKind::UnexpectedEof => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        // An unknown tag, a length past the end, a byte after the value.
        let mut trailing = whole.clone();
        trailing.push(NULL);
        let len = (trailing.len() - 4) as u32;
        trailing[..4].copy_from_slice(&len.to_le_bytes());
        let mut tag = whole.clone();
        tag[8] = 0xFF;
        let mut length = whole.clone();
        length[9] = 0xFF;
        for (case, bytes) in [("tag", tag), ("length", length), ("trailing", trailing)] {
            let mut reader = Reader {
                source: Box::new(io::Cursor::new(bytes)),
                record: Vec::new(),
            };
            assert!(reader.next_object().is_err(), "{case}");
        }
    }
}
