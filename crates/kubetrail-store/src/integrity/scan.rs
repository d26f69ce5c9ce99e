//! The read-only walk of the write-ahead log's segment files, through the log's own format (`wal::format`):
//! checkpoints and `verify` never open the log (whose recovery cuts torn tails), so they can run beside a live
//! collector.

use std::io;
use std::path::Path;

use crate::wal::format::{self, HEADER_LEN, Header, HeaderError, SegmentFile};

use super::{IntegrityError, io_err};

/// `*.seg` files in `dir`, by name (which sorts by first seq); none when `dir` does not exist.
pub(super) fn list_segment_files(dir: &Path) -> Result<Vec<SegmentFile>, IntegrityError> {
    match format::list_segment_files(dir) {
        Ok(files) => Ok(files),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

#[derive(Debug)]
pub(super) struct ScanProblem {
    pub offset: u64,
    pub detail: String,
    /// The bytes end inside a record (or header): truncation, or a write in progress.
    pub incomplete: bool,
}

#[derive(Debug)]
pub(super) struct SegScan {
    pub header: Option<Header>,
    /// The seq after the last intact record.
    pub next_seq: u64,
    /// The chain hash after the last intact record (the start hash when none).
    pub end_hash: [u8; 32],
    /// Where the last intact record ends.
    pub end_offset: u64,
    /// The chain hash after each record, as (seq after it, hash).
    pub hashes_at: Vec<(u64, [u8; 32])>,
    pub problem: Option<ScanProblem>,
}

/// Walks one segment's bytes (the format of `wal::format`): header, then records (checksum, seq, chain hash), up
/// to the end or, with `stop`, the record with that seq.
pub(super) fn scan_segment(b: &[u8], stop: Option<u64>) -> SegScan {
    let mut scan = SegScan {
        header: None,
        next_seq: 0,
        end_hash: [0; 32],
        end_offset: 0,
        hashes_at: Vec::new(),
        problem: None,
    };
    let fail = |offset: usize, detail: String, incomplete: bool| {
        Some(ScanProblem {
            offset: offset as u64,
            detail,
            incomplete,
        })
    };
    let Some(h) = b.first_chunk::<{ HEADER_LEN as usize }>() else {
        scan.problem = fail(
            0,
            format!("{} bytes, shorter than a segment header", b.len()),
            true,
        );
        return scan;
    };
    let header = match format::decode_header(h) {
        Ok(h) => h,
        Err(HeaderError::BadMagic) => {
            scan.problem = fail(0, "not a write-ahead log segment (bad magic)".into(), false);
            return scan;
        }
        Err(e @ HeaderError::Checksum) => {
            scan.problem = fail(0, e.as_str().into(), false);
            return scan;
        }
    };
    scan.header = Some(header);
    scan.next_seq = header.first_seq;
    scan.end_hash = header.start_hash;
    scan.end_offset = HEADER_LEN;
    let mut off = HEADER_LEN as usize;
    while off < b.len() && stop != Some(scan.next_seq) {
        let rec = match format::record_at(b, off) {
            Ok(r) => r,
            Err(bad) => {
                scan.problem = fail(off, bad.to_string(), bad.incomplete());
                return scan;
            }
        };
        if !rec.crc_matches() {
            scan.problem = fail(
                off,
                format!("record checksum mismatch (seq {})", scan.next_seq),
                false,
            );
            return scan;
        }
        let seq = rec.prefix.seq;
        if seq != scan.next_seq {
            scan.problem = fail(
                off,
                format!("record has seq {seq}, expected {}", scan.next_seq),
                false,
            );
            return scan;
        }
        let hash = format::chain_hash(&scan.end_hash, seq, rec.payload);
        if hash[..] != *rec.hash {
            scan.problem = fail(off, format!("hash chain broken at seq {seq}"), false);
            return scan;
        }
        scan.end_hash = hash;
        scan.next_seq += 1;
        scan.end_offset = rec.end as u64;
        scan.hashes_at.push((scan.next_seq, hash));
        off = rec.end;
    }
    scan
}
