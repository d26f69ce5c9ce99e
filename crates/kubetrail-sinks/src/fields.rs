//! What every sink reads out of an audit event: the parsed event, its time, the authorization decision and
//! whether the request succeeded.

use kubetrail_model::Event;

use crate::Record;

/// A record's event, parsed.
pub(crate) struct Fields<'a> {
    pub ev: Event<'a>,
    /// When kube-apiserver received the request (`requestReceivedTimestamp`, `v1beta1`'s `timestamp`, the stage
    /// timestamp), else when kubetrail received the event.
    pub time: jiff::Timestamp,
}

/// Whether the request did what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Failure,
    /// No answer yet (stage `RequestReceived`) and no authorization decision against it.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Success => "success",
            Verdict::Failure => "failure",
            Verdict::Unknown => "unknown",
        }
    }
}

impl<'a> Fields<'a> {
    /// Parses a record's event; the error says why it is not an audit event (it is dead for every sink).
    pub fn parse(r: &Record<'a>) -> Result<Fields<'a>, String> {
        let ev = Event::parse(r.event)
            .map_err(|e| format!("not an audit event: {}", crate::shorten(&e.0, 200)))?;
        let time = ev.received_at().unwrap_or_else(|| {
            jiff::Timestamp::from_microsecond(r.received_us).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        });
        Ok(Fields { ev, time })
    }

    fn annotation(&self, key: &str) -> &str {
        self.ev
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map_or("", |v| v.as_ref())
    }

    /// `authorization.k8s.io/decision`: `allow`, `forbid` or empty.
    pub fn decision(&self) -> &str {
        self.annotation("authorization.k8s.io/decision")
    }

    /// `authorization.k8s.io/reason`.
    pub fn reason(&self) -> &str {
        self.annotation("authorization.k8s.io/reason")
    }

    /// Failure when authorization forbade it or the answer was 400 or above; success with an answer below 400.
    pub fn success(&self) -> Verdict {
        match (self.decision(), self.ev.code()) {
            ("forbid", _) => Verdict::Failure,
            (_, Some(c)) if c >= 400 => Verdict::Failure,
            (_, Some(c)) if c >= 100 => Verdict::Success,
            _ => Verdict::Unknown,
        }
    }

    /// The time in microseconds since the epoch.
    pub fn time_us(&self) -> i64 {
        self.time.as_microsecond()
    }

    /// `resource` or `resource/subresource`; for a non-resource request, the path.
    pub fn resource_path(&self) -> String {
        match &self.ev.object_ref {
            Some(o) if o.subresource.is_empty() => o.resource.to_string(),
            Some(o) => format!("{}/{}", o.resource, o.subresource),
            None => self
                .ev
                .request_uri
                .split('?')
                .next()
                .unwrap_or("")
                .to_string(),
        }
    }

    pub fn impersonated(&self) -> &str {
        self.ev
            .impersonated_user
            .as_ref()
            .map_or("", |u| u.username.as_ref())
    }

    pub fn user_agent(&self) -> &str {
        self.ev.user_agent.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(event: &str) -> Fields<'_> {
        Fields::parse(&Record {
            id: "x",
            cluster: "c",
            received_us: 7,
            event,
        })
        .unwrap()
    }

    #[test]
    fn success_from_decision_and_code() {
        let f = fields(
            r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete","annotations":{"authorization.k8s.io/decision":"forbid"},"responseStatus":{"code":200}}"#,
        );
        assert_eq!(f.success(), Verdict::Failure);
        let f = fields(
            r#"{"level":"Metadata","auditID":"a","stage":"ResponseComplete","responseStatus":{"code":404}}"#,
        );
        assert_eq!(f.success(), Verdict::Failure);
        let f = fields(
            r#"{"level":"Metadata","auditID":"a","stage":"ResponseStarted","responseStatus":{"code":101}}"#,
        );
        assert_eq!(f.success(), Verdict::Success);
        let f = fields(r#"{"level":"Metadata","auditID":"a","stage":"RequestReceived"}"#);
        assert_eq!(f.success(), Verdict::Unknown);
        assert_eq!(f.time_us(), 7, "falls back to when kubetrail received it");
    }

    #[test]
    fn not_an_event_says_why() {
        let e = Fields::parse(&Record {
            id: "x",
            cluster: "c",
            received_us: 0,
            event: r#"{"auditID":"a"}"#,
        })
        .err()
        .unwrap();
        assert!(e.starts_with("not an audit event: missing field"), "{e}");
    }
}
