//! Format 3's `event_rest`: the stored event JSON without the values its own columns already hold.
//!
//! The flattened columns repeat parts of the event JSON, and some of those parts are the most expensive bytes
//! of a file: a random `auditID` costs about 18 compressed bytes wherever it is written, the microsecond
//! digits of the two timestamps another 10. So a file of format 3 stores, in `event_rest`, the event with
//! these top-level values replaced by `null` (the JSON stays valid, every other byte in place) and in
//! `event_elided` which ones ([`Elided`]):
//!
//! | bit | top-level key | its value is written again from |
//! |---|---|---|
//! | 1 | `auditID` | `audit_id`, as a JSON string |
//! | 2 | `requestReceivedTimestamp` | `time`, as `YYYY-MM-DDTHH:MM:SS.ffffffZ` |
//! | 4 | `stageTimestamp` | `stage_time`, the same way |
//! | 8 | `requestURI` | `uri`, as a JSON string |
//!
//! A value is elided only when writing the column's value back gives exactly its bytes, and its key appears
//! once at the top level; anything else (escapes, another timestamp precision, a key twice, JSON that does
//! not parse) is kept as it is. So [`restore`] gives back the stored event byte for byte. On 200,000
//! generated events this halves a file (97 to ~53 bytes per event; `docs/benchmarks.md`).
//!
//! Written by hand because it is a splice at known offsets: serde_json finds the top-level values (as
//! `RawValue`s, whose offsets in the text are where they borrow from) and nothing is re-encoded.

use std::borrow::Cow;
use std::ops::Range;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Which top-level values of a row's `event_rest` are `null` in place of the column's value (module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Elided(pub u8);

impl Elided {
    pub const AUDIT_ID: u8 = 1;
    pub const RECEIVED: u8 = 2;
    pub const STAGE: u8 = 4;
    pub const URI: u8 = 8;
    const ALL: u8 = 15;
}

/// The column values an event's elided parts are written back from.
#[derive(Debug, Clone, Copy)]
pub struct Flat<'a> {
    pub audit_id: &'a str,
    /// `time`, microseconds.
    pub time: i64,
    /// `stage_time`, microseconds.
    pub stage_time: Option<i64>,
    pub uri: &'a str,
}

/// Why a row's event could not be written back: the file does not say what format 3 says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event_rest does not hold what event_elided {elided} says: {what}")]
pub struct RestoreError {
    pub elided: u8,
    pub what: &'static str,
}

const KEYS: [(u8, &str); 4] = [
    (Elided::AUDIT_ID, "auditID"),
    (Elided::RECEIVED, "requestReceivedTimestamp"),
    (Elided::STAGE, "stageTimestamp"),
    (Elided::URI, "requestURI"),
];

/// The JSON text of the column value that stands for `bit`, if it has one.
fn value_text(bit: u8, flat: &Flat<'_>) -> Option<String> {
    match bit {
        Elided::AUDIT_ID => serde_json::to_string(flat.audit_id).ok(),
        Elided::RECEIVED => micro_time(flat.time),
        Elided::STAGE => flat.stage_time.and_then(micro_time),
        Elided::URI => serde_json::to_string(flat.uri).ok(),
        _ => None,
    }
}

/// A timestamp as kube-apiserver writes `MicroTime` in UTC, quoted: `"2026-01-01T00:00:00.009111Z"`.
fn micro_time(us: i64) -> Option<String> {
    let ts = jiff::Timestamp::from_microsecond(us).ok()?;
    let dt = jiff::tz::Offset::UTC.to_datetime(ts);
    if !(0..=9999).contains(&dt.year()) {
        return None;
    }
    Some(format!(
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z\"",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.subsec_nanosecond() / 1000
    ))
}

