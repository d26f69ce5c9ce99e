//! A fake pipeline for the server tests.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Mutex;

use bytes::Bytes;
use kubetrail_server::{Accepted, Ingest, Peer, Rejected};

/// Records every body it is handed; answers with `answer` when set, otherwise accepts one event per
/// `"auditID"` in the body.
#[derive(Debug, Default)]
pub struct FakeIngest {
    pub seen: Mutex<Vec<(Bytes, Peer)>>,
    pub answer: Mutex<Option<Rejected>>,
    pub not_ready: Mutex<Option<String>>,
}

impl FakeIngest {
    pub fn answer(&self, answer: Option<Rejected>) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn seen(&self) -> Vec<(Bytes, Peer)> {
        self.seen.lock().unwrap().clone()
    }
}

impl Ingest for FakeIngest {
    fn ingest(
        &self,
        body: Bytes,
        peer: Peer,
    ) -> impl Future<Output = Result<Accepted, Rejected>> + Send {
        let answer = self.answer.lock().unwrap().clone();
        let events = body.windows(9).filter(|w| w == b"\"auditID\"").count();
        self.seen.lock().unwrap().push((body, peer));
        async move {
            match answer {
                Some(rejected) => Err(rejected),
                None => Ok(Accepted {
                    events,
                    duplicates: 0,
                    skipped: 0,
                }),
            }
        }
    }

    fn ready(&self) -> Result<(), String> {
        match &*self.not_ready.lock().unwrap() {
            Some(reason) => Err(reason.clone()),
            None => Ok(()),
        }
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let events = prometheus_client::metrics::counter::Counter::<u64>::default();
        events.inc_by(7);
        registry.register("fake_pipeline_events", "The fake pipeline's events", events);
    }
}

/// An EventList as the apiserver's webhook backend sends it (items carry no kind/apiVersion).
pub const EVENT_LIST: &str = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[
{"level":"Metadata","auditID":"2b4c6e1a-0d3f-4a7b-9c1e-5f6a7b8c9d0e","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/secrets/db","verb":"get","user":{"username":"alice","groups":["system:authenticated"]},"sourceIPs":["10.0.0.7"],"objectRef":{"resource":"secrets","namespace":"default","name":"db","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2024-05-01T10:00:00.000000Z","stageTimestamp":"2024-05-01T10:00:00.004000Z"},
{"level":"Metadata","auditID":"7e8f9a0b-1c2d-4e3f-8a9b-0c1d2e3f4a5b","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/pods","verb":"list","user":{"username":"system:serviceaccount:default:ci","groups":["system:serviceaccounts"]},"sourceIPs":["10.0.0.8"],"objectRef":{"resource":"pods","namespace":"default","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2024-05-01T10:00:01.000000Z","stageTimestamp":"2024-05-01T10:00:01.002000Z"}
]}"#;

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}
