//! The audit event model every other part of kubetrail reads.
//!
//! Owns the `audit.k8s.io/v1` (and `v1beta1`) `Event`, parsed typed and borrowed from the input bytes, with
//! `requestObject`/`responseObject` kept as raw JSON until something needs them; the request [`Attributes`]
//! that audit policies and rules match on; and the decoding of inputs (JSON lines, arrays, `EventList`s and
//! the EKS, GKE and AKS export envelopes) into event records. Pure: no IO, no async, total on any input.

mod borrow;
pub mod decode;
mod event;
pub mod principal;

pub use decode::{DecodeError, Envelope, Location, Record, decode_value};
pub use event::{
    Attributes, EVENT_KEYS, Event, Level, ObjectReference, ParseError, ResponseStatus, Stage,
    UserInfo,
};
pub use principal::Principal;
