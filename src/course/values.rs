//! Parsed value types of course files: parse, don't validate.
//!
//! Each type accepts exactly the strings its JSON Schema `pattern` describes
//! (so editors, other validators and labpool agree) and refuses the rest with a
//! [`ValueError`] that carries a stable [`Code`] and a message a person can act
//! on. Once parsed, a value is known good: `ByteSize` is a byte count, `Duration`
//! a `std::time::Duration`, `TimeZone` a real IANA zone.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::diagnostic::Code;

/// Why a string is not a valid value of its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValueError {
    pub code: Code,
    pub message: String,
}

impl ValueError {
    fn new(code: Code, message: impl Into<String>) -> Self {
        ValueError {
            code,
            message: message.into(),
        }
    }

    /// serde errors carry only text, so the code travels as a `[code] ` prefix
    /// that [`ValueError::from_serde_message`] takes off again.
    fn into_serde<E: de::Error>(self) -> E {
        E::custom(format_args!("[{}] {}", self.code, self.message))
    }

    /// Splits a serde error message made by [`ValueError::into_serde`] back
    /// into its code and message; other messages get no code.
    pub fn from_serde_message(message: &str) -> (Option<Code>, &str) {
        if let Some(rest) = message.strip_prefix('[')
            && let Some((code, text)) = rest.split_once("] ")
            && let Some(code) = Code::ALL.iter().find(|c| c.as_str() == code)
        {
            return (Some(*code), text);
        }
        (None, message)
    }
}

/// A serde failure while deserializing a located document, as a diagnostic at
/// the failing value, with the code a [`ValueError`] carried (else
/// `invalid-value`). `what` names the failing path for the message.
pub fn serde_diagnostic(
    file: &std::path::Path,
    doc: &crate::yaml::Document,
    e: &serde_path_to_error::Error<serde_json::Error>,
    what: impl FnOnce(&str) -> String,
) -> crate::diagnostic::Diagnostic {
    let pointer = crate::yaml::pointer_from_serde_path(e.path());
    let text = e.inner().to_string();
    let (code, message) = ValueError::from_serde_message(&text);
    crate::diagnostic::Diagnostic::new(
        file,
        doc.position(&pointer),
        code.unwrap_or(Code::InvalidValue),
        format!("{}: {message}", what(&pointer)),
    )
}

/// Implements `Display`, serde and `JsonSchema` for a type that is written as a
/// string in course files and parsed with `FromStr<Err = ValueError>`.
macro_rules! string_value {
    ($ty:ident, $name:literal, $schema:tt) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = Cow::<'de, str>::deserialize(d)?;
                text.parse().map_err(ValueError::into_serde)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// A value type's check: `None` when the text is a valid value.
pub type FormatCheck = fn(&str) -> Option<ValueError>;

/// The JSON Schema `format` of each value type, with its parser's verdict.
///
/// Patterns let editors and other validators check a value's form; a format
/// carries what no pattern can (a real time zone, a size above zero). Other
/// validators ignore formats they do not know, as the JSON Schema spec asks;
/// labpool registers these and so reports every bad value in one pass.
pub const FORMATS: &[(&str, FormatCheck)] = &[
    ("labpool-course-name", |s| s.parse::<CourseName>().err()),
    ("labpool-image-name", |s| s.parse::<ImageName>().err()),
    ("labpool-byte-size", |s| s.parse::<ByteSize>().err()),
    ("labpool-duration", |s| s.parse::<Duration>().err()),
    ("labpool-time-of-day", |s| s.parse::<TimeOfDay>().err()),
    ("labpool-time-zone", |s| s.parse::<TimeZone>().err()),
];

/// Explains why `text` is not a valid value of `format` (one of [`FORMATS`]).
/// `None` when the format is not one of ours or `text` is fine.
pub fn explain(format: &str, text: &str) -> Option<ValueError> {
    FORMATS
        .iter()
        .find(|(name, _)| *name == format)
        .and_then(|(_, check)| check(text))
}

// ---------------------------------------------------------------------------

/// A course name: a lowercase DNS label (1–63 of `a-z`, `0-9`, `-`, not
/// starting or ending with `-`). It names VMs and URLs, so it must be safe in both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CourseName(String);

impl CourseName {
    pub const PATTERN: &'static str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CourseName {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        dns_label(s, "course name", Code::InvalidName).map(|()| CourseName(s.to_string()))
    }
}

