//! Which proxy a request goes through: [`Proxy`], the environment's settings ([`ProxyEnv`]) and `NO_PROXY`
//! matching ([`no_proxy_matches`]). The rules are described in [`crate::http`]'s module doc.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use hyper::http::HeaderValue;

use crate::Error;

/// The proxy of an [`HttpClient`](super::HttpClient).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Proxy {
    /// `https_proxy`/`HTTPS_PROXY` for https:// targets, `http_proxy`/`HTTP_PROXY` for http:// ones, unless
    /// `no_proxy`/`NO_PROXY` names the target.
    #[default]
    FromEnv,
    /// Connect directly, whatever the environment says.
    None,
    /// Every request through this proxy, `http://[user:password@]host[:port]` (no `NO_PROXY`).
    Url(String),
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proxy::FromEnv => f.write_str("FromEnv"),
            Proxy::None => f.write_str("None"),
            Proxy::Url(url) => f.debug_tuple("Url").field(&super::redact_url(url)).finish(),
        }
    }
}

impl Proxy {
    /// The proxy settings of an environment, read through `lookup` (`|name| std::env::var(name).ok()` for the
    /// process's own). An empty variable counts as unset; the lowercase one wins over the uppercase one.
    pub fn from_env_vars(lookup: impl Fn(&str) -> Option<String>) -> ProxyEnv {
        let var = |lower: &'static str, upper: &'static str| {
            [lower, upper].into_iter().find_map(|name| {
                lookup(name)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .map(|v| (name, v))
            })
        };
        ProxyEnv {
            https: var("https_proxy", "HTTPS_PROXY"),
            http: var("http_proxy", "HTTP_PROXY"),
            no_proxy: var("no_proxy", "NO_PROXY").map(|(_, v)| v),
        }
    }

    /// The proxy for `http(s)://host:port`: its URL and where it was set, or `None` to connect directly.
    pub(crate) fn route(
        &self,
        https: bool,
        host: &str,
        port: u16,
    ) -> Result<Option<ProxyRoute>, Error> {
        match self {
            Proxy::None => Ok(None),
            Proxy::Url(url) => ProxyRoute::parse(url, "the proxy setting").map(Some),
            Proxy::FromEnv => {
                let env = Proxy::from_env_vars(|name| std::env::var(name).ok());
                match env.proxy_for(https, host, port) {
                    Some((var, url)) => ProxyRoute::parse(url, var).map(Some),
                    None => Ok(None),
                }
            }
        }
    }
}

/// The proxy variables of an environment (see [`Proxy::from_env_vars`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    https: Option<(&'static str, String)>,
    http: Option<(&'static str, String)>,
    no_proxy: Option<String>,
}

impl fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<(&'static str, String)>| {
            v.as_ref()
                .map(|(name, url)| format!("{name}={}", super::redact_url(url)))
        };
        f.debug_struct("ProxyEnv")
            .field("https", &shown(&self.https))
            .field("http", &shown(&self.http))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

impl ProxyEnv {
    /// The proxy for `http(s)://host:port`, as (the variable that set it, its value), or `None` when there is
    /// none for the scheme or `NO_PROXY` names the target.
    pub fn proxy_for(&self, https: bool, host: &str, port: u16) -> Option<(&'static str, &str)> {
        let (var, url) = if https { &self.https } else { &self.http }.as_ref()?;
        if let Some(no_proxy) = &self.no_proxy
            && no_proxy_matches(no_proxy, host, port)
        {
            return None;
        }
        Some((var, url.as_str()))
    }
}

