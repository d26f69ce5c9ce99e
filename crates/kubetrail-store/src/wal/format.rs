//! The write-ahead log's segment format, in one place: constants, header and record encoding and decoding,
//! chain hashing, and segment file names and listing. The log ([`super`]) writes and recovers segments with
//! it, and `integrity` reads them with it (read-only, never opening the log) for checkpoints and `verify`. The
//! layout is documented in the log's module docs (`# On disk`); besides segments, a directory holds
//! `<segment>.tmp` while a segment is created and `<segment>.damaged-<seq>`, a damaged active segment as found.

use std::fmt;
use std::fs;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The largest payload one record can hold.
pub const MAX_PAYLOAD_BYTES: usize = 16 << 20;

/// The first 8 bytes of every segment.
pub(crate) const MAGIC: [u8; 8] = *b"KTWAL\0\0\x01";
/// Magic, first seq, start hash, checksum.
pub(crate) const HEADER_LEN: u64 = 8 + 8 + 32 + 4;
/// A record's length, checksum and seq.
pub(crate) const PREFIX_LEN: usize = 4 + 4 + 8;
/// Where a record's seq starts within it.
pub(crate) const SEQ_OFFSET: usize = 4 + 4;
/// A record's chain hash, after its payload.
pub(crate) const HASH_LEN: usize = 32;
/// A record's bytes beyond its payload.
pub(crate) const RECORD_OVERHEAD: u64 = (PREFIX_LEN + HASH_LEN) as u64;
/// The extension of segment files.
pub(crate) const SEGMENT_EXT: &str = "seg";

// ---- header ---------------------------------------------------------------------------------------------

/// A segment header: where the segment starts, in seqs and on the hash chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub first_seq: u64,
    pub start_hash: [u8; 32],
}

/// Why a header does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    BadMagic,
    Checksum,
}

impl HeaderError {
    /// How the log says it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HeaderError::BadMagic => "not a kubetrail write-ahead log segment (bad magic)",
            HeaderError::Checksum => "segment header checksum mismatch",
        }
    }
}

pub(crate) fn encode_header(first_seq: u64, start_hash: &[u8; 32]) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[8..16].copy_from_slice(&first_seq.to_le_bytes());
    h[16..48].copy_from_slice(start_hash);
    let crc = crc32fast::hash(&h[..48]);
    h[48..].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(crate) fn decode_header(h: &[u8; HEADER_LEN as usize]) -> Result<Header, HeaderError> {
    if h[..8] != MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let crc = u32::from_le_bytes(h[48..].try_into().expect("4 bytes"));
    if crc32fast::hash(&h[..48]) != crc {
        return Err(HeaderError::Checksum);
    }
    Ok(Header {
        first_seq: u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
        start_hash: h[16..48].try_into().expect("32 bytes"),
    })
}

// ---- records --------------------------------------------------------------------------------------------

/// The chain hash of the record `seq` with `payload`, after the record whose chain hash is `prev`.
pub(crate) fn chain_hash(prev: &[u8; 32], seq: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

/// Appends one record to `buf` and returns its chain hash.
pub(crate) fn encode_record(
    buf: &mut Vec<u8>,
    seq: u64,
    prev: &[u8; 32],
    payload: &[u8],
) -> [u8; 32] {
    let start = buf.len();
    let hash = chain_hash(prev, seq, payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
    buf.extend_from_slice(&hash);
    let crc = record_crc(
        &buf[start..start + 4],
        &buf[start + SEQ_OFFSET..start + PREFIX_LEN],
        &buf[start + PREFIX_LEN..],
    );
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    hash
}

/// The checksum of a record: over its length and seq fields and its body (payload and hash).
fn record_crc(len: &[u8], seq: &[u8], body: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(len);
    c.update(seq);
    c.update(body);
    c.finalize()
}

/// A record's prefix: what a reader learns before its body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prefix {
    pub len: usize,
    pub crc: u32,
    pub seq: u64,
    bytes: [u8; PREFIX_LEN],
}

impl Prefix {
    /// Whether `body` (the payload and the hash, `len + HASH_LEN` bytes) is the one the checksum covers.
    pub(crate) fn crc_matches(&self, body: &[u8]) -> bool {
        record_crc(&self.bytes[..4], &self.bytes[SEQ_OFFSET..], body) == self.crc
    }

    /// The record's length in bytes, prefix and hash included.
    pub(crate) fn record_len(&self) -> usize {
        PREFIX_LEN + self.len + HASH_LEN
    }
}

/// What stands where a record should, when it cannot be a whole record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadFrame {
    /// Fewer bytes left than any record takes.
    Trailing(u64),
    /// A length over the limit, or past the end of the segment.
    Length(usize),
}

impl BadFrame {
    /// Whether the bytes could be the start of a record cut short (a torn write, a truncation), rather than
    /// bytes that are no record at all.
    pub(crate) fn incomplete(self) -> bool {
        match self {
            BadFrame::Trailing(_) => true,
            BadFrame::Length(len) => len <= MAX_PAYLOAD_BYTES,
        }
    }
}

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadFrame::Trailing(left) => write!(f, "{left} trailing bytes, too few for a record"),
            BadFrame::Length(len) => {
                write!(f, "record length {len} runs past the end of the segment")
            }
        }
    }
}

/// Whether `left` bytes (up to the end of the segment) can hold a record at all: check before reading a prefix.
pub(crate) fn check_room(left: u64) -> Result<(), BadFrame> {
    if left < RECORD_OVERHEAD {
        return Err(BadFrame::Trailing(left));
    }
    Ok(())
}

