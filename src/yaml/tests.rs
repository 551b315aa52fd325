//! The reader and writer as a whole: what kubectl reads from each class of YAML (values checked
//! against `tests/data/yaml/EXPECTED.md`), its refusals, the limits, and read(write(v)) == v.

use std::io::Read;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn read(text: &str) -> Vec<Value> {
    from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn one(text: &str) -> Value {
    let mut docs = read(text);
    assert_eq!(docs.len(), 1, "{text:?}");
    docs.remove(0)
}

fn error(text: &str) -> String {
    match from_str(text) {
        Ok(v) => panic!("{text:?} read as {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn yaml_1_1_scalars() {
    assert_eq!(
        one("b: [y, Yes, on, ON, n, NO, off, true, False, tRUE, oN, t]\n"),
        json!({"b": [true, true, true, true, false, false, false, true, false, "tRUE", "oN", "t"]})
    );
    assert_eq!(
        one(
            "num: [0644, 0o644, 0x1F, 0b101, 1_000, 1e3, 1.5e+3, +12, .5, 1., 08, 09.5, 12:30:45, 1e400, 1e-400, -0.0]\n"
        ),
        json!({"num": [420, 420, 31, 5, 1000, 1000, 1500, 12, 0.5, 1, 8, 9.5, "12:30:45", "1e400", 0, 0]})
    );
    assert_eq!(
        one(
            "big: [9223372036854775807, 9223372036854775808, 18446744073709551615, 0777777777777777777777777]\n"
        ),
        json!({"big": [i64::MAX, 9.223372036854775808e18, 1.8446744073709552e19, 7.777777777777778e23]})
    );
    assert_eq!(
        one(
            "v: [~, null, Null, NULL, nULL, '', \"on\", '0644', 2001-12-14t21:59:43.10-05:00]\nw:\n"
        ),
        json!({"v": [null, null, null, null, "nULL", "", "on", "0644", "2001-12-14t21:59:43.10-05:00"], "w": null})
    );
    assert_eq!(
        one("words: [inf, NaN, .infinity]\n.inf: key\n-.inf: neg\n"),
        json!({"words": ["inf", "NaN", ".infinity"], ".inf": "key", "-.inf": "neg"})
    );
}

#[test]
fn keys_and_merges() {
    assert_eq!(
        one("1: a\n0x10: b\n0644: c\n2.5: d\n16777217.0: e\n1e20: f\non: g\nyes: h\n\"<<\": i\n"),
        json!({"1": "a", "16": "b", "420": "c", "2.5": "d", "1.6777216e+07": "e", "1e+20": "f", "true": "h", "<<": "i"})
    );
    let merged = one(
        "base: &b {tier: backend, team: own}\nother: &o {tier: frontend, owner: alice}\n\
         list: {<<: [*o, *b]}\nreversed: {<<: [*b, *o], team: last}\n\
         order: {tier: before, <<: *b, team: after}\ntwo: {<<: *b, <<: *o}\n",
    );
    assert_eq!(
        merged["list"],
        json!({"tier": "frontend", "owner": "alice", "team": "own"})
    );
    assert_eq!(
        merged["reversed"],
        json!({"tier": "backend", "team": "last", "owner": "alice"})
    );
    assert_eq!(merged["order"], json!({"tier": "backend", "team": "after"}));
    assert_eq!(
        merged["two"],
        json!({"tier": "frontend", "team": "own", "owner": "alice"})
    );
    assert_eq!(
        one("a: 1\na: 2\nb: {c: 1, c: 3}\n"),
        json!({"a": 2, "b": {"c": 3}})
    );
    assert_eq!(
        one("? plain\n: 1\n? |\n  block\n: 2\n"),
        json!({"plain": 1, "block\n": 2})
    );
}

#[test]
fn tags_and_binary() {
    assert_eq!(
        one(
            "a: !!str 123\nb: !!int \"0644\"\nc: !!float \"1e3\"\nd: !!bool \"off\"\ne: !!null \"\"\nf: !<tag:yaml.org,2002:str> 456\n"
        ),
        json!({"a": "123", "b": 420, "c": 1000, "d": false, "e": null, "f": "456"})
    );
    assert_eq!(
        one("a: !Ref x\nb: !Replicas 2\nc: !Empty\nd: !GetAtt [x, z]\ne: ! yes\n"),
        json!({"a": "x", "b": "2", "c": "", "d": ["x", "z"], "e": "yes"})
    );
    assert_eq!(
        one("a: !!binary aGVsbG8=\nb: !!binary |\n  aGVsbG8g\n  d29ybGQ=\nc: !!binary /w==\n"),
        json!({"a": "hello", "b": "hello world", "c": "\u{fffd}"})
    );
}

#[test]
fn scalar_styles_and_documents() {
    assert_eq!(
        one(
            "l: |\n  a\n   b\nk: |+\n  x\n\ns: >-\n  one\n  two\n\n  three\nq: \"a\\tb \\x41 \\u00e9 \\N\\_\\L\\P \\' \\\"\"\n"
        ),
        json!({"l": "a\n b\n", "k": "x\n\n", "s": "one two\nthree", "q": "a\tb A \u{e9} \u{85}\u{a0}\u{2028}\u{2029} ' \""})
    );
    assert_eq!(
        read("a: 1\r\nb: |\r\n  x\r\n---\r\nc: 2\r\n"),
        vec![json!({"a": 1, "b": "x\n"}), json!({"c": 2})]
    );
    assert_eq!(
        read("a: 1\n...\nb: 2\n---\n# only a comment\n---\n~\n---\nc: 3"),
        vec![json!({"a": 1}), json!({"c": 3})]
    );
    assert_eq!(read("\u{feff}a: 1\n"), vec![json!({"a": 1})]);
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("a: h\u{e9}\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let docs: Vec<Value> = Documents::new(&utf16[..])
        .map(|d| d.unwrap().value)
        .collect();
    assert_eq!(docs, vec![json!({"a": "h\u{e9}"})]);
    assert_eq!(
        read("x: &a {k: 1}\nz: *a\n---\nz: &a 2\n"),
        vec![json!({"x": {"k": 1}, "z": {"k": 1}}), json!({"z": 2})]
    );
}

#[test]
fn json_documents() {
    assert_eq!(
        read(
            "{\"a\": 1e1, \"b\": 30.0, \"c\": -0, \"d\": 12345678901234567890, \"e\": \"\\/\"}{\"a\": 1}\n{\"a\": 2}"
        ),
        vec![
            json!({"a": 10, "b": 30, "c": 0, "d": 1.2345678901234567e19, "e": "/"}),
            json!({"a": 1}),
            json!({"a": 2})
        ]
    );
    // One JSON value, then YAML: kubectl switches for good.
    assert_eq!(
        read("{\"a\": 1}\n---\nb: yes\n"),
        vec![json!({"a": 1}), json!({"b": true})]
    );
    // Not JSON after all: the whole stream is YAML.
    assert_eq!(
        read("{a: yes, b: 0644,}\n"),
        vec![json!({"a": true, "b": 420})]
    );
    // After two JSON values there is no way back.
    assert_eq!(
        error("{}\n{}\n{\"a\": }\n"),
        "document 3, line 3, column 7: expected value (the stream started with `{`, so kubectl read it as JSON)"
    );
}

#[test]
fn refusals_are_one_line_and_name_the_document_and_position() {
    let cases = [
        (
            "a: *nowhere\n",
            "document 1, line 1, column 4: unknown anchor 'nowhere' referenced",
        ),
        (
            "a: &x 1\n---\nb: *x\n",
            "document 2, line 3, column 4: unknown anchor 'x' referenced",
        ),
        (
            "a: &x [1, *x]\n",
            "document 1, line 1, column 11: anchor 'x' value contains itself",
        ),
        (
            "a: &x.y 1\n",
            "document 1, line 1, column 4: anchor and alias names may only hold letters, digits, `_` and `-` (YAML 1.1, as kubectl reads it)",
        ),
        (
            "a: !!binary \"not base64!\"\n",
            "document 1, line 1, column 13: !!binary value contains invalid base64 data",
        ),
        (
            "a: !!int \"abc\"\n",
            "document 1, line 1, column 10: cannot decode !!str as a !!int",
        ),
        (
            "a: .inf\n",
            "document 1, line 1, column 4: .inf has no JSON form (quote it if it is text)",
        ),
        (
            "a: [-.Inf]\n",
            "document 1, line 1, column 5: -.inf has no JSON form (quote it if it is text)",
        ),
        (
            "a: .NaN\n",
            "document 1, line 1, column 4: .nan has no JSON form (quote it if it is text)",
        ),
        (
            "~: v\n",
            "document 1, line 1, column 1: a null key has no JSON form",
        ),
        (
            "18446744073709551615: v\n",
            "document 1, line 1, column 1: an integer key beyond int64 has no JSON form in kubectl (quote it)",
        ),
        (
            "? [a, b]\n: v\n",
            "document 1, line 1, column 3: invalid map key: a sequence cannot be a key",
        ),
        (
            "a: &m {x: 1}\n*m : 2\n",
            "document 1, line 2, column 1: invalid map key: a collection cannot be a key",
        ),
        (
            "a: {<<: 1}\n",
            "document 1, line 1, column 9: map merge requires map or sequence of maps as the value",
        ),
        (
            "s: &s [{a: 1}]\nm: {<<: *s}\n",
            "document 1, line 2, column 9: map merge requires map or sequence of maps as the value",
        ),
        (
            "a: \"x\\/y\"\n",
            "document 1, line 1, column 6: found unknown escape character `\\/` (YAML 1.1, as kubectl reads it)",
        ),
        (
            "a: \"\\ud83d\\ude00\"\n",
            "document 1, line 1, column 5: found invalid Unicode character escape code (YAML 1.1 has no surrogate escapes)",
        ),
        (
            "a: \"\\q\"\n",
            "document 1, line 1, column 5: found unknown escape character `\\q` (YAML 1.1, as kubectl reads it)",
        ),
        (
            "a: 1\nb:\n\tc: 2\n",
            "document 1, line 3, column 2: tabs disallowed within this context (block indentation)",
        ),
        (
            "a: 1\n--- {b: 2}\n",
            "document 1, line 2, column 1: only spaces and a `#` comment may follow a `---` document separator",
        ),
        (
            "%YAML 1.1\n---\na: 1\n",
            "document 1, line 2, column 1: did not find expected <document start>",
        ),
        (
            "a: \"bell\x07\"\n",
            "document 1, line 1, column 9: control character U+0007 is not allowed in YAML; write it as an escape in a double-quoted string",
        ),
        (
            "a: x\u{2028}y\n",
            "document 1, line 1, column 5: a raw line separator (U+2028) is a line break in YAML 1.1 (kubectl) but not in YAML 1.2; write it as an escape in a double-quoted string",
        ),
        (
            "a: b: c\n",
            "document 1, line 1, column 5: mapping values are not allowed in this context",
        ),
    ];
    for (text, want) in cases {
        let got = error(text);
        assert_eq!(got, want, "{text:?}");
        assert!(!got.contains('\n'));
    }
    // A quoted raw LS reads the same in YAML 1.1 and 1.2.
    assert_eq!(one("a: \"x\u{2028}y\"\n"), json!({"a": "x\u{2028}y"}));
}

#[test]
fn unrendered_helm_templates_are_named() {
    assert_eq!(
        error("apiVersion: v1\nkind: Pod\nspec:\n  replicas: {{ .Values.replicas }}\n"),
        "document 1, line 4, column 14: invalid map key: a mapping cannot be a key (this looks like an unrendered Helm template, `{{` on line 4: render it with `helm template` first)"
    );
    let e = error("a: 1\n---\nkind: Pod\n{{- if .Values.x }}\nb: 2\n{{- end }}\n");
    assert!(e.starts_with("document 2, line 4, column 3: "), "{e}");
    assert!(e.ends_with("(this looks like an unrendered Helm template, `{{` on line 4: render it with `helm template` first)"), "{e}");
    // A template inside a string is content, and an unrelated error names no template.
    assert_eq!(one("a: \"{{ x }}\"\n"), json!({"a": "{{ x }}"}));
    assert_eq!(
        error("a: \"{{ x }}\"\nb: .nan\n"),
        "document 1, line 2, column 4: .nan has no JSON form (quote it if it is text)"
    );
}

fn quick(what: &str, f: impl FnOnce() -> String, want: &str) {
    let start = Instant::now();
    let got = f();
    let took = start.elapsed();
    assert!(got.contains(want), "{what}: {got}");
    assert!(took < Duration::from_secs(1), "{what} took {took:?}");
}

#[test]
fn nesting_is_limited_while_reading() {
    let nested = |n: usize| format!("a: {}x{}\n", "[".repeat(n - 1), "]".repeat(n - 1));
    assert!(from_str(&nested(MAX_DEPTH)).is_ok());
    assert_eq!(
        error(&nested(MAX_DEPTH + 1)),
        format!(
            "document 1, line 1, column {}: nesting is deeper than keywire's limit of 128 levels",
            MAX_DEPTH + 3
        )
    );
    quick(
        "100,000 [",
        || error(&format!("a: {}", "[".repeat(100_000))),
        "nesting is deeper than keywire's limit of 128 levels",
    );
    quick(
        "100,000 {",
        || error(&"{a: ".repeat(100_000)),
        "deeper than keywire's limit of 128 levels",
    );
    let block: String = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    quick(
        "200 block levels",
        || error(&block),
        "deeper than keywire's limit of 128 levels",
    );
    // Deep through an alias: the anchored node's height counts where it is used.
    let deep = format!(
        "a: &d {}x{}\nb: {}*d{}\n",
        "[".repeat(100),
        "]".repeat(100),
        "[".repeat(30),
        "]".repeat(30)
    );
    assert!(error(&deep).ends_with("nesting is deeper than keywire's limit of 128 levels"));
}

#[test]
fn alias_expansion_is_limited_while_reading() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    quick(
        "billion laughs",
        || error(&bomb),
        "aliases expand to more than",
    );
    // Ordinary reuse is fine.
    let reuse: String = std::iter::once("base: &b {cpu: 1, memory: 2}\n".to_string())
        .chain((0..500).map(|i| format!("c{i}: *b\n")))
        .collect();
    assert_eq!(read(&reuse)[0]["c499"], json!({"cpu": 1, "memory": 2}));
}

#[test]
fn documents_are_read_one_at_a_time() {
    /// Counts what the reader has pulled from the input.
    struct Counted<'a> {
        data: &'a [u8],
        read: std::rc::Rc<std::cell::Cell<usize>>,
    }
    impl Read for Counted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.data.read(buf)?;
            self.read.set(self.read.get() + n);
            Ok(n)
        }
    }
    let big = format!("a: 1\n---\nb: \"{}\"\n", "x".repeat(1 << 20));
    let read = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut docs = Documents::new(Counted {
        data: big.as_bytes(),
        read: read.clone(),
    });
    let first = docs.next().unwrap().unwrap();
    assert_eq!(
        (first.number, first.line, first.value),
        (1, Some(1), json!({"a": 1}))
    );
    assert!(
        read.get() < 100_000,
        "read {} bytes for the first document",
        read.get()
    );
    let second = docs.next().unwrap().unwrap();
    assert_eq!((second.number, second.line), (2, Some(3)));
    assert!(docs.next().is_none());
}