/// Whether a `NO_PROXY` list names `host` (a name or an IP address, brackets optional) on `port`. Entries are
/// separated by commas or white space: `*` (everything), a domain (`example.com`, `.example.com` and
/// `*.example.com` all match `example.com` and `a.example.com`, not `notexample.com`; case-insensitive), an
/// IP address (compared as an address, not a name) or a CIDR block (`10.0.0.0/8`, `fd00::/8`), each with an
/// optional `:port` (`[::1]:8080` for IPv6) that restricts it to that port.
pub fn no_proxy_matches(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    no_proxy
        .split([',', ' ', '\t', '\n'])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .any(|entry| {
            if entry == "*" {
                return true;
            }
            let (pattern, entry_port) = split_port(entry);
            if entry_port.is_some_and(|p| p != port) {
                return false;
            }
            if let Some((net, bits)) = pattern.split_once('/') {
                return match (host_ip, net.parse::<IpAddr>(), bits.parse::<u8>()) {
                    (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                    _ => false,
                };
            }
            if let Ok(ip) = pattern.parse::<IpAddr>() {
                return host_ip == Some(ip);
            }
            let domain = pattern
                .trim_start_matches('*')
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_ascii_lowercase();
            !domain.is_empty()
                && host_ip.is_none()
                && (host == domain
                    || host
                        .strip_suffix(&domain)
                        .is_some_and(|rest| rest.ends_with('.')))
        })
}

/// `host:port`, `[v6]:port`, `[v6]` or a bare pattern (an IPv6 address has more than one colon).
fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, tail)) => (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (entry, None),
        };
    }
    match entry.split_once(':') {
        Some((h, p)) if !p.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// A parsed proxy: where to connect, how to name it in messages, and its credentials.
#[derive(Clone)]
pub(crate) struct ProxyRoute {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `http://host:port`, never with credentials.
    pub(crate) shown: String,
    /// `Proxy-Authorization: Basic ...`, a sensitive header value.
    pub(crate) auth: Option<HeaderValue>,
}

impl ProxyRoute {
    /// `[http://][user[:password]@]host[:port][/]`; `origin` names the setting in errors.
    pub(crate) fn parse(url: &str, origin: &str) -> Result<ProxyRoute, Error> {
        let shown_input = super::redact_url(url);
        let bad = |why: &str| Error::Config(format!("{origin}: `{shown_input}` {why}"));
        let url = url.trim();
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(bad(
                    "is an HTTPS proxy, which kubetrail does not support: give the proxy's http:// URL \
                     (an https:// target is still TLS end to end through it)",
                ));
            }
            Some((scheme, _)) => {
                return Err(bad(&format!(
                    "is a {scheme} proxy: only http:// proxies are supported"
                )));
            }
            None => url,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let parsed: hyper::http::uri::Authority = hostport
            .parse()
            .map_err(|_| bad("is not a proxy URL: give http://host:port"))?;
        let host = parsed.host().trim_matches(['[', ']']).to_string();
        if host.is_empty() {
            return Err(bad("names no host"));
        }
        let port = parsed.port_u16().unwrap_or(80);
        let auth = match userinfo {
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let credentials = format!("{}:{}", percent_decode(user), percent_decode(password));
                let mut value = HeaderValue::from_str(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                ))
                .map_err(|_| bad("has credentials that are not valid in a header"))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(ProxyRoute {
            shown: format!("http://{hostport}"),
            host,
            port,
            auth,
        })
    }
}

