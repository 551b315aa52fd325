//! Numbers as kubectl holds and prints them: Go's `encoding/json` float format, and the
//! unstructured round trip (an integer literal that fits int64 is an int64, the rest float64).

use std::io;

use serde_json::Value;

/// The JSON value kubectl holds for a float: Go prints it (`1e3` as `1000`), and what reads
/// back as an integer literal that fits int64 is an integer (from the printed digits:
/// `-9223372036854775809` prints as `-9223372036854776000`, beyond int64, so stays a float).
pub fn value(f: f64) -> Value {
    if f.fract() == 0.0
        && f.abs() < 1e21
        && let Ok(i) = go_json(f).parse::<i64>()
    {
        return Value::from(i);
    }
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Numbers of a JSON document as kubectl's unstructured decoding holds them: integers beyond
/// int64 become floats, and floats that Go prints as integers become integers.
pub fn normalize(value: &mut Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Number(n) if !n.is_i64() => {
                if let Some(f) = n.as_f64() {
                    *v = self::value(f);
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            _ => {}
        }
    }
}

/// Shortest decimal digits of `f` (no sign) and the position of the decimal point: `f` is
/// `0.DIGITS × 10^point`.
fn shortest(text: &str) -> (bool, String, i32) {
    // Rust's `{:e}` is the shortest round-trip form, `d.ddde±x`.
    let negative = text.starts_with('-');
    let text = text.trim_start_matches('-');
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    (negative, digits, exponent + 1)
}

fn fixed(negative: bool, digits: &str, point: i32) -> String {
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    let len = digits.len() as i32;
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(digits);
    } else if point >= len {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', (point - len) as usize));
    } else {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    }
    out
}

fn exponential(negative: bool, digits: &str, point: i32, min_exponent_digits: usize) -> String {
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    let e = point - 1;
    out.push('e');
    out.push(if e < 0 { '-' } else { '+' });
    out.push_str(&format!(
        "{:0width$}",
        e.unsigned_abs(),
        width = min_exponent_digits
    ));
    out
}

/// Go's `encoding/json` float64 text: fixed notation from 1e-6 up to 1e21, else `1e+21`,
/// `1e-7`. Zero is `0`, negative zero `-0`.
pub fn go_json(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let (negative, digits, point) = shortest(&format!("{f:e}"));
    if f.abs() < 1e-6 || f.abs() >= 1e21 {
        exponential(negative, &digits, point, 1)
    } else {
        fixed(negative, &digits, point)
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`, which `sigs.k8s.io/yaml` uses for float keys:
/// float32 precision, exponent form below 1e-4 and from 1e6 (`1.6777216e+07`).
pub fn go_float32_g(f: f64) -> String {
    let f = f as f32;
    if f.is_nan() {
        return ".nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let (negative, digits, point) = shortest(&format!("{f:e}"));
    let exponent = point - 1;
    if !(-4..6).contains(&exponent) {
        exponential(negative, &digits, point, 2)
    } else {
        fixed(negative, &digits, point)
    }
}

/// serde_json's pretty printer, but floats as Go prints them, so `-o json` spells each number
/// as kubectl sends it (`18446744073709552000`, not `1.8446744073709552e19`).
pub struct GoFloats(serde_json::ser::PrettyFormatter<'static>);

impl Default for GoFloats {
    fn default() -> Self {
        GoFloats(serde_json::ser::PrettyFormatter::new())
    }
}

/// `value` as pretty JSON with Go's float text.
pub fn to_json_pretty(value: &impl serde::Serialize) -> Result<String, serde_json::Error> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFloats::default());
    value.serialize(&mut ser)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl serde_json::ser::Formatter for GoFloats {
    fn write_f64<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(go_json(value).as_bytes())
    }
    fn write_f32<W: ?Sized + io::Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(go_json(f64::from(value)).as_bytes())
    }
    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
// The digits are the point: these are the values Go rounds and prints.
#[allow(clippy::excessive_precision, clippy::approx_constant)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_go_json_prints_them() {
        let cases: &[(f64, &str)] = &[
            (1000.0, "1000"),
            (0.5, "0.5"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-7, "1e-7"),
            (1e-6, "0.000001"),
            (1.5e300, "1.5e+300"),
            (18446744073709551615.0, "18446744073709552000"),
            (1.2345678901234568e29, "1.2345678901234568e+29"),
            (-9223372036854775809.0, "-9223372036854776000"),
            (685230.15, "685230.15"),
            (-0.001, "-0.001"),
            (0.1, "0.1"),
            (-0.0, "-0"),
            (1.234e-10, "1.234e-10"),
        ];
        for (f, want) in cases {
            assert_eq!(go_json(*f), *want, "{f}");
        }
    }

    #[test]
    fn float32_keys() {
        let cases: &[(f64, &str)] = &[
            (2.5, "2.5"),
            (3.14159265358979, "3.1415927"),
            (16777217.0, "1.6777216e+07"),
            (1e20, "1e+20"),
            (0.1, "0.1"),
            (0.3, "0.3"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-1.5, "-1.5"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float32_g(*f), *want, "{f}");
        }
    }

    #[test]
    fn values_are_what_the_unstructured_round_trip_holds() {
        assert_eq!(value(1000.0), Value::from(1000));
        assert_eq!(value(-0.0), Value::from(0));
        assert_eq!(value(0.5), Value::from(0.5));
        assert_eq!(
            value(9.223372036854775807e18),
            Value::from(9.223372036854775807e18)
        );
        assert_eq!(
            value(-9.223372036854775808e18),
            Value::from(-9.223372036854775808e18)
        );
        assert_eq!(
            value(4611686018427387904.0),
            Value::from(4611686018427388000_i64)
        );
        let mut v = serde_json::json!({"a": [u64::MAX, 30.0, 0.5, -0.0, 7]});
        normalize(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": [1.8446744073709552e19, 30, 0.5, 0, 7]})
        );
        assert_eq!(value(1e21), Value::from(1e21));
        let json =
            to_json_pretty(&serde_json::json!({"a": [1.8446744073709552e19, 0.5, 3]})).unwrap();
        assert_eq!(
            json,
            "{\n  \"a\": [\n    18446744073709552000,\n    0.5,\n    3\n  ]\n}"
        );
    }
}
