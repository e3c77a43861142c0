//! Buyer endpoint URLs: `http://host:port/path?query` or `https://...`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A parsed buyer URL. The host is resolved when the exchange starts, not at config load,
/// so that `gavel check` works on a machine that cannot reach the buyers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `Host` header value: host, plus `:port` when not the scheme's default.
    pub host_header: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        // The scheme and host are case-insensitive (RFC 3986 §3.1, §3.2.2): kept lower case,
        // so that one server written two ways is one endpoint.
        let prefix = |p: &str| {
            url.get(..p.len())
                .filter(|head| head.eq_ignore_ascii_case(p))
                .map(|_| &url[p.len()..])
        };
        let (scheme, rest) = if let Some(r) = prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = prefix("https://") {
            (Scheme::Https, r)
        } else {
            return Err(format!("{:?} must start with http:// or https://", url));
        };
        // A fragment belongs to the client and is never sent (RFC 9110 §7.1).
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(format!(
                "{:?}: credentials in URLs are not supported; use headers",
                url
            ));
        }
        let default_port = match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            // [v6]:port
            let (h, rest) = stripped
                .split_once(']')
                .ok_or_else(|| format!("{:?}: bad IPv6 host", url))?;
            let port = match rest.strip_prefix(':') {
                Some(p) => port_of(p).ok_or_else(|| bad_port(url))?,
                None if rest.is_empty() => default_port,
                None => return Err(format!("{:?}: bad host", url)),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), port_of(p).ok_or_else(|| bad_port(url))?),
                None => (authority.to_string(), default_port),
            }
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty()
            || host
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("{:?}: missing or invalid host", url));
        }
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(format!("{:?}: invalid characters in path", url));
        }
        let host_header = if port == default_port {
            host.clone()
        } else if host.contains(':') {
            format!("[{}]:{}", host, port)
        } else {
            format!("{}:{}", host, port)
        };
        Ok(Endpoint {
            scheme,
            host,
            port,
            path,
            host_header,
        })
    }

    /// Same server (scheme, host, port): ping and post may share connections.
    pub fn same_origin(&self, other: &Endpoint) -> bool {
        self.scheme == other.scheme && self.host == other.host && self.port == other.port
    }
}

/// A port as a URL writes it: digits (leading zeros allowed, as RFC 3986 has them) for 1 to
/// 65535 (port 0 is no place to connect to).
fn port_of(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = text.trim_start_matches('0');
    if digits.len() > 5 {
        return None;
    }
    digits.parse().ok().filter(|&p| p != 0)
}

fn bad_port(url: &str) -> String {
    format!("{url:?}: bad port (1 to 65535)")
}
