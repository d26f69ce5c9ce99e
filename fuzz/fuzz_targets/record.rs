//! Write-ahead log record bytes → `EventRecord::decode`.
//!
//! Checks: decoding never panics, and a record that decodes re-encodes to exactly the bytes it came from
//! (`encoded_len` agreeing), so nothing read back from a log is silently altered.

#![no_main]

use kubetrail_store::EventRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(record) = EventRecord::decode(data) else {
        return;
    };
    let mut out = Vec::new();
    record.encode(&mut out);
    assert_eq!(out.len(), record.encoded_len(), "encoded_len disagrees with encode");
    assert_eq!(out, data, "decode then encode changed the record");
    assert_eq!(record.clone().into_owned(), record);
});
