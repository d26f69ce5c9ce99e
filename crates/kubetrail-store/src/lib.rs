//! Durable, tamper-evident storage of audit events: the write-ahead log ([`Wal`]: segmented, checksummed,
//! hash-chained and group-committed, with named reader cursors and a disk budget; its segment format, which
//! `integrity` reads too, is the crate-private `wal::format`) and the stored-event record
//! ([`EventRecord`]) every reader decodes from it; the Parquet partitions the log is converted into
//! ([`columnar`]); signed checkpoints and `verify` over all of it ([`integrity`]); and retention classes, legal
//! holds and the deletion of expired partitions ([`retention`]). Querying is `kubetrail-engine`'s. It does no
//! networking and spawns nothing: it is plain synchronous file IO, and callers move it off async executors.

pub mod columnar;
pub mod integrity;
pub mod record;
pub mod retention;
pub mod wal;

pub use columnar::{
    ColumnarError, ColumnarOptions, ColumnarWriter, CompactStats, FlushStats, PartitionFile,
    list_files,
};
pub use integrity::{
    Checkpoint, Deletion, IntegrityError, IntegrityReport, Problem, ProblemKind, PublicKey, Signer,
    verify_store, write_checkpoint,
};
pub use record::{EventRecord, RecordError};
pub use wal::{
    Cursor, MAX_PAYLOAD_BYTES, Recovery, Usage, VerifyReport, Wal, WalError, WalOptions, WalReader,
};
