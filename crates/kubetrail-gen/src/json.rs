//! A small streaming JSON writer: keys in the order written (as Go's encoder writes structs), no
//! intermediate values, commas handled by the writer.

use std::io::Write as _;

#[derive(Debug)]
pub(crate) struct Jw<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Jw<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Jw<'a> {
        Jw { buf, first: true }
    }

    /// Writes one top-level object.
    pub(crate) fn object(buf: &'a mut Vec<u8>, f: impl FnOnce(&mut Jw<'a>)) {
        let mut w = Jw::new(buf);
        w.open(b'{');
        f(&mut w);
        w.close(b'}');
    }

    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }

    fn open(&mut self, c: u8) {
        self.buf.push(c);
        self.first = true;
    }

    fn close(&mut self, c: u8) {
        self.buf.push(c);
        self.first = false;
    }

    fn key(&mut self, k: &str) {
        self.sep();
        escape(self.buf, k);
        self.buf.push(b':');
    }

    pub(crate) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        escape(self.buf, v);
    }

    /// Writes the field only when `v` is not empty (Go's `omitempty`).
    pub(crate) fn opt(&mut self, k: &str, v: &str) {
        if !v.is_empty() {
            self.str(k, v);
        }
    }

    pub(crate) fn num(&mut self, k: &str, v: i64) {
        self.key(k);
        let _ = write!(self.buf, "{v}");
    }

    pub(crate) fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.buf
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    /// Writes `raw`, which must already be JSON.
    pub(crate) fn raw(&mut self, k: &str, raw: &[u8]) {
        self.key(k);
        self.buf.extend_from_slice(raw);
    }

    /// Lets `f` write the value straight into the buffer; it must write exactly one JSON value.
    pub(crate) fn raw_with(&mut self, k: &str, f: impl FnOnce(&mut Vec<u8>)) {
        self.key(k);
        f(self.buf);
    }

    pub(crate) fn obj(&mut self, k: &str, f: impl FnOnce(&mut Self)) {
        self.key(k);
        self.open(b'{');
        f(self);
        self.close(b'}');
    }

    pub(crate) fn arr(&mut self, k: &str, f: impl FnOnce(&mut Self)) {
        self.key(k);
        self.open(b'[');
        f(self);
        self.close(b']');
    }

    /// An array of strings.
    pub(crate) fn strs(&mut self, k: &str, vs: &[&str]) {
        self.arr(k, |w| {
            for v in vs {
                w.el_str(v);
            }
        });
    }

    /// An object element of the enclosing array.
    pub(crate) fn el_obj(&mut self, f: impl FnOnce(&mut Self)) {
        self.sep();
        self.open(b'{');
        f(self);
        self.close(b'}');
    }

    /// A string element of the enclosing array.
    pub(crate) fn el_str(&mut self, v: &str) {
        self.sep();
        escape(self.buf, v);
    }
}

/// Writes `s` as a JSON string.
pub(crate) fn escape(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                buf.extend_from_slice(&bytes[start..i]);
                let _ = write!(buf, "\\u{b:04x}");
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(esc);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_objects_with_commas() {
        let mut buf = Vec::new();
        Jw::object(&mut buf, |w| {
            w.str("a", "x\"y\\\n\u{1}");
            w.obj("m", |_| {});
            w.arr("l", |w| {
                w.el_obj(|w| w.num("n", -3));
                w.el_str("s");
            });
            w.bool("b", true);
            w.opt("e", "");
        });
        let s = String::from_utf8(buf).unwrap();
        assert_eq!(
            s,
            r#"{"a":"x\"y\\\n\u0001","m":{},"l":[{"n":-3},"s"],"b":true}"#
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["a"], "x\"y\\\n\u{1}");
    }
}