/// Checks that `s` is a lowercase DNS label, saying exactly what is wrong.
fn dns_label(s: &str, what: &str, code: Code) -> Result<(), ValueError> {
    let fail = |why: String| Err(ValueError::new(code, format!("{what} \"{s}\" {why}")));
    if s.is_empty() {
        return Err(ValueError::new(code, format!("{what} is empty")));
    }
    if s.len() > 63 {
        return fail(format!(
            "is {} characters long; at most 63 are allowed",
            s.len()
        ));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !s.chars().all(allowed) {
        let suggestion: String = s
            .to_ascii_lowercase()
            .chars()
            .map(|c| if allowed(c) { c } else { '-' })
            .collect();
        let suggestion = suggestion.trim_matches('-');
        let hint = if suggestion.is_empty() {
            String::new()
        } else {
            format!(" (try \"{suggestion}\")")
        };
        return fail(format!(
            "may only contain lowercase letters, digits and '-'{hint}"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return fail("must not start or end with '-'".to_string());
    }
    Ok(())
}

impl fmt::Display for CourseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(CourseName, "CourseName", {
    "type": "string",
    "format": "labpool-course-name",
    "description": "A lowercase DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'.",
    "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$",
    "examples": ["rhel-101", "net-security"]
});

// ---------------------------------------------------------------------------

/// The name of a base image in the hosts' image catalog.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName(String);

impl ImageName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ImageName {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if s.is_empty() || s.len() > 128 || !first_ok || !s.chars().all(ok_char) {
            return Err(ValueError::new(
                Code::InvalidValue,
                format!(
                    "image name \"{s}\" must be 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            ));
        }
        Ok(ImageName(s.to_string()))
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(ImageName, "ImageName", {
    "type": "string",
    "format": "labpool-image-name",
    "description": "A name from the hosts' image catalog.",
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    "examples": ["rhel-9.4-academy", "debian-12"]
});

// ---------------------------------------------------------------------------

/// An amount of memory or disk, in bytes. Written with a unit, always:
/// binary (`KiB`, `MiB`, `GiB`, `TiB`), decimal (`KB`, `MB`, `GB`, `TB`) or `B`.
/// A bare number is refused because `16` is far more likely a forgotten `GiB`
/// than sixteen bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

const SIZE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

impl ByteSize {
    pub const fn bytes(n: u64) -> Self {
        ByteSize(n)
    }

    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }

    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }

    pub fn as_bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = |why: &str| {
            Err(ValueError::new(
                Code::InvalidSize,
                format!("size \"{s}\" {why}; write a number and a unit, such as 512MiB or 16GiB"),
            ))
        };
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let unit = unit.strip_prefix(' ').unwrap_or(unit);
        if number.is_empty() {
            return bad("has no number");
        }
        if unit.is_empty() {
            return bad("has no unit");
        }
        let Some(&(_, scale)) = SIZE_UNITS.iter().find(|(u, _)| *u == unit) else {
            let hint = SIZE_UNITS
                .iter()
                .find(|(u, _)| {
                    u.eq_ignore_ascii_case(unit)
                        || u.trim_end_matches("iB").eq_ignore_ascii_case(unit)
                })
                .map(|(u, _)| format!(" (did you mean {u}?)"))
                .unwrap_or_default();
            return bad(&format!("has an unknown unit \"{unit}\"{hint}"));
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() || frac.contains('.') || (number.contains('.') && frac.is_empty()) {
            return bad("has a malformed number");
        }
        // Exact integer arithmetic: 1.5GiB is 1610612736 bytes, not a float rounding of it.
        let digits = frac.len() as u32;
        let parsed = format!("{whole}{frac}")
            .parse::<u128>()
            .ok()
            .and_then(|n| n.checked_mul(scale as u128))
            .and_then(|n| n.checked_div(10u128.checked_pow(digits)?))
            .and_then(|n| u64::try_from(n).ok());
        match parsed {
            None => bad("is too large"),
            Some(0) => bad("is zero"),
            Some(n) => Ok(ByteSize(n)),
        }
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that shows the size exactly (`16GiB`, `1536MiB`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, scale) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}B", self.0)
    }
}

string_value!(ByteSize, "ByteSize", {
    "type": "string",
    "format": "labpool-byte-size",
    "description": "A size with a unit: B, KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000).",
    "pattern": "^[0-9]+(\\.[0-9]+)? ?(B|KiB|MiB|GiB|TiB|KB|MB|GB|TB)$",
    "examples": ["512MiB", "4GiB", "16GiB"]
});

// ---------------------------------------------------------------------------

/// A length of time written as whole units: `90s`, `30m`, `4h`, `2d`, `1h30m`.
/// Only `d`, `h`, `m`, `s`: a `4M` that means months to one tool and minutes to
/// another has no place in a course file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Duration(std::time::Duration::from_secs(secs))
    }

    pub fn get(self) -> std::time::Duration {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl FromStr for Duration {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = |why: String| {
            Err(ValueError::new(
                Code::InvalidDuration,
                format!(
                    "duration \"{s}\" {why}; write numbers with units d, h, m or s, such as 30m, 4h or 1h30m"
                ),
            ))
        };
        if s.is_empty() {
            return bad("is empty".into());
        }
        let mut total: u64 = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return bad(format!("has \"{rest}\" where a number belongs"));
            }
            let Ok(n) = rest[..digits].parse::<u64>() else {
                return bad("is too large".into());
            };
            let unit_end = rest[digits..]
                .find(|c: char| c.is_ascii_digit() || c == ' ')
                .map_or(rest.len(), |i| digits + i);
            let scale = match &rest[digits..unit_end] {
                "d" => 86_400,
                "h" => 3_600,
                "m" => 60,
                "s" => 1,
                "" => return bad(format!("has no unit after {n}")),
                u if u.starts_with('.') => return bad("has a fraction".into()),
                other => return bad(format!("has an unknown unit \"{other}\"")),
            };
            total = match n.checked_mul(scale).and_then(|x| total.checked_add(x)) {
                Some(t) => t,
                None => return bad("is too large".into()),
            };
            rest = &rest[unit_end..];
            // One space may separate parts ("1h 30m"), but not end the text.
            if let Some(next) = rest.strip_prefix(' ') {
                if next.is_empty() {
                    return bad("ends with a space".into());
                }
                rest = next;
            }
        }
        Ok(Duration::from_secs(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, scale) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs >= scale {
                write!(f, "{}{unit}", secs / scale)?;
                secs %= scale;
            }
        }
        Ok(())
    }
}

string_value!(Duration, "Duration", {
    "type": "string",
    "format": "labpool-duration",
    "description": "A duration: numbers with units d, h, m or s, such as 30m, 4h or 1h30m.",
    "pattern": "^[0-9]+[dhms]( ?[0-9]+[dhms])*$",
    "examples": ["30m", "4h", "1h30m"]
});

// ---------------------------------------------------------------------------

/// A wall-clock time of day, `HH:MM` in 24-hour form. `24:00` is allowed as
/// the end of a window that runs to midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay {
    minutes: u16,
}