/// Decodes a record's prefix, `left` bytes before the end of the segment (at least [`RECORD_OVERHEAD`], see
/// [`check_room`]), and checks that its length fits.
pub(crate) fn decode_prefix(bytes: [u8; PREFIX_LEN], left: u64) -> Result<Prefix, BadFrame> {
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..SEQ_OFFSET].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(bytes[SEQ_OFFSET..].try_into().expect("8 bytes"));
    if len > MAX_PAYLOAD_BYTES || len as u64 + RECORD_OVERHEAD > left {
        return Err(BadFrame::Length(len));
    }
    Ok(Prefix {
        len,
        crc,
        seq,
        bytes,
    })
}

/// A record within a segment's bytes, its checksum not yet checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRecord<'b> {
    pub prefix: Prefix,
    pub payload: &'b [u8],
    /// The stored chain hash.
    pub hash: &'b [u8],
    /// Where the record ends.
    pub end: usize,
    /// The payload and the hash: what the checksum covers beside the prefix.
    body: &'b [u8],
}

impl RawRecord<'_> {
    pub(crate) fn crc_matches(&self) -> bool {
        self.prefix.crc_matches(self.body)
    }
}

/// The record that starts at byte `at` of a segment's bytes `b`, if one whole record fits there.
pub(crate) fn record_at(b: &[u8], at: usize) -> Result<RawRecord<'_>, BadFrame> {
    let left = b.len().saturating_sub(at) as u64;
    check_room(left)?;
    let bytes: [u8; PREFIX_LEN] = b[at..at + PREFIX_LEN].try_into().expect("16 bytes");
    let prefix = decode_prefix(bytes, left)?;
    let end = at + prefix.record_len();
    let body = &b[at + PREFIX_LEN..end];
    let (payload, hash) = body.split_at(prefix.len);
    Ok(RawRecord {
        prefix,
        payload,
        hash,
        end,
        body,
    })
}

// ---- files ----------------------------------------------------------------------------------------------

/// The file name of the segment that starts at `first_seq`.
pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

/// The name a segment is written under before it is renamed into place.
pub(crate) fn tmp_segment_name(first_seq: u64) -> String {
    format!("{}.tmp", segment_name(first_seq))
}

/// Whether `name` is a segment left half-created ([`tmp_segment_name`]).
pub(crate) fn is_tmp_segment_name(name: &str) -> bool {
    name.ends_with(&format!(".{SEGMENT_EXT}.tmp"))
}

/// The name of the copy of the segment `segment` kept as evidence when it was found damaged and cut, `first_lost`
/// being the first seq cut.
pub(crate) fn damaged_copy_name(segment: &str, first_lost: u64) -> String {
    format!("{segment}.damaged-{first_lost}")
}

/// A `*.seg` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub name: String,
    /// `None` when the name is not a segment name (its first seq, not 0, in 20 digits).
    pub first_seq: Option<u64>,
}

/// The first seq a segment file name stands for (see [`segment_name`]).
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(&format!(".{SEGMENT_EXT}"))?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse::<u64>().ok())
        .flatten()
        .filter(|n| *n > 0)
}

/// The `*.seg` files in `dir`, by name (which sorts them by first seq).
pub(crate) fn list_segment_files(dir: &Path) -> io::Result<Vec<SegmentFile>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy().into_owned();
        if !name.ends_with(&format!(".{SEGMENT_EXT}")) {
            continue;
        }
        let first_seq = parse_segment_name(&name);
        out.push(SegmentFile { name, first_seq });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout_is_as_documented() {
        let mut buf = Vec::new();
        let hash = encode_record(&mut buf, 7, &[0; 32], b"abc");
        assert_eq!(buf.len(), 3 + RECORD_OVERHEAD as usize);
        assert_eq!(&buf[..4], &3u32.to_le_bytes());
        assert_eq!(&buf[8..16], &7u64.to_le_bytes());
        assert_eq!(&buf[16..19], b"abc");
        assert_eq!(&buf[19..], &hash);
        let mut expect = Sha256::new();
        expect.update([0u8; 32]);
        expect.update(7u64.to_le_bytes());
        expect.update(b"abc");
        assert_eq!(hash, <[u8; 32]>::from(expect.finalize()));
        let crc = crc32fast::hash(&[&buf[..4], &buf[8..]].concat());
        assert_eq!(&buf[4..8], &crc.to_le_bytes());
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let mut h = encode_header(42, &[9; 32]);
        let back = decode_header(&h).unwrap();
        assert_eq!((back.first_seq, back.start_hash), (42, [9; 32]));
        h[20] ^= 1;
        assert!(decode_header(&h).is_err());
    }

    #[test]
    fn records_are_found_in_bytes_and_checked() {
        let mut buf = b"head".to_vec();
        let hash = encode_record(&mut buf, 3, &[1; 32], b"payload");
        let r = record_at(&buf, 4).unwrap();
        assert!(r.crc_matches());
        assert_eq!(
            (r.prefix.seq, r.payload, r.hash),
            (3, &b"payload"[..], &hash[..])
        );
        assert_eq!(r.end, buf.len());
        assert_eq!(
            record_at(&buf[..buf.len() - 1], 4).unwrap_err(),
            BadFrame::Length(7)
        );
        assert_eq!(record_at(&buf, 12).unwrap_err(), BadFrame::Trailing(47));
        buf[20] ^= 1;
        assert!(!record_at(&buf, 4).unwrap().crc_matches());
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_name(&segment_name(4097)), Some(4097));
        for bad in [
            "00000000000000000000.seg",
            "+0000000000000000001.seg",
            "1.seg",
            "00000000000000000001.seg.tmp",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
        assert!(is_tmp_segment_name(&tmp_segment_name(1)));
        assert_eq!(
            damaged_copy_name(&segment_name(1), 5),
            "00000000000000000001.seg.damaged-5"
        );
    }
}
