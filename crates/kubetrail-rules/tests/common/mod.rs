//! What the peer-suite tests share: the built-in pack, and events as the collector stores them (decoded from
//! any envelope as `kubetrail import` does, then redacted), since detection reads the stored event.

#![allow(dead_code)]

use kubetrail_detect::{Alert, Config, Engine, RuleSet};
use kubetrail_policy::{RedactionKey, Redactor};

pub fn engine() -> Engine {
    let mut set = RuleSet::new();
    for f in kubetrail_rules::builtin() {
        set.add_file(f.name, f.yaml).unwrap();
    }
    Engine::new(&set, Config::default()).unwrap()
}

/// The native events one input value holds, redacted as the pipeline stores them; values that are not
/// audit events give none.
pub fn stored(value: &str) -> Vec<String> {
    let redactor = Redactor::new(RedactionKey::from_bytes([7; 32]));
    let mut out = Vec::new();
    kubetrail_model::decode_value(value, &mut |r| {
        let Ok(r) = r else { return };
        match kubetrail_model::Event::parse(&r.json) {
            Ok(e) => out.push(redactor.redact(&e, &r.json).0.as_str().to_string()),
            Err(_) => out.push(r.json.to_string()),
        }
    });
    out
}

/// Every alert a fresh engine raises over these stored events.
pub fn alerts(events: &[String]) -> Vec<Alert> {
    let mut e = engine();
    let mut out = Vec::new();
    for ev in events {
        let _ = e.process(ev, &mut out);
    }
    e.flush(&mut out);
    out
}