impl TimeOfDay {
    pub fn hm(hour: u16, minute: u16) -> Self {
        TimeOfDay {
            minutes: hour * 60 + minute,
        }
    }

    /// Minutes since midnight.
    pub fn minutes(self) -> u16 {
        self.minutes
    }
}

impl FromStr for TimeOfDay {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || {
            Err(ValueError::new(
                Code::InvalidTime,
                format!(
                    "time \"{s}\" is not a time of day; write HH:MM in 24-hour form, such as 09:45 or 17:00"
                ),
            ))
        };
        let Some((h, m)) = s.split_once(':') else {
            return bad();
        };
        let two_digits = |t: &str| t.len() == 2 && t.bytes().all(|b| b.is_ascii_digit());
        if !two_digits(h) || !two_digits(m) {
            return bad();
        }
        let (hour, minute): (u16, u16) = (h.parse().unwrap_or(99), m.parse().unwrap_or(99));
        if minute > 59 || hour > 24 || (hour == 24 && minute != 0) {
            return bad();
        }
        Ok(TimeOfDay::hm(hour, minute))
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

string_value!(TimeOfDay, "TimeOfDay", {
    "type": "string",
    "format": "labpool-time-of-day",
    "description": "A time of day, HH:MM in 24-hour form (24:00 is the end of the day). Quote it in YAML.",
    "pattern": "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
    "examples": ["09:45", "17:00"]
});

// ---------------------------------------------------------------------------

/// An IANA time zone such as `America/Chicago`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    pub fn tz(self) -> chrono_tz::Tz {
        self.0
    }
}

