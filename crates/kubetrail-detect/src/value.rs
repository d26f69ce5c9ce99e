//! The values a rule sees: scalars extracted from an event (or computed by enrichment), and the compiled
//! patterns they are matched against.

use std::borrow::Cow;
use std::net::IpAddr;

use regex::Regex;

/// One value found at a field path. Arrays are transparent (each element is a value of the same field);
/// objects and arrays are recorded as [`Val::Complex`] so that `exists` sees them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Cow<'a, str>),
    Complex,
}

impl Val<'_> {
    /// The text a string pattern matches against (`None` for null and objects).
    pub(crate) fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Val::Str(s) => Some(Cow::Borrowed(s)),
            Val::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Val::Num(n) => Some(Cow::Owned(n.to_string())),
            Val::Null | Val::Complex => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn number(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        }
    }
}

/// Lowercases only when needed (most Kubernetes values are lowercase already).
pub(crate) fn lower(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// A piece of a Sigma string value after unescaping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Lit(String),
    /// `*`: any run of characters, possibly empty.
    Star,
    /// `?`: exactly one character.
    One,
}

/// Splits a Sigma string into literals and wildcards. `\*`, `\?` and `\\` are literal; a backslash before
/// anything else is itself literal (Sigma's escaping rules).
pub(crate) fn tokenize(s: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut lit = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&n @ ('*' | '?' | '\\')) => {
                    lit.push(n);
                    chars.next();
                }
                _ => lit.push('\\'),
            },
            '*' | '?' => {
                if !lit.is_empty() {
                    toks.push(Tok::Lit(std::mem::take(&mut lit)));
                }
                let t = if c == '*' { Tok::Star } else { Tok::One };
                // `**` is `*`.
                if !(t == Tok::Star && toks.last() == Some(&Tok::Star)) {
                    toks.push(t);
                }
            }
            c => lit.push(c),
        }
    }
    if !lit.is_empty() {
        toks.push(Tok::Lit(lit));
    }
    toks
}

/// A string pattern, classified so the common shapes avoid the general wildcard matcher.
#[derive(Debug, Clone)]
pub(crate) enum StrPat {
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    /// `*`: any string (not null, not an object).
    Any,
    Glob(Vec<Tok>),
}

impl StrPat {
    pub(crate) fn new(toks: Vec<Tok>) -> StrPat {
        match toks.as_slice() {
            [] => StrPat::Exact("".into()),
            [Tok::Lit(l)] => StrPat::Exact(l.as_str().into()),
            [Tok::Star] => StrPat::Any,
            [Tok::Lit(l), Tok::Star] => StrPat::Prefix(l.as_str().into()),
            [Tok::Star, Tok::Lit(l)] => StrPat::Suffix(l.as_str().into()),
            [Tok::Star, Tok::Lit(l), Tok::Star] => StrPat::Contains(l.as_str().into()),
            _ => StrPat::Glob(toks),
        }
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            StrPat::Exact(p) => s == &**p,
            StrPat::Prefix(p) => s.starts_with(&**p),
            StrPat::Suffix(p) => s.ends_with(&**p),
            StrPat::Contains(p) => s.contains(&**p),
            StrPat::Any => true,
            StrPat::Glob(toks) => glob(toks, s),
        }
    }
}

/// Wildcard matching with one backtrack point (the last `*`): linear in practice, never exponential.
fn glob(toks: &[Tok], s: &str) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(t) = toks.get(p) {
            match t {
                Tok::Star => {
                    star = Some((p + 1, i));
                    p += 1;
                    continue;
                }
                Tok::Lit(l) if s[i..].starts_with(l.as_str()) => {
                    i += l.len();
                    p += 1;
                    continue;
                }
                Tok::One => {
                    if let Some(c) = s[i..].chars().next() {
                        i += c.len_utf8();
                        p += 1;
                        continue;
                    }
                }
                Tok::Lit(_) => {}
            }
        } else if i == s.len() {
            return true;
        }
        match star {
            Some((sp, si)) => match s[si..].chars().next() {
                Some(c) => {
                    let ni = si + c.len_utf8();
                    star = Some((sp, ni));
                    p = sp;
                    i = ni;
                }
                None => return false,
            },
            None => return false,
        }
    }
}

/// An IPv4 or IPv6 network; IPv4-mapped IPv6 addresses match IPv4 networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Net {
    v6: bool,
    bits: u128,
    prefix: u8,
}

impl Net {
    pub(crate) fn parse(s: &str) -> Option<Net> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let ip: IpAddr = addr.trim().parse().ok()?;
        let (v6, bits, max) = match ip {
            IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (true, u128::from(a), 128),
        };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return None;
        }
        Some(Net {
            v6,
            bits: bits & mask(prefix, max),
            prefix,
        })
    }

    pub(crate) fn contains(&self, s: &str) -> bool {
        let Ok(ip) = s.trim().parse::<IpAddr>() else {
            return false;
        };
        let (v6, bits, max) = match ip.to_canonical() {
            IpAddr::V4(a) => (false, u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (true, u128::from(a), 128),
        };
        v6 == self.v6 && bits & mask(self.prefix, max) == self.bits
    }
}

