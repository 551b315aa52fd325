//! Scalars as go-yaml v2 resolves them into Go values (`resolve.go`, `decode.go`), and how
//! `sigs.k8s.io/yaml` turns those values into JSON values and JSON keys.

use base64::Engine;
use serde_json::Value;

use super::ErrorKind;
use super::number;

const PREFIX: &str = "tag:yaml.org,2002:";
pub(crate) const STR: &str = "tag:yaml.org,2002:str";
pub(crate) const MERGE: &str = "tag:yaml.org,2002:merge";
const BINARY: &str = "tag:yaml.org,2002:binary";
const BOOL: &str = "tag:yaml.org,2002:bool";
const INT: &str = "tag:yaml.org,2002:int";
const FLOAT: &str = "tag:yaml.org,2002:float";
const NULL: &str = "tag:yaml.org,2002:null";
const TIMESTAMP: &str = "tag:yaml.org,2002:timestamp";

/// A scalar as go-yaml v2 decodes it into `interface{}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer beyond int64 that fits uint64.
    Uint(u64),
    Float(f64),
    Str(String),
}

/// Resolves a scalar: `tag` is the full tag (`tag:yaml.org,2002:str`, `!Ref`, `!`), `plain`
/// whether it was written without quotes (only untagged plain scalars are resolved implicitly).
pub(crate) fn resolve(tag: Option<&str>, value: &str, plain: bool) -> Result<Scalar, ErrorKind> {
    let tag = match tag {
        None if !plain => return Ok(Scalar::Str(value.to_string())),
        None => "",
        Some(t) => t,
    };
    if tag == BINARY {
        let cleaned: String = value.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        let bytes = BASE64.decode(cleaned).map_err(|_| ErrorKind::Base64)?;
        return Ok(Scalar::Str(super::input::lossy(&bytes).into_owned()));
    }
    if !matches!(tag, "" | STR | BOOL | INT | FLOAT | NULL | TIMESTAMP) {
        // Custom tags (`!Ref`, `!`), `!!map` on a scalar, `!!merge`: the text as it is.
        return Ok(Scalar::Str(value.to_string()));
    }
    let (found, scalar) = implicit(tag, value);
    if tag.is_empty() || tag == found || tag == STR {
        return Ok(scalar);
    }
    match (tag, scalar) {
        (FLOAT, Scalar::Int(i)) => Ok(Scalar::Float(i as f64)),
        _ => Err(ErrorKind::TagMismatch {
            found: short(found),
            tag: short(tag),
        }),
    }
}

fn short(tag: &str) -> String {
    tag.strip_prefix(PREFIX).unwrap_or(tag).to_string()
}

/// go-yaml's `resolve` for a resolvable tag: the first byte picks what the text may be.
fn implicit(tag: &str, value: &str) -> (&'static str, Scalar) {
    let text = || Scalar::Str(value.to_string());
    if tag == STR {
        return (STR, text());
    }
    let hint = match value.as_bytes().first() {
        None => b'N',
        Some(b'+' | b'-') => b'S',
        Some(b'0'..=b'9') => b'D',
        Some(b'y' | b'Y' | b'n' | b'N' | b't' | b'T' | b'f' | b'F' | b'o' | b'O' | b'~') => b'M',
        Some(b'.') => b'.',
        Some(_) => return (STR, text()),
    };
    if let Some(known) = keyword(value) {
        return known;
    }
    match hint {
        b'.' => match parse_go_float(value) {
            Some(f) => (FLOAT, Scalar::Float(f)),
            None => (STR, text()),
        },
        b'D' | b'S' => {
            if (tag.is_empty() || tag == TIMESTAMP) && is_timestamp(value) {
                // Decoded into interface{}, a timestamp stays the string as written.
                return (TIMESTAMP, text());
            }
            let plain: String = value.chars().filter(|c| *c != '_').collect();
            if let Some(n) = parse_go_int(&plain) {
                return (INT, n);
            }
            if is_yaml_style_float(&plain)
                && let Ok(f) = plain.parse::<f64>()
                && f.is_finite()
            {
                return (FLOAT, Scalar::Float(f));
            }
            // `0b-101`: go-yaml retries the digits after `0b` in base 2, sign and all.
            if let Some(digits) = plain.strip_prefix("0b")
                && let Some(n) = parse_in_base(digits, 2, true)
            {
                return (INT, n);
            }
            (STR, text())
        }
        _ => (STR, text()),
    }
}

