//! [`EventRecord`]: the payload of one write-ahead log record, what the store, detection and sinks read back.
//!
//! The encoding is compact and versioned, and decoding borrows from the bytes:
//!
//! ```text
//! [u8 version = 1][i64 LE received_us]
//! [u16 LE len][cluster] [u16 LE len][source] [u16 LE len][audit_id] [u16 LE len][stage]
//! [event JSON: the rest of the record]
//!
//! [u8 version = 2][i64 LE received_us]
//! [u16 LE len][cluster] [u16 LE len][source] [u16 LE len][audit_id] [u16 LE len][stage] [u16 LE len][variant]
//! [event JSON: the rest of the record]
//! ```
//!
//! Version 2 is written only for a record with a `variant` (a request that reused another's auditID), so
//! every other record keeps the version 1 bytes.
//!
//! Decoding is total: any byte string is either a record or a [`RecordError`], never a panic.

use std::borrow::Cow;

/// The record format this crate writes for an ordinary record (the first byte of every record).
pub const RECORD_VERSION: u8 = 1;
/// The format of a record with a [`variant`](EventRecord::variant).
pub const RECORD_VERSION_VARIANT: u8 = 2;

/// The longest cluster, source, audit ID or stage that can be stored (its length prefix is a `u16`).
pub const MAX_FIELD_BYTES: usize = u16::MAX as usize;

/// One stored audit event and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord<'a> {
    /// When kubetrail received the event, in microseconds since the Unix epoch.
    pub received_us: i64,
    /// The cluster the event came from.
    pub cluster: Cow<'a, str>,
    /// How it arrived: `webhook`, `file:/var/log/...`, `import`.
    pub source: Cow<'a, str>,
    pub audit_id: Cow<'a, str>,
    pub stage: Cow<'a, str>,
    /// Empty for the first record of its (cluster, auditID, stage). A later record with the same three but
    /// different content (a client reused another request's `Audit-ID`) carries its content digest here
    /// (16 hex digits), which keeps its [`id`](Self::id) apart from the first's.
    pub variant: Cow<'a, str>,
    /// The event as JSON, already redacted.
    pub event: Cow<'a, str>,
}

/// Bytes that are not an [`EventRecord`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error(
        "unknown record version `{0}` (this build reads versions {RECORD_VERSION} and {RECORD_VERSION_VARIANT}): upgrade kubetrail"
    )]
    Version(u8),
    #[error("record truncated in `{0}`")]
    Truncated(&'static str),
    #[error("record field `{0}` is not UTF-8")]
    NotUtf8(&'static str),
}

impl EventRecord<'_> {
    /// Appends the encoded record to `out`.
    ///
    /// A cluster, source, audit ID or stage longer than [`MAX_FIELD_BYTES`] is cut at the last character
    /// boundary that fits: such values are not real (an audit ID is a UUID), and refusing the whole event over
    /// one would lose the event itself.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        let fields = [
            &self.cluster,
            &self.source,
            &self.audit_id,
            &self.stage,
            &self.variant,
        ];
        let fields = if self.variant.is_empty() {
            out.push(RECORD_VERSION);
            &fields[..4]
        } else {
            out.push(RECORD_VERSION_VARIANT);
            &fields[..]
        };
        out.extend_from_slice(&self.received_us.to_le_bytes());
        for field in fields {
            let field = clip(field);
            out.extend_from_slice(&(field.len() as u16).to_le_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(self.event.as_bytes());
    }

    /// The number of bytes [`encode`](Self::encode) appends.
    pub fn encoded_len(&self) -> usize {
        let fields: usize = [
            &self.cluster,
            &self.source,
            &self.audit_id,
            &self.stage,
            &self.variant,
        ]
        .iter()
        .map(|f| 2 + clip(f).len())
        .sum();
        let variant = if self.variant.is_empty() { 2 } else { 0 };
        1 + 8 + fields - variant + self.event.len()
    }

    /// The record's shipping id: `<auditID>-<stage>-<content>`, `content` being 16 hex digits of a digest
    /// of the stored event that every installation computes alike (`kubetrail_policy::keyless_digest`).
    /// Sinks use it as the document or row id: a retried batch, or the copy of an event that two replicas
    /// both stored, merges; a request that reused another's auditID never does, even when another replica
    /// stored the first one.
    pub fn id(&self, content: u64) -> String {
        format!("{}-{}-{content:016x}", self.audit_id, self.stage)
    }

    /// Reads a record, borrowing its strings from `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<EventRecord<'_>, RecordError> {
        let (&version, rest) = bytes.split_first().ok_or(RecordError::Empty)?;
        if version != RECORD_VERSION && version != RECORD_VERSION_VARIANT {
            return Err(RecordError::Version(version));
        }
        let (time, mut rest) = rest
            .split_first_chunk::<8>()
            .ok_or(RecordError::Truncated("received_us"))?;
        let mut field = |name: &'static str| -> Result<&str, RecordError> {
            let (len, tail) = rest
                .split_first_chunk::<2>()
                .ok_or(RecordError::Truncated(name))?;
            let len = u16::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(RecordError::Truncated(name));
            }
            let (value, tail) = tail.split_at(len);
            rest = tail;
            std::str::from_utf8(value).map_err(|_| RecordError::NotUtf8(name))
        };
        let cluster = field("cluster")?;
        let source = field("source")?;
        let audit_id = field("audit_id")?;
        let stage = field("stage")?;
        let variant = if version == RECORD_VERSION_VARIANT {
            field("variant")?
        } else {
            ""
        };
        let event = std::str::from_utf8(rest).map_err(|_| RecordError::NotUtf8("event"))?;
        Ok(EventRecord {
            received_us: i64::from_le_bytes(*time),
            cluster: Cow::Borrowed(cluster),
            source: Cow::Borrowed(source),
            audit_id: Cow::Borrowed(audit_id),
            stage: Cow::Borrowed(stage),
            variant: Cow::Borrowed(variant),
            event: Cow::Borrowed(event),
        })
    }

    /// The same record, owning its strings.
    pub fn into_owned(self) -> EventRecord<'static> {
        EventRecord {
            received_us: self.received_us,
            cluster: Cow::Owned(self.cluster.into_owned()),
            source: Cow::Owned(self.source.into_owned()),
            audit_id: Cow::Owned(self.audit_id.into_owned()),
            stage: Cow::Owned(self.stage.into_owned()),
            variant: Cow::Owned(self.variant.into_owned()),
            event: Cow::Owned(self.event.into_owned()),
        }
    }
}

