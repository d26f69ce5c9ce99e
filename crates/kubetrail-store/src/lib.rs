//! Durable, tamper-evident storage of audit events. It does no networking and spawns nothing: it is plain
//! synchronous file IO, and callers move it off async executors. Querying is `kubetrail-engine`'s.
//!
//! - [`wal`]: the write-ahead log ([`Wal`]: segmented, checksummed, hash-chained and group-committed, with named
//!   reader cursors and a disk budget); its segment format (constants, header and record encoding, chain
//!   hashing, segment file names) is the crate-private `wal::format`, which `integrity` reads too;
//! - [`record`]: the stored-event record ([`EventRecord`]) every reader decodes from the log;
//! - [`columnar`]: the Parquet partitions the log is converted into, its rows read from
//!   `kubetrail_model::Event` (modules `schema`, `rows`, `files`, `writer`, `compact`);
//! - [`integrity`]: signed checkpoints and `verify` over all of it (modules `key`, `checkpoint`, `fileset`,
//!   `scan`, `write`, `verify`);
//! - [`retention`]: retention classes, legal holds and the deletion of expired partitions.

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