impl FromStr for TimeZone {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        if let Ok(tz) = s.parse::<chrono_tz::Tz>() {
            return Ok(TimeZone(tz));
        }
        let hint = closest(s, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
            .map(|name| format!(" (did you mean {name}?)"))
            .unwrap_or_default();
        Err(ValueError::new(
            Code::UnknownTimeZone,
            format!("\"{s}\" is not an IANA time zone{hint}"),
        ))
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

string_value!(TimeZone, "TimeZone", {
    "type": "string",
    "format": "labpool-time-zone",
    "description": "An IANA time zone name.",
    "minLength": 1,
    "examples": ["America/Chicago", "Europe/Berlin", "UTC"]
});

/// The candidate most similar to `input`, if any is similar enough to be a
/// plausible typo (used for "did you mean" hints).
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

// ---------------------------------------------------------------------------

/// A day of the week, as written in schedules.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Day::Mon => "mon",
            Day::Tue => "tue",
            Day::Wed => "wed",
            Day::Thu => "thu",
            Day::Fri => "fri",
            Day::Sat => "sat",
            Day::Sun => "sun",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_exactly_and_print_back() {
        assert_eq!("512MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(512));
        assert_eq!("16GiB".parse::<ByteSize>().unwrap(), ByteSize::gib(16));
        assert_eq!("16 GiB".parse::<ByteSize>().unwrap(), ByteSize::gib(16));
        assert_eq!(
            "1.5GiB".parse::<ByteSize>().unwrap().as_bytes(),
            1_610_612_736
        );
        assert_eq!(
            "20GB".parse::<ByteSize>().unwrap().as_bytes(),
            20_000_000_000
        );
        assert_eq!(ByteSize::gib(16).to_string(), "16GiB");
        assert_eq!("1.5GiB".parse::<ByteSize>().unwrap().to_string(), "1536MiB");
    }

    #[test]
    fn sizes_refuse_with_reasons() {
        let err = |s: &str| s.parse::<ByteSize>().unwrap_err();
        assert_eq!(err("16").code, Code::InvalidSize);
        assert!(err("16").message.contains("has no unit"));
        assert!(err("16gb").message.contains("did you mean GB?"));
        assert!(err("16G").message.contains("did you mean GiB?"));
        assert!(err("0MiB").message.contains("is zero"));
        assert!(err("GiB").message.contains("has no number"));
        assert!(err("1.GiB").message.contains("malformed"));
        assert!(err("99999999TiB").message.contains("too large"));
    }

    #[test]
    fn durations_parse_units_and_combinations() {
        let secs = |s: &str| s.parse::<Duration>().unwrap().get().as_secs();
        assert_eq!(secs("30m"), 1800);
        assert_eq!(secs("4h"), 14_400);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("1h 30m"), 5400);
        assert_eq!(secs("2d"), 172_800);
        assert_eq!(secs("0s"), 0);
        assert_eq!(Duration::from_secs(5400).to_string(), "1h30m");
        for bad in ["", "30", "4M", "h", "1.5h", "-1h", "4 h"] {
            let e = bad.parse::<Duration>().unwrap_err();
            assert_eq!(e.code, Code::InvalidDuration, "{bad}");
        }
    }

    #[test]
    fn times_of_day() {
        assert_eq!("09:45".parse::<TimeOfDay>().unwrap().minutes(), 585);
        assert_eq!("24:00".parse::<TimeOfDay>().unwrap().minutes(), 1440);
        for bad in ["9:45", "24:01", "12:60", "noon", "12:5"] {
            assert_eq!(
                bad.parse::<TimeOfDay>().unwrap_err().code,
                Code::InvalidTime,
                "{bad}"
            );
        }
    }

    #[test]
    fn time_zones_suggest_the_closest_name() {
        assert_eq!(
            "America/Chicago".parse::<TimeZone>().unwrap().to_string(),
            "America/Chicago"
        );
        let e = "America/Chicgo".parse::<TimeZone>().unwrap_err();
        assert_eq!(e.code, Code::UnknownTimeZone);
        assert!(
            e.message.contains("did you mean America/Chicago?"),
            "{}",
            e.message
        );
    }

    #[test]
    fn course_names_are_dns_labels() {
        assert!("rhel-101".parse::<CourseName>().is_ok());
        assert!("a".parse::<CourseName>().is_ok());
        let e = "RHEL-101".parse::<CourseName>().unwrap_err();
        assert!(e.message.contains("try \"rhel-101\""), "{}", e.message);
        assert!("-x".parse::<CourseName>().is_err());
        assert!("x_y".parse::<CourseName>().is_err());
        assert!("a".repeat(64).parse::<CourseName>().is_err());
    }

    /// The schema pattern and the parser must accept the same strings, or
    /// editors and labpool would disagree.
    #[test]
    fn patterns_agree_with_parsers() {
        let samples = [
            "512MiB", "16 GiB", "1.5GiB", "16", "16gb", "0MiB", "1.GiB", "30m", "1h30m", "1h 30m",
            "4M", "1h ", " 1h", "09:45", "24:00", "24:01", "9:45", "rhel-101", "RHEL", "-x", "a-",
            "x.y", "a_b", "",
        ];
        for (name, parse_ok) in [
            (
                "ByteSize",
                (|s: &str| s.parse::<ByteSize>().is_ok()) as fn(&str) -> bool,
            ),
            ("Duration", |s| s.parse::<Duration>().is_ok()),
            ("TimeOfDay", |s| s.parse::<TimeOfDay>().is_ok()),
            ("CourseName", |s| s.parse::<CourseName>().is_ok()),
            ("ImageName", |s| s.parse::<ImageName>().is_ok()),
        ] {
            let schema = crate::course::schema::course_schema();
            let pattern = schema.as_value()["definitions"][name]["pattern"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has a pattern"));
            let re = regex::Regex::new(pattern).unwrap();
            for s in samples {
                // Zero sizes pass the pattern but not the parser: that one is a
                // semantic rule the schema cannot state.
                if name == "ByteSize" && s == "0MiB" {
                    continue;
                }
                assert_eq!(re.is_match(s), parse_ok(s), "{name} on {s:?}");
            }
        }
    }

    #[test]
    fn codes_survive_the_trip_through_serde() {
        let e: serde_json::Error = ValueError::new(Code::InvalidSize, "bad").into_serde();
        let text = e.to_string();
        assert_eq!(
            ValueError::from_serde_message(&text),
            (Some(Code::InvalidSize), "bad")
        );
        assert_eq!(ValueError::from_serde_message("plain"), (None, "plain"));
    }
}