fn mask(prefix: u8, max: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        let all = if max == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all & !((1u128 << (max - prefix)) - 1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// One compiled value of a field check. `Str` patterns are stored lowercased unless `cased`.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Str {
        pat: StrPat,
        cased: bool,
        /// A plain number (`403`, `'403'`) also equals the same number written differently (`403.0`).
        num: Option<f64>,
    },
    Re(Regex),
    Cidr(Net),
    Cmp(CmpOp, f64),
    /// Matches when the field is absent or null.
    Null,
}

/// A value with its text and lowercased text computed at most once, however many patterns test it.
#[derive(Debug)]
pub(crate) struct Prepared<'v, 'a> {
    pub(crate) v: &'v Val<'a>,
    text: std::cell::OnceCell<Option<Cow<'v, str>>>,
    lower: std::cell::OnceCell<Option<Cow<'v, str>>>,
}

impl<'v, 'a> Prepared<'v, 'a> {
    pub(crate) fn new(v: &'v Val<'a>) -> Prepared<'v, 'a> {
        Prepared {
            v,
            text: std::cell::OnceCell::new(),
            lower: std::cell::OnceCell::new(),
        }
    }

    fn text(&self) -> Option<&str> {
        self.text.get_or_init(|| self.v.text()).as_deref()
    }

    fn lower(&self) -> Option<&str> {
        self.lower
            .get_or_init(|| match self.v {
                Val::Str(s) => Some(lower(s)),
                v => v.text().map(|t| Cow::Owned(t.into_owned())),
            })
            .as_deref()
    }
}

impl Pattern {
    /// Whether one value matches. `Null` is decided at the field level.
    pub(crate) fn matches(&self, v: &Val<'_>) -> bool {
        self.matches_prepared(&Prepared::new(v))
    }

    pub(crate) fn matches_prepared(&self, p: &Prepared<'_, '_>) -> bool {
        let v = p.v;
        match self {
            Pattern::Str { pat, cased, num } => {
                if let Val::Num(x) = v {
                    match num {
                        Some(n) => return n == x,
                        // A literal that is not a number never equals a number's text.
                        None if matches!(pat, StrPat::Exact(_)) => return false,
                        None => {}
                    }
                }
                let text = if *cased { p.text() } else { p.lower() };
                text.is_some_and(|t| pat.matches(t))
            }
            Pattern::Re(re) => p.text().is_some_and(|t| re.is_match(t)),
            Pattern::Cidr(net) => v.as_str().is_some_and(|s| net.contains(s)),
            Pattern::Cmp(op, n) => v.number().is_some_and(|x| match op {
                CmpOp::Gt => x > *n,
                CmpOp::Gte => x >= *n,
                CmpOp::Lt => x < *n,
                CmpOp::Lte => x <= *n,
            }),
            Pattern::Null => matches!(v, Val::Null),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ci(s: &str) -> StrPat {
        StrPat::new(tokenize(&s.to_lowercase()))
    }

    #[test]
    fn wildcards_and_escapes() {
        let check = |pat: &str, s: &str, want: bool| {
            assert_eq!(ci(pat).matches(&lower(s)), want, "{pat} vs {s}");
        };
        check("abc", "ABC", true);
        check("a*c", "abbbc", true);
        check("a*c", "abbbd", false);
        check("a?c", "abc", true);
        check("a?c", "ac", false);
        check("*b*", "abc", true);
        check("*", "", true);
        check("a\\*c", "a*c", true);
        check("a\\*c", "abc", false);
        check("a\\?c", "abc", false);
        check("a\\\\c", "a\\c", true);
        check("C:\\Windows", "c:\\windows", true);
        check("*a*b*c", "xxaxxbxxcxc", true);
        check("*a*b*c", "xxaxxbxxcxd", false);
        check("?é?", "aÉb", true);
    }

    #[test]
    fn pattern_shapes() {
        assert!(matches!(ci("abc*"), StrPat::Prefix(_)));
        assert!(matches!(ci("*abc"), StrPat::Suffix(_)));
        assert!(matches!(ci("*abc*"), StrPat::Contains(_)));
        assert!(matches!(ci("**"), StrPat::Any));
        assert!(matches!(ci("a*b"), StrPat::Glob(_)));
    }

    #[test]
    fn cidr_v4_v6() {
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3"));
        assert!(n.contains("::ffff:10.1.2.3"));
        assert!(!n.contains("11.0.0.1"));
        assert!(!n.contains("not an ip"));
        let n = Net::parse("fd00::/8").unwrap();
        assert!(n.contains("fd12:3456::1"));
        assert!(!n.contains("fe80::1"));
        assert!(!n.contains("10.0.0.1"));
        assert!(Net::parse("0.0.0.0/0").unwrap().contains("8.8.8.8"));
        assert!(Net::parse("::/0").unwrap().contains("2001:db8::1"));
        assert!(Net::parse("1.2.3.4").unwrap().contains("1.2.3.4"));
        assert!(Net::parse("1.2.3.4/33").is_none());
        assert!(Net::parse("1.2.3.4/x").is_none());
    }
}