/// The top-level keys of a JSON object and the byte ranges of their values; a key written with escapes is
/// `None` (it is never one of [`KEYS`] as those are matched: spelled plainly). `None` when `json` is not an
/// object.
fn top_level(json: &str) -> Option<Vec<(Option<&str>, Range<usize>)>> {
    struct Top<'a>(Vec<(Key<'a>, &'a RawValue)>);
    struct Key<'a>(Option<&'a str>);
    struct KeyV;
    impl<'de> Visitor<'de> for KeyV {
        type Value = Key<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a key")
        }
        fn visit_borrowed_str<E>(self, k: &'de str) -> Result<Key<'de>, E> {
            Ok(Key(Some(k)))
        }
        fn visit_str<E>(self, _: &str) -> Result<Key<'de>, E> {
            Ok(Key(None))
        }
    }
    impl<'de> serde::Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
            d.deserialize_str(KeyV)
        }
    }
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Top<'de>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
            let mut out = Vec::with_capacity(16);
            while let Some(entry) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                out.push(entry);
            }
            Ok(Top(out))
        }
    }
    impl<'de> serde::Deserialize<'de> for Top<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top<'de>, D::Error> {
            d.deserialize_map(V)
        }
    }
    let top: Top<'_> = serde_json::from_str(json).ok()?;
    let base = json.as_ptr() as usize;
    Some(
        top.0
            .into_iter()
            .map(|(k, v)| {
                let start = v.get().as_ptr() as usize - base;
                (k.0, start..start + v.get().len())
            })
            .collect(),
    )
}

/// The value range of `key` if it appears exactly once (spelled plainly) among `entries`.
fn once(entries: &[(Option<&str>, Range<usize>)], key: &str) -> Option<Range<usize>> {
    let mut found = entries.iter().filter(|(k, _)| *k == Some(key));
    let first = found.next()?;
    found.next().is_none().then(|| first.1.clone())
}

/// Replaces the `ranges` of `text` (disjoint: each a different top-level value) by their replacements; a
/// range overlapping an earlier one is left alone rather than trusted.
fn splice(text: &str, mut ranges: Vec<(Range<usize>, String)>) -> String {
    ranges.sort_by_key(|(r, _)| r.start);
    let mut out = String::with_capacity(text.len() + 64);
    let mut at = 0;
    for (r, with) in ranges {
        if r.start < at {
            continue;
        }
        out.push_str(&text[at..r.start]);
        out.push_str(&with);
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `event` without the values `flat` holds exactly (module docs), and which ones were taken out.
pub fn elide<'a>(event: &'a str, flat: &Flat<'_>) -> (Cow<'a, str>, Elided) {
    let Some(entries) = top_level(event) else {
        return (Cow::Borrowed(event), Elided(0));
    };
    elide_at(event, KEYS.map(|(_, key)| once(&entries, key)), flat)
}

/// [`elide`] where the caller knows where the values of [`KEYS`] are (in that order): each a range of
/// `event` holding the value of that key, spelled plainly and appearing once at the top level. The conversion
/// has them from the event it parsed, and so reads the event once.
pub(super) fn elide_at<'a>(
    event: &'a str,
    at: [Option<Range<usize>>; 4],
    flat: &Flat<'_>,
) -> (Cow<'a, str>, Elided) {
    let mut bits = 0;
    let mut cuts: Vec<(Range<usize>, String)> = Vec::new();
    for ((bit, _), range) in KEYS.into_iter().zip(at) {
        let Some(range) = range else {
            continue;
        };
        // Ranges the caller promised disjoint are checked anyway: an overlap is not elided.
        let overlaps = cuts
            .iter()
            .any(|(r, _)| range.start < r.end && r.start < range.end);
        if !overlaps
            && value_text(bit, flat).is_some_and(|v| Some(v.as_str()) == event.get(range.clone()))
        {
            bits |= bit;
            cuts.push((range, "null".to_string()));
        }
    }
    if bits == 0 {
        return (Cow::Borrowed(event), Elided(0));
    }
    (Cow::Owned(splice(event, cuts)), Elided(bits))
}

/// Where the value of a top-level string of `event` is, from the string a parse of `event` borrowed for it:
/// the quoted range, if `value` borrows from `event` (it then holds no escape) and the key before it is
/// spelled exactly `"key"`. A parse that read each key once (serde refuses a field twice) thus gives what
/// [`elide_at`] needs.
pub(super) fn value_range(event: &str, key: &str, value: &str) -> Option<Range<usize>> {
    let start = (value.as_ptr() as usize).checked_sub(event.as_ptr() as usize)?;
    let end = start + value.len();
    if end >= event.len() || start == 0 {
        return None;
    }
    let (open, close) = (start - 1, end + 1);
    if event.as_bytes()[open] != b'"' || event.as_bytes()[end] != b'"' {
        return None;
    }
    let before = event[..open].trim_end().strip_suffix(':')?.trim_end();
    let quoted = before.strip_suffix('"')?.strip_suffix(key)?;
    quoted.ends_with('"').then_some(open..close)
}