/// The words go-yaml v2 resolves by table: YAML 1.1 booleans, nulls, `.inf`, `.nan` (its `<<`
/// entry is never reached: `<` gives no hint, so `<<` resolves to a string).
fn keyword(value: &str) -> Option<(&'static str, Scalar)> {
    Some(match value {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            (BOOL, Scalar::Bool(true))
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            (BOOL, Scalar::Bool(false))
        }
        "" | "~" | "null" | "Null" | "NULL" => (NULL, Scalar::Null),
        ".nan" | ".NaN" | ".NAN" => (FLOAT, Scalar::Float(f64::NAN)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            (FLOAT, Scalar::Float(f64::INFINITY))
        }
        "-.inf" | "-.Inf" | "-.INF" => (FLOAT, Scalar::Float(f64::NEG_INFINITY)),
        _ => return None,
    })
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint(s, 0, 64)`: sign, `0x`/`0o`/`0b` or a
/// leading `0` (octal) prefix.
fn parse_go_int(s: &str) -> Option<Scalar> {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = unsigned.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d, 2)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    let magnitude = parse_digits(digits, radix)?;
    let signed = if negative {
        -(magnitude as i128)
    } else {
        magnitude as i128
    };
    if let Ok(i) = i64::try_from(signed) {
        Some(Scalar::Int(i))
    } else if s.starts_with(['+', '-']) {
        None // ParseUint takes no sign
    } else {
        u64::try_from(magnitude).ok().map(Scalar::Uint)
    }
}

/// `strconv.ParseInt(digits, base, 64)` with an optional sign, int64 only.
fn parse_in_base(s: &str, radix: u32, signed: bool) -> Option<Scalar> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') if signed => (true, &s[1..]),
        Some(b'+') if signed => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_digits(digits, radix)? as i128;
    i64::try_from(if negative { -magnitude } else { magnitude })
        .ok()
        .map(Scalar::Int)
}

fn parse_digits(digits: &str, radix: u32) -> Option<u128> {
    if digits.is_empty() {
        return None;
    }
    let mut n: u128 = 0;
    for c in digits.chars() {
        n = n
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(c.to_digit(radix)?))?;
        if n > u128::from(u64::MAX) {
            return None;
        }
    }
    Some(n)
}

/// go-yaml's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
pub(crate) fn is_yaml_style_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for text that starts with `.`: decimal digits, an
/// exponent, and `_` between digits.
fn parse_go_float(s: &str) -> Option<f64> {
    if s.contains('_') && !underscores_ok(s) {
        return None;
    }
    let plain: String = s.chars().filter(|c| *c != '_').collect();
    if !is_yaml_style_float(&plain) {
        return None;
    }
    plain.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Go's `underscoreOK`: every `_` sits between two digits.
fn underscores_ok(s: &str) -> bool {
    let mut previous = b'^';
    for &c in s.trim_start_matches(['+', '-']).as_bytes() {
        match c {
            b'0'..=b'9' => previous = b'0',
            b'_' if previous != b'0' => return false,
            b'_' => previous = b'_',
            _ if previous == b'_' => return false,
            _ => previous = b'!',
        }
    }
    previous != b'_'
}

/// go-yaml's `parseTimestamp` (Go `time.Parse` with its four layouts): a date `YYYY-M-D`,
/// optionally followed by `T`/`t`, a time and a zone (`Z` or `+hh:mm`), or by a space and a
/// time without one. Seconds may carry a fraction.
pub(crate) fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let Some(year) = go_number(b, &mut i, 4, 4) else {
        return false;
    };
    let mut part = |sep: u8, max: u32| -> Option<u32> {
        (b.get(i) == Some(&sep)).then_some(())?;
        i += 1;
        go_number(b, &mut i, 1, 2).filter(|v| *v <= max)
    };
    let (Some(month), Some(day)) = (part(b'-', 12), part(b'-', 31)) else {
        return false;
    };
    if month == 0 || day == 0 || day > days_in(year, month) {
        return false;
    }
    let zone = match b.get(i) {
        None => return true,
        Some(b'T' | b't') => true,
        Some(b' ') => false,
        Some(_) => return false,
    };
    let mut i = i + 1;
    let mut time = |sep: Option<u8>, max: u32| -> Option<u32> {
        if let Some(sep) = sep {
            (b.get(i) == Some(&sep)).then_some(())?;
            i += 1;
        }
        go_number(b, &mut i, 1, 2).filter(|v| *v <= max)
    };
    if time(None, 23).is_none() || time(Some(b':'), 59).is_none() || time(Some(b':'), 59).is_none()
    {
        return false;
    }
    if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let rest = &b[i..];
    if !zone {
        return rest.is_empty();
    }
    rest == b"Z"
        || (rest.len() == 6
            && matches!(rest[0], b'+' | b'-')
            && rest[1..3].iter().all(u8::is_ascii_digit)
            && rest[3] == b':'
            && rest[4..].iter().all(u8::is_ascii_digit))
}

/// Go `time.Parse`'s `getnum`: `min` to `max` digits, as many as there are.
fn go_number(b: &[u8], i: &mut usize, min: usize, max: usize) -> Option<u32> {
    let start = *i;
    while *i < b.len() && *i - start < max && b[*i].is_ascii_digit() {
        *i += 1;
    }
    if *i - start < min {
        return None;
    }
    b[start..*i]
        .iter()
        .try_fold(0u32, |n, d| Some(n * 10 + u32::from(d - b'0')))
}

fn days_in(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        _ => 31,
    }
}

/// Go's `base64.StdEncoding`: padding required, stray bits after the last byte ignored.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

impl Scalar {
    /// The JSON value kubectl sends: floats that Go prints as an integer fitting int64 become
    /// integers (the unstructured round trip), uint64 becomes a float, `.inf`/`.nan` have no JSON.
    pub(crate) fn into_value(self) -> Result<Value, ErrorKind> {
        Ok(match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => Value::from(i),
            Scalar::Uint(u) => number::value(u as f64),
            Scalar::Float(f) if f.is_nan() => return Err(ErrorKind::NotFinite(".nan")),
            Scalar::Float(f) if f.is_infinite() => {
                return Err(ErrorKind::NotFinite(if f > 0.0 { ".inf" } else { "-.inf" }));
            }
            Scalar::Float(f) => number::value(f),
            Scalar::Str(s) => Value::String(s),
        })
    }

    /// The JSON key `sigs.k8s.io/yaml` makes of a key (`convertToJSONableObject`).
    pub(crate) fn into_key(self) -> Result<String, ErrorKind> {
        Ok(match self {
            Scalar::Null => return Err(ErrorKind::NullKey),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Uint(_) => return Err(ErrorKind::Uint64Key),
            Scalar::Float(f) => number::go_float32_g(f),
            Scalar::Str(s) => s,
        })
    }
}

/// Whether a string, written plain, would be read as anything but that string: by go-yaml v2
/// (kubectl), by the YAML 1.1 types (booleans, nulls, integers and floats in all their forms,
/// sexagesimal, timestamps, `<<`, `=`) or by YAML 1.2's core schema.
pub(crate) fn is_ambiguous(s: &str) -> bool {
    could_be_other(s) && is_ambiguous_in_full(s)
}

/// Whether a plain scalar's first character can start anything but a string: a number, a
/// boolean, a null, a timestamp, `.inf`/`.nan`, `<<` or `=`. Most strings stop here.
fn could_be_other(s: &str) -> bool {
    matches!(
        s.as_bytes().first(),
        None | Some(
            b'+' | b'-' | b'.' | b'0'
                ..=b'9'
                    | b'y'
                    | b'Y'
                    | b'n'
                    | b'N'
                    | b't'
                    | b'T'
                    | b'f'
                    | b'F'
                    | b'o'
                    | b'O'
                    | b'~'
                    | b'<'
                    | b'='
        )
    )
}

fn is_ambiguous_in_full(s: &str) -> bool {
    !matches!(implicit("", s), (STR, _))
        || s == "<<"
        || s == "="
        || is_timestamp_like(s)
        || is_yaml11_number(s)
        || is_yaml_style_float(s)
        || matches!(s, ".nan" | ".NaN" | ".NAN")
        || (s.starts_with("0o")
            && s.len() > 2
            && s[2..].bytes().all(|c| (b'0'..=b'7').contains(&c)))
}

/// `YYYY-` followed by a digit: any YAML 1.1 timestamp starts so.
fn is_timestamp_like(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[5].is_ascii_digit()
}

/// The YAML 1.1 int and float forms (yaml.org/type/int, /float), including base 60 and the
/// loose float form `[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?`.
fn is_yaml11_number(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let b = body.as_bytes();
    if b.is_empty() {
        return false;
    }
    let all = |bytes: &[u8], ok: fn(&u8) -> bool| !bytes.is_empty() && bytes.iter().all(ok);
    if let Some(rest) = body.strip_prefix("0b") {
        return all(rest.as_bytes(), |c| matches!(c, b'0' | b'1' | b'_'));
    }
    if let Some(rest) = body.strip_prefix("0x") {
        return all(rest.as_bytes(), |c| c.is_ascii_hexdigit() || *c == b'_');
    }
    if all(b, |c| c.is_ascii_digit() || *c == b'_') {
        return b[0].is_ascii_digit();
    }
    if body.contains(':') {
        // Base 60: 1:30, 190:20:30.15.
        let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
        let mut parts = whole.split(':');
        let first = parts.next().unwrap_or("");
        return all(first.as_bytes(), |c| c.is_ascii_digit() || *c == b'_')
            && first.as_bytes()[0].is_ascii_digit()
            && parts.all(|p| {
                !p.is_empty() && p.len() <= 2 && p.bytes().all(|c| c.is_ascii_digit()) && {
                    let v: u32 = p.parse().unwrap_or(99);
                    v < 60
                }
            })
            && fraction.bytes().all(|c| c.is_ascii_digit() || c == b'_');
    }
    // [0-9][0-9_]* optional, then `.`, then [0-9.]*, then an optional exponent.
    let mut i = 0;
    if b[0].is_ascii_digit() {
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            i += 1;
        }
    }
    if b.get(i) != Some(&b'.') {
        return false;
    }
    i += 1;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        if !matches!(b.get(i), Some(b'+' | b'-')) {
            return false;
        }
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        return i > start && i == b.len();
    }
    i == b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> Scalar {
        resolve(None, s, true).unwrap()
    }

    #[test]
    fn plain_scalars_resolve_as_go_yaml_v2() {
        let cases: &[(&str, Scalar)] = &[
            ("yes", Scalar::Bool(true)),
            ("Y", Scalar::Bool(true)),
            ("on", Scalar::Bool(true)),
            ("OFF", Scalar::Bool(false)),
            ("n", Scalar::Bool(false)),
            ("yES", Scalar::Str("yES".into())),
            ("t", Scalar::Str("t".into())),
            ("~", Scalar::Null),
            ("", Scalar::Null),
            ("nULL", Scalar::Str("nULL".into())),
            ("0644", Scalar::Int(420)),
            ("-0644", Scalar::Int(-420)),
            ("0o644", Scalar::Int(420)),
            ("0x1F", Scalar::Int(31)),
            ("+0x10", Scalar::Int(16)),
            ("0b101", Scalar::Int(5)),
            ("0b-101", Scalar::Int(-5)),
            ("1_000", Scalar::Int(1000)),
            ("+12", Scalar::Int(12)),
            ("08", Scalar::Float(8.0)),
            ("09.5", Scalar::Float(9.5)),
            ("1e3", Scalar::Float(1000.0)),
            ("1.", Scalar::Float(1.0)),
            (".5", Scalar::Float(0.5)),
            ("-.5", Scalar::Float(-0.5)),
            ("1e400", Scalar::Str("1e400".into())),
            ("1e-400", Scalar::Float(0.0)),
            ("12:30:45", Scalar::Str("12:30:45".into())),
            ("2001-12-14", Scalar::Str("2001-12-14".into())),
            ("18446744073709551615", Scalar::Uint(u64::MAX)),
            ("0xffffffffffffffff", Scalar::Uint(u64::MAX)),
            ("-9223372036854775808", Scalar::Int(i64::MIN)),
            (
                "-9223372036854775809",
                Scalar::Float(-9223372036854775809.0),
            ),
            (
                "-0x8000000000000001",
                Scalar::Str("-0x8000000000000001".into()),
            ),
            (
                "0777777777777777777777777",
                Scalar::Float(7.777777777777778e23),
            ),
            ("<<", Scalar::Str("<<".into())),
            ("._5", Scalar::Str("._5".into())),
            (".5_0", Scalar::Float(0.5)),
            ("inf", Scalar::Str("inf".into())),
        ];
        for (text, want) in cases {
            assert_eq!(&plain(text), want, "{text}");
        }
        assert!(matches!(plain(".inf"), Scalar::Float(f) if f == f64::INFINITY));
        assert!(matches!(plain("-.Inf"), Scalar::Float(f) if f == f64::NEG_INFINITY));
        assert!(matches!(plain(".NaN"), Scalar::Float(f) if f.is_nan()));
    }

    #[test]
    fn quoted_and_tagged_scalars() {
        let tagged = |tag: &str, s: &str| resolve(Some(tag), s, false);
        assert_eq!(resolve(None, "yes", false), Ok(Scalar::Str("yes".into())));
        assert_eq!(tagged(STR, "123"), Ok(Scalar::Str("123".into())));
        assert_eq!(tagged(INT, "0644"), Ok(Scalar::Int(420)));
        assert_eq!(tagged(FLOAT, "1e3"), Ok(Scalar::Float(1000.0)));
        assert_eq!(tagged(FLOAT, "5"), Ok(Scalar::Float(5.0)));
        assert_eq!(tagged(BOOL, "off"), Ok(Scalar::Bool(false)));
        assert_eq!(tagged(NULL, ""), Ok(Scalar::Null));
        assert_eq!(tagged("!Ref", "2"), Ok(Scalar::Str("2".into())));
        assert_eq!(tagged("!", "yes"), Ok(Scalar::Str("yes".into())));
        assert_eq!(
            tagged(TIMESTAMP, "2001-12-14"),
            Ok(Scalar::Str("2001-12-14".into()))
        );
        assert_eq!(
            tagged(INT, "abc"),
            Err(ErrorKind::TagMismatch {
                found: "str".into(),
                tag: "int".into()
            })
        );
        assert_eq!(
            tagged(FLOAT, "18446744073709551615"),
            Err(ErrorKind::TagMismatch {
                found: "int".into(),
                tag: "float".into()
            })
        );
        assert_eq!(tagged(BINARY, "aGVsbG8="), Ok(Scalar::Str("hello".into())));
        assert_eq!(
            tagged(BINARY, "aGVsbG8g\nd29ybGQ=\n"),
            Ok(Scalar::Str("hello world".into()))
        );
        assert_eq!(tagged(BINARY, "/w=="), Ok(Scalar::Str("\u{fffd}".into())));
        assert_eq!(tagged(BINARY, "aGVsbG8"), Err(ErrorKind::Base64));
        assert_eq!(tagged(BINARY, "not base64!"), Err(ErrorKind::Base64));
    }

    #[test]
    fn keys_become_strings_as_sigs_k8s_io_yaml_makes_them() {
        let key = |s: &str| plain(s).into_key();
        assert_eq!(key("1"), Ok("1".into()));
        assert_eq!(key("0x10"), Ok("16".into()));
        assert_eq!(key("0644"), Ok("420".into()));
        assert_eq!(key("2.5"), Ok("2.5".into()));
        assert_eq!(key("3.14159265358979"), Ok("3.1415927".into()));
        assert_eq!(key("16777217.0"), Ok("1.6777216e+07".into()));
        assert_eq!(key("1e20"), Ok("1e+20".into()));
        assert_eq!(key("on"), Ok("true".into()));
        assert_eq!(key(".inf"), Ok(".inf".into()));
        assert_eq!(key("-.inf"), Ok("-.inf".into()));
        assert_eq!(key("~"), Err(ErrorKind::NullKey));
        assert_eq!(key("18446744073709551615"), Err(ErrorKind::Uint64Key));
    }

    #[test]
    fn timestamps() {
        for s in [
            "2001-12-14",
            "2001-12-14t21:59:43.10-05:00",
            "2001-12-14T21:59:43.10Z",
            "2001-12-15 2:59:43.10",
            "2001-1-2",
        ] {
            assert!(is_timestamp(s), "{s}");
        }
        for s in [
            "2001-12-14 21:59:43.10 -5",
            "2001-13-01",
            "2001-02-30",
            "2001-12-14x",
        ] {
            assert!(!is_timestamp(s), "{s}");
        }
    }

    #[test]
    fn ambiguous_strings() {
        for s in [
            "yes",
            "y",
            "No",
            "on",
            "OFF",
            "true",
            "null",
            "~",
            "",
            "1_000",
            "0644",
            "0x1f",
            "1e3",
            ".inf",
            "-.Inf",
            ".nan",
            "1:30",
            "190:20:30.15",
            "2001-12-14",
            "<<",
            "=",
            "12",
            "+12",
            "-1",
            "1.0",
            "1.2.3",
            ".",
            "0o17",
            "0b1",
            "1.5e+3",
            "08",
            "09.5",
        ] {
            assert!(is_ambiguous(s), "{s:?}");
        }
        for s in [
            "0f6c2d9e-7b1a-4e3f-8c5d-9a0b1c2d3e4f",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "busybox:1.36",
            "v1",
            "1Gi",
            "100m",
            "tRUE",
            "1e",
            "abc",
            "1:60",
        ] {
            assert!(!is_ambiguous(s), "{s:?}");
        }
    }

    /// The first-character shortcut never passes over a string that the full check finds
    /// ambiguous: every first character it lets go, before the endings of every ambiguous form.
    #[test]
    fn the_first_character_shortcut_agrees_with_the_full_check() {
        let endings = [
            "",
            "es",
            "ES",
            "o",
            "n",
            "N",
            "ff",
            "rue",
            "RUE",
            "alse",
            "ull",
            "ULL",
            "1",
            "12",
            "_000",
            ".5",
            "0.5",
            "e3",
            "1e3",
            ".5e+3",
            ":30",
            "1:30",
            "0:20:30.15",
            "x1f",
            "b101",
            "o17",
            "inf",
            "Inf",
            "nan",
            "NaN",
            "~",
            "<",
            "=",
            "001-12-14",
            "2001-12-14",
            ".",
            "1.2.3",
        ];
        let mut let_go = 0;
        for first in (' '..='~').chain(['\u{e9}', '\u{ff0b}', '\u{1f600}']) {
            let sample = first.to_string();
            if could_be_other(&sample) {
                continue;
            }
            for ending in endings {
                let s = format!("{first}{ending}");
                assert!(!is_ambiguous_in_full(&s), "{s:?}");
                let_go += 1;
            }
        }
        // Letters, `/`, `:`, `_` and the like: most of what manifests hold.
        assert!(let_go > 70 * endings.len(), "{let_go}");
        assert!(could_be_other("") && could_be_other("yes") && could_be_other("0644"));
    }
}
