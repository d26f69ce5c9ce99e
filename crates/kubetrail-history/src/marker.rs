//! kubetrail's redaction markers (`kubetrail-redacted:len=N:hmac=F`, written by `kubetrail-policy`): found in
//! strings so that a change never shows a marker's text or its fingerprint. The shape is checked here rather
//! than by depending on the policy crate, which would bring the whole redactor (and its HMAC stack) into a
//! crate that only needs to recognise its output.

use std::borrow::Cow;

/// Every marker starts so.
const PREFIX: &str = "kubetrail-redacted:len=";
/// Between the length and the fingerprint.
const HMAC: &str = ":hmac=";
/// Characters of the fingerprint (16 bytes, base64url without padding).
const FINGERPRINT: usize = 22;

/// The first marker at or after byte `from` of `s`: its byte range and the length it records (`None` when
/// the digits overflow).
pub(crate) fn find(s: &str, from: usize) -> Option<(usize, usize, Option<u64>)> {
    let bytes = s.as_bytes();
    let mut at = from;
    while let Some(i) = s
        .get(at..)
        .and_then(|rest| rest.find(PREFIX))
        .map(|i| i + at)
    {
        let digits_at = i + PREFIX.len();
        let digits = bytes[digits_at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let hmac_at = digits_at + digits;
        let end = hmac_at + HMAC.len() + FINGERPRINT;
        if digits > 0
            && end <= bytes.len()
            && &bytes[hmac_at..hmac_at + HMAC.len()] == HMAC.as_bytes()
            && bytes[hmac_at + HMAC.len()..end]
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Some((i, end, s[digits_at..hmac_at].parse().ok()));
        }
        at = i + 1;
    }
    None
}

/// `Some(len)` when `s` is exactly one marker.
pub(crate) fn exact(s: &str) -> Option<Option<u64>> {
    match find(s, 0) {
        Some((0, end, len)) if end == s.len() => Some(len),
        _ => None,
    }
}

/// Whether `s` holds a marker anywhere.
pub(crate) fn contains(s: &str) -> bool {
    find(s, 0).is_some()
}

/// `s` with every marker replaced by `with`.
pub(crate) fn replace<'a>(s: &'a str, with: &str) -> Cow<'a, str> {
    let Some(first) = find(s, 0) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    let mut next = Some(first);
    while let Some((start, end, _)) = next {
        out.push_str(&s[at..start]);
        out.push_str(with);
        at = end;
        next = find(s, end);
    }
    out.push_str(&s[at..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "kubetrail-redacted:len=7:hmac=AAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn recognises_exactly_the_markers_shape() {
        assert_eq!(exact(M), Some(Some(7)));
        assert_eq!(exact(&format!("x{M}")), None);
        assert!(contains(&format!("postgres://u:{M}@db/app")));
        assert!(!contains("kubetrail-redacted:len=7:hmac=short"));
        assert!(!contains(
            "kubetrail-redacted:len=:hmac=AAAAAAAAAAAAAAAAAAAAAA"
        ));
        assert!(!contains(
            "kubetrail-redacted:len=7:hmac=AAAAAAAAAAAAAAAAAAAAA!"
        ));
        let huge = "kubetrail-redacted:len=99999999999999999999999:hmac=AAAAAAAAAAAAAAAAAAAAAA";
        assert_eq!(exact(huge), Some(None), "a marker whose length overflows");
    }

    #[test]
    fn replaces_every_marker() {
        let s = format!("a{M}b{M}c kubetrail-redacted:len=1");
        assert_eq!(replace(&s, "[r]"), "a[r]b[r]c kubetrail-redacted:len=1");
        assert!(matches!(replace("plain", "[r]"), Cow::Borrowed("plain")));
    }
}