/// `s` cut to [`MAX_FIELD_BYTES`] at a character boundary, as a record's cluster, source, audit ID and stage
/// are stored.
pub fn clip(s: &str) -> &str {
    if s.len() <= MAX_FIELD_BYTES {
        return s;
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record<'a>(
        cluster: &'a str,
        source: &'a str,
        audit_id: &'a str,
        stage: &'a str,
        event: &'a str,
    ) -> EventRecord<'a> {
        EventRecord {
            received_us: 1_700_000_000_123_456,
            cluster: cluster.into(),
            source: source.into(),
            audit_id: audit_id.into(),
            stage: stage.into(),
            variant: "".into(),
            event: event.into(),
        }
    }

    #[test]
    fn round_trip_borrows() {
        let r = record(
            "prod-eu",
            "webhook",
            "9f1c0e0a-3b2d-4c4e-8d7e-1a2b3c4d5e6f",
            "ResponseComplete",
            r#"{"kind":"Event"}"#,
        );
        let mut buf = vec![0xAA]; // encode appends
        r.encode(&mut buf);
        assert_eq!(buf.len(), 1 + r.encoded_len());
        let back = EventRecord::decode(&buf[1..]).unwrap();
        assert_eq!(back, r);
        assert!(matches!(back.event, Cow::Borrowed(_)));
    }

    #[test]
    fn errors_name_the_problem() {
        let check =
            |bytes: &[u8], expect: RecordError| assert_eq!(EventRecord::decode(bytes), Err(expect));
        check(b"", RecordError::Empty);
        check(&[3, 0, 0], RecordError::Version(3));
        check(&[1, 0, 0], RecordError::Truncated("received_us"));
        check(
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, b'a'],
            RecordError::Truncated("cluster"),
        );
        check(
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xff],
            RecordError::NotUtf8("cluster"),
        );
        check(
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff],
            RecordError::NotUtf8("event"),
        );
    }

    #[test]
    fn a_variant_keeps_the_id_apart_and_ordinary_records_keep_version_1() {
        let first = record("c", "webhook", "x", "ResponseComplete", "{}");
        let mut buf = Vec::new();
        first.encode(&mut buf);
        assert_eq!(buf[0], RECORD_VERSION);
        assert_eq!(buf.len(), first.encoded_len());
        let reused = EventRecord {
            variant: "00ff00ff00ff00ff".into(),
            ..first.clone()
        };
        let mut buf2 = Vec::new();
        reused.encode(&mut buf2);
        assert_eq!(buf2[0], RECORD_VERSION_VARIANT);
        assert_eq!(buf2.len(), reused.encoded_len());
        assert_eq!(EventRecord::decode(&buf2).unwrap(), reused);
        assert_eq!(first.id(0xab), "x-ResponseComplete-00000000000000ab");
        assert_eq!(reused.id(1), "x-ResponseComplete-0000000000000001");
    }

    #[test]
    fn oversized_field_is_clipped_at_a_char_boundary() {
        let long = "é".repeat(MAX_FIELD_BYTES); // 2 bytes each
        let r = record("c", &long, "id", "ResponseComplete", "{}");
        let mut buf = Vec::new();
        r.encode(&mut buf);
        let back = EventRecord::decode(&buf).unwrap();
        assert_eq!(back.source.len(), MAX_FIELD_BYTES - 1);
        assert!(long.starts_with(back.source.as_ref()));
        assert_eq!(back.event, "{}");
    }

    proptest! {
        #[test]
        fn decode_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = EventRecord::decode(&bytes);
            for version in [RECORD_VERSION, RECORD_VERSION_VARIANT] {
                let mut versioned = bytes.clone();
                versioned.insert(0, version);
                let _ = EventRecord::decode(&versioned);
            }
        }

        #[test]
        fn encode_decode_round_trips(
            received_us in any::<i64>(),
            cluster in ".{0,20}", source in ".{0,40}", audit_id in ".{0,40}", stage in ".{0,20}", event in ".{0,200}",
            variant in "([0-9a-f]{16})?",
        ) {
            let r = EventRecord { received_us, variant: variant.as_str().into(), ..record(&cluster, &source, &audit_id, &stage, &event) };
            let mut buf = Vec::new();
            r.encode(&mut buf);
            prop_assert_eq!(EventRecord::decode(&buf).unwrap(), r);
        }
    }
}