/// The stored event, byte for byte, from a row's `event_rest`, `event_elided` and columns.
pub fn restore<'a>(
    rest: &'a str,
    elided: Elided,
    flat: &Flat<'_>,
) -> Result<Cow<'a, str>, RestoreError> {
    let bits = elided.0;
    if bits == 0 {
        return Ok(Cow::Borrowed(rest));
    }
    let err = |what| RestoreError { elided: bits, what };
    if bits & !Elided::ALL != 0 {
        return Err(err("an unknown bit"));
    }
    let entries = top_level(rest).ok_or_else(|| err("not a JSON object"))?;
    let mut puts = Vec::new();
    for (bit, key) in KEYS {
        if bits & bit == 0 {
            continue;
        }
        let range = once(&entries, key).ok_or_else(|| err("an elided key missing or twice"))?;
        if &rest[range.clone()] != "null" {
            return Err(err("an elided value that is not null"));
        }
        let value = value_text(bit, flat).ok_or_else(|| err("a column without the value"))?;
        puts.push((range, value));
    }
    Ok(Cow::Owned(splice(rest, puts)))
}

/// The stored event of `row` of a batch read from a store file of any format (columns by name; `event`,
/// or `event_rest` written back with `event_elided` and the columns). An error names what the row lacks.
pub fn stored_event(
    batch: &arrow::array::RecordBatch,
    row: usize,
) -> Result<Cow<'_, str>, RestoreError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{TimestampMicrosecondType, UInt8Type};
    let err = |what| RestoreError { elided: 0, what };
    let col = |name: &str| batch.column_by_name(name).filter(|c| c.is_valid(row));
    let text = |name: &str| {
        col(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .map(|c| c.value(row))
    };
    if let Some(event) = text("event") {
        return Ok(Cow::Borrowed(event));
    }
    let rest = text("event_rest").ok_or_else(|| err("neither event nor event_rest"))?;
    let elided = col("event_elided")
        .and_then(|c| c.as_primitive_opt::<UInt8Type>())
        .map_or(0, |c| c.value(row));
    let micros = |name: &str| {
        col(name)
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .map(|c| c.value(row))
    };
    let (audit_id, time, uri) = (text("audit_id"), micros("time"), text("uri"));
    let stage_read = batch.column_by_name("stage_time").is_some();
    for (bit, present) in [
        (Elided::AUDIT_ID, audit_id.is_some()),
        (Elided::RECEIVED, time.is_some()),
        (Elided::STAGE, stage_read),
        (Elided::URI, uri.is_some()),
    ] {
        if elided & bit != 0 && !present {
            return Err(RestoreError {
                elided,
                what: "a column it needs was not read",
            });
        }
    }
    let flat = Flat {
        audit_id: audit_id.unwrap_or_default(),
        time: time.unwrap_or_default(),
        stage_time: micros("stage_time"),
        uri: uri.unwrap_or_default(),
    };
    restore(rest, Elided(elided), &flat)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"8cf1b9fc-3d69-4cf8-aa81-c73c118ebd95","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/p/pods?x=\u0026","verb":"list","user":{"username":"a"},"requestReceivedTimestamp":"2026-01-01T00:00:00.009111Z","stageTimestamp":"2026-01-01T00:00:00.013038Z"}"#;

    fn flat() -> Flat<'static> {
        Flat {
            audit_id: "8cf1b9fc-3d69-4cf8-aa81-c73c118ebd95",
            time: 1_767_225_600_009_111,
            stage_time: Some(1_767_225_600_013_038),
            uri: "/api/v1/namespaces/p/pods?x=&",
        }
    }

    #[test]
    fn elides_what_the_columns_hold_and_restores_it_byte_for_byte() {
        let (rest, bits) = elide(EVENT, &flat());
        // The URI holds an escape its column's JSON does not write the same way: kept.
        assert_eq!(
            bits,
            Elided(Elided::AUDIT_ID | Elided::RECEIVED | Elided::STAGE)
        );
        assert!(rest.contains(r#""auditID":null"#), "{rest}");
        assert!(rest.contains(r#""stageTimestamp":null"#), "{rest}");
        assert!(rest.contains(r#"x=\u0026"#), "{rest}");
        assert!(!rest.contains("8cf1b9fc"));
        serde_json::from_str::<serde_json::Value>(&rest).expect("still JSON");
        assert_eq!(restore(&rest, bits, &flat()).unwrap(), EVENT);
    }

    #[test]
    fn a_value_the_column_does_not_write_back_exactly_is_kept() {
        // Nanoseconds, a different auditID, a key twice: nothing to elide for those keys.
        let ev = r#"{"auditID":"x","auditID":"x","requestReceivedTimestamp":"2026-01-01T00:00:00.009111000Z","stageTimestamp":"2026-01-01T00:00:00.013038Z","requestURI":"/u"}"#;
        let mut f = flat();
        f.audit_id = "x";
        f.uri = "/other";
        let (rest, bits) = elide(ev, &f);
        assert_eq!(bits, Elided(Elided::STAGE));
        assert_eq!(restore(&rest, bits, &f).unwrap(), ev);
        for not_object in ["[1]", "{not json", "\"s\"", ""] {
            assert_eq!(
                elide(not_object, &f),
                (Cow::Borrowed(not_object), Elided(0))
            );
        }
    }

    #[test]
    fn overlapping_ranges_are_not_both_elided() {
        let ev = r#"{"auditID":"a","requestURI":"a"}"#;
        let f = Flat {
            audit_id: "a",
            time: 0,
            stage_time: None,
            uri: "a",
        };
        let (rest, bits) = elide_at(ev, [Some(11..14), None, None, Some(11..14)], &f);
        assert_eq!(bits, Elided(Elided::AUDIT_ID));
        assert_eq!(rest, r#"{"auditID":null,"requestURI":"a"}"#);
    }

    #[test]
    fn a_row_that_does_not_say_what_its_bits_say_is_an_error() {
        let f = flat();
        let e = |rest: &str, bits: u8| restore(rest, Elided(bits), &f).unwrap_err().what;
        assert_eq!(
            e(r#"{"auditID":"a"}"#, 1),
            "an elided value that is not null"
        );
        assert_eq!(e(r#"{"verb":null}"#, 1), "an elided key missing or twice");
        assert_eq!(e(r#"{"auditID":null}"#, 16), "an unknown bit");
        assert_eq!(e("[]", 1), "not a JSON object");
        let no_stage = Flat {
            stage_time: None,
            ..f
        };
        assert_eq!(
            restore(r#"{"stageTimestamp":null}"#, Elided(4), &no_stage)
                .unwrap_err()
                .what,
            "a column without the value"
        );
    }

    proptest::proptest! {
        /// Whatever the event (any JSON, or not JSON) and the columns, the stored event comes back exactly.
        #[test]
        fn restore_gives_back_what_elide_took(
            keys in proptest::collection::vec(
                proptest::sample::select(vec!["auditID", "requestReceivedTimestamp", "stageTimestamp", "requestURI", "verb"]),
                0..6,
            ),
            values in proptest::collection::vec(
                proptest::sample::select(vec![
                    "\"a\"", "\"a\\u0041\"", "null", "1", "{\"auditID\":\"a\"}",
                    "\"2026-01-01T00:00:00.000001Z\"", "\"2026-01-01T00:00:00Z\"", "\"/u\"",
                ]),
                6,
            ),
            audit_id in proptest::sample::select(vec!["a", "aA", ""]),
            uri in proptest::sample::select(vec!["/u", "/v"]),
            stage_time in proptest::option::of(proptest::sample::select(vec![1_767_225_600_000_001i64, 0])),
            garbage in proptest::bool::ANY,
        ) {
            let mut event = String::from("{");
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    event.push(',');
                }
                event.push_str(&format!("\"{k}\":{}", values[i]));
            }
            event.push('}');
            if garbage {
                event.pop();
            }
            let flat = Flat { audit_id, time: 1_767_225_600_000_001, stage_time, uri };
            let (rest, bits) = elide(&event, &flat);
            proptest::prop_assert_eq!(restore(&rest, bits, &flat).unwrap(), event.as_str());
        }
    }
}