#[test]
fn written_yaml_reads_back_as_the_same_json() {
    let v = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "x", "annotations": {"a": "on", "b": "0644", "c": "1:30", "d": "", "e": "- x", "f": "a: b"}},
        "data": {
            "script": "#!/bin/sh\nset -eu\necho \"hi\" # comment\n",
            "keep": "x\n\n\n",
            "cr": "a\r\nb",
            "lead": "  indented\nline",
            "ctl": "\u{1}\u{7f}\u{85}\u{feff}",
            "n": "n", "y": "Y", "<<": "merge",
        },
        "spec": {"ints": [0, -1, i64::MAX, i64::MIN], "floats": [0.5, 1e21, 1e-7, 1.5e300, 1.8446744073709552e19], "empty": [{}, []]},
    });
    assert_eq!(read(&to_string(&v)), vec![v]);
}

/// Strings that each mean something else to some YAML reader, or need escapes.
const TRICKY: &[&str] = &[
    "",
    " ",
    "y",
    "n",
    "Yes",
    "NO",
    "on",
    "Off",
    "true",
    "null",
    "~",
    "1_000",
    "0644",
    "0x1f",
    "1e3",
    ".inf",
    "-.Inf",
    ".nan",
    "1:30",
    "12:30:45",
    "2001-12-14",
    "<<",
    "=",
    "-",
    "- x",
    "? x",
    ": x",
    "a: b",
    "a #b",
    "#x",
    "&a",
    "*a",
    "!tag",
    "|",
    ">",
    "'",
    "\"",
    "%x",
    "@x",
    "`x",
    "[a]",
    "{a: 1}",
    "---",
    "...",
    "--- x",
    "x\n",
    "\n",
    "a\nb",
    " a\nb",
    "a \nb",
    "\t",
    "\r\n",
    "\u{0}",
    "\u{85}",
    "\u{2028}",
    "\u{feff}",
    "\u{a0}",
    "\\",
    "\\n",
    "{{ .Values.x }}",
    "+1",
    "-0",
    "0.",
    ".5",
    "0b1",
    "0o7",
    "08",
    "1.2.3",
    "1e",
    "é",
    "😀",
    "\u{7f}",
    "\u{9f}",
];

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(TRICKY).prop_map(str::to_string),
        any::<String>(),
        prop::collection::vec(prop::sample::select(TRICKY), 1..4).prop_map(|parts| parts.concat()),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(number::value),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((string(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn read_of_write_is_identity(entries in prop::collection::vec((string(), value()), 1..6)) {
        let v = Value::Object(entries.into_iter().collect());
        let text = to_string(&v);
        let back = from_str(&text);
        prop_assert_eq!(back.as_ref().ok(), Some(&vec![v]), "{}", text);
    }

    #[test]
    fn reading_never_panics(parts in prop::collection::vec(prop::sample::select(&[
        "a", ": ", "- ", "\n", "  ", "[", "]", "{", "}", ",", "&x ", "*x", "<<: ", "!!binary ",
        "!!int ", "\"", "'", "\\", "|", ">", "#", "---\n", "...\n", "? ", "~", "1e3", "0644",
        "\t", "\r\n", "%YAML 1.1\n", "\u{feff}", "\u{2028}", "{{ }}", ".inf",
    ][..]), 0..40)) {
        let _ = from_str(&parts.concat());
    }
}
