//! Just enough DER to read an X.509 certificate's subject common name and the end of its validity. The
//! certificate has already been verified or loaded by rustls; this walk is still total on any input (`None`,
//! never a panic).

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;
/// 2.5.4.3, id-at-commonName.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One TLV: (tag, contents, what follows). Definite lengths only, as DER requires.
fn next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes.iter().fold(0usize, |l, &b| (l << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = next(input)?;
    (t == tag).then_some((contents, rest))
}

/// The certificate's validity and what follows it (subject, key, extensions).
fn validity(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (cert, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let (tag, _, mut rest) = next(tbs)?;
    if tag == VERSION {
        (_, rest) = expect(rest, INTEGER)?;
    } else if tag != INTEGER {
        return None;
    }
    (_, rest) = expect(rest, SEQUENCE)?; // signature algorithm
    (_, rest) = expect(rest, SEQUENCE)?; // issuer
    expect(rest, SEQUENCE)
}

/// The end of the certificate's validity (`notAfter`), in seconds since the Unix epoch.
pub(crate) fn not_after(cert: &[u8]) -> Option<i64> {
    let (validity, _) = validity(cert)?;
    let (_, _, rest) = next(validity)?; // notBefore
    let (tag, time, _) = next(rest)?;
    // UTCTime YYMMDDHHMMSSZ (years 1950-2049, RFC 5280), GeneralizedTime YYYYMMDDHHMMSSZ: ASCII digits and a
    // final Z, checked before anything is cut.
    let (last, body) = time.split_last()?;
    if *last != b'Z' || !body.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let digits = match tag {
        0x17 if text.len() == 12 => {
            let century = if text < "50" { "20" } else { "19" };
            format!("{century}{text}")
        }
        0x18 if text.len() == 14 => text.to_string(),
        _ => return None,
    };
    let d = |r: std::ops::Range<usize>| &digits[r];
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        d(0..4),
        d(4..6),
        d(6..8),
        d(8..10),
        d(10..12),
        d(12..14)
    );
    Some(rfc3339.parse::<jiff::Timestamp>().ok()?.as_second())
}

/// The subject's common name; with several, the last, as Go's `pkix.Name` (and so Kubernetes) reads it.
pub(crate) fn subject_common_name(cert: &[u8]) -> Option<String> {
    let (_, rest) = validity(cert)?;
    let (mut subject, _) = expect(rest, SEQUENCE)?;
    let mut cn = None;
    while !subject.is_empty() {
        let (mut rdn, after) = expect(subject, SET)?;
        subject = after;
        while !rdn.is_empty() {
            let (attr, after) = expect(rdn, SEQUENCE)?;
            rdn = after;
            let (oid, value) = expect(attr, OID)?;
            if oid == COMMON_NAME {
                let (tag, value, _) = next(value)?;
                cn = Some(directory_string(tag, value)?);
            }
        }
    }
    cn
}

fn directory_string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String
        0x0c | 0x13 | 0x16 => String::from_utf8(value.to_vec()).ok(),
        // TeletexString: in practice Latin-1
        0x14 => Some(value.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UTF-16BE
        0x1e => {
            if !value.len().is_multiple_of(2) {
                return None;
            }
            let units = value
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_on_garbage() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 0, 0, 0, 0, 1],
            &[0x30, 0x05, 1, 2],
        ] {
            assert_eq!(subject_common_name(input), None);
        }
        let cert = rcgen::generate_simple_self_signed(vec!["a.example".into()]).unwrap();
        let der = cert.cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = subject_common_name(&der[..cut]);
            let _ = not_after(&der[..cut]);
        }
        // A notAfter that is not ASCII (rustls loads such a certificate: it checks the key, not the dates).
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 9, 30);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut odd = params.self_signed(&key).unwrap().der().to_vec();
        let at = odd
            .windows(2)
            .position(|w| w[0] == 0x17 && w[1] == 13)
            .expect("a UTCTime notBefore");
        let t = at + 2 + 13 + 2; // notAfter's value: `26121212123é` (13 bytes, no Z)
        assert_eq!(&odd[t - 2..t], [0x17, 13]);
        odd[t + 11] = 0xc3;
        odd[t + 12] = 0xa9;
        assert_eq!(not_after(&odd), None);
    }

    #[test]
    fn reads_the_end_of_validity_in_both_time_forms() {
        for (year, expected) in [(2031, 1_948_492_800), (2051, 2_579_644_800)] {
            // 2049 and before are UTCTime, 2050 and after GeneralizedTime (RFC 5280).
            let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            params.not_after = rcgen::date_time_ymd(year, 9, 30);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            assert_eq!(not_after(cert.der()), Some(expected), "{year}");
        }
    }

    #[test]
    fn reads_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-audit");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_common_name(cert.der()).as_deref(),
            Some("kube-apiserver-audit")
        );
    }

    #[test]
    fn no_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()), None);
        assert!(crate::client_identity(cert.der()).starts_with("sha256:"));
    }
}