/// `%XX` escapes of a URL's user info decoded (anything malformed is kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_lists() {
        for (list, host, port, want) in [
            ("*", "anything.example", 443, true),
            ("", "example.com", 443, false),
            ("example.com", "example.com", 443, true),
            ("example.com", "a.example.com", 443, true),
            (".example.com", "a.example.com", 443, true),
            (".example.com", "example.com", 443, true),
            ("*.example.com", "a.b.example.com", 443, true),
            ("example.com", "notexample.com", 443, false),
            ("example.com", "example.com.evil.net", 443, false),
            ("EXAMPLE.com", "a.Example.COM", 443, true),
            ("example.com", "example.com.", 443, true),
            ("a.com, b.com,c.com", "x.b.com", 443, true),
            ("a.com b.com", "b.com", 443, true),
            ("localhost", "127.0.0.1", 443, false), // no automatic loopback: curl's rule
            ("127.0.0.1", "127.0.0.1", 8123, true),
            ("127.0.0.1", "127.0.0.2", 8123, false),
            ("10.0.0.0/8", "10.1.2.3", 443, true),
            ("10.0.0.0/8", "11.1.2.3", 443, false),
            ("10.0.0.0/8", "ten.example", 443, false),
            ("0.0.0.0/0", "192.0.2.1", 443, true),
            ("::1", "[::1]", 443, true),
            ("[::1]", "::1", 443, true),
            ("0:0::1", "::1", 443, true),
            ("fd00::/8", "[fd00:ec2::254]", 80, true),
            ("fd00::/8", "10.0.0.1", 80, false),
            ("example.com:9200", "es.example.com", 9200, true),
            ("example.com:9200", "es.example.com", 443, false),
            ("[::1]:8080", "::1", 8080, true),
            ("[::1]:8080", "::1", 8081, false),
            ("10.0.0.1:80", "10.0.0.1", 80, true),
            ("10.0.0.1:80", "10.0.0.1", 81, false),
            ("1.2.3.4", "1.2.3.4.example.com", 443, false),
            (".", "example.com", 443, false),
        ] {
            assert_eq!(
                no_proxy_matches(list, host, port),
                want,
                "NO_PROXY={list:?} {host}:{port}"
            );
        }
    }

    #[test]
    fn environment_variables() {
        let env = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Proxy::from_env_vars(move |name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
        };
        let e = env(&[
            ("HTTPS_PROXY", "http://upper:3128"),
            ("https_proxy", "http://lower:3128"),
            ("HTTP_PROXY", "http://plain:8080"),
            ("NO_PROXY", "internal.example,10.0.0.0/8"),
        ]);
        assert_eq!(
            e.proxy_for(true, "es.example.com", 443),
            Some(("https_proxy", "http://lower:3128"))
        );
        assert_eq!(
            e.proxy_for(false, "ch.example.com", 8123),
            Some(("HTTP_PROXY", "http://plain:8080"))
        );
        assert_eq!(e.proxy_for(true, "ch.internal.example", 443), None);
        assert_eq!(e.proxy_for(false, "10.2.3.4", 8123), None);
        // An empty variable is unset; the lowercase NO_PROXY wins too.
        let e = env(&[
            ("https_proxy", ""),
            ("HTTPS_PROXY", "http://upper:3128"),
            ("no_proxy", "a.example"),
            ("NO_PROXY", "*"),
        ]);
        assert_eq!(
            e.proxy_for(true, "b.example", 443),
            Some(("HTTPS_PROXY", "http://upper:3128"))
        );
        assert_eq!(e.proxy_for(true, "a.example", 443), None);
        assert_eq!(e.proxy_for(false, "b.example", 80), None); // no http proxy set
        assert_eq!(env(&[]), ProxyEnv::default());
    }

    #[test]
    fn proxy_urls() {
        let r = ProxyRoute::parse("http://proxy.corp:3128", "HTTPS_PROXY").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("proxy.corp", 3128));
        assert_eq!(r.shown, "http://proxy.corp:3128");
        assert!(r.auth.is_none());
        let r = ProxyRoute::parse("proxy.corp", "HTTPS_PROXY").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("proxy.corp", 80));
        let r = ProxyRoute::parse("http://[::1]:3128/", "x").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("::1", 3128));
        let r = ProxyRoute::parse("http://al%40ice:p%3Ass@proxy:3128", "x").unwrap();
        assert_eq!(r.shown, "http://proxy:3128");
        // base64("al@ice:p:ss")
        assert_eq!(r.auth.unwrap().to_str().unwrap(), "Basic YWxAaWNlOnA6c3M=");
        for (url, why) in [
            ("https://proxy:3128", "HTTPS proxy"),
            ("socks5://proxy:1080", "socks5 proxy"),
            ("http://", "not a proxy URL"),
            ("http://u:hunter2@", "not a proxy URL"),
        ] {
            let e = ProxyRoute::parse(url, "HTTPS_PROXY")
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.contains(why) && e.starts_with("HTTPS_PROXY: ") && !e.contains("hunter2"),
                "{url}: {e}"
            );
        }
    }

    #[test]
    fn debug_hides_proxy_credentials() {
        let shown = format!(
            "{:?} {:?}",
            Proxy::Url("http://u:hunter2@proxy:3128".into()),
            Proxy::from_env_vars(
                |n| (n == "https_proxy").then(|| "http://u:hunter2@proxy:3128".to_string())
            )
        );
        assert!(
            !shown.contains("hunter2") && shown.contains("proxy:3128"),
            "{shown}"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%zz%4"), "a b%zz%4");
    }
}
