//! HTTP/1.1 request heads in, responses out. Parsing is pure (bytes in,
//! `Request` out); the reading and writing happens in `conn.rs`.
//!
//! Only what the daemon needs: GET and HEAD of small resources, a body-less
//! POST, and the WebSocket upgrade. Requests with a body are answered and
//! the connection closed rather than parsed, so a body can never be mistaken
//! for the next request.

use std::borrow::Cow;
use std::time::Duration;

/// Largest request head accepted; a longer one gets 431 and the connection
/// is closed. Browsers send 1-2 KiB; cookies for other apps on the same host
/// can add a few more.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines accepted; more gets 431.
pub const MAX_HEADERS: usize = 64;
/// Time a client has to send a complete request head, counted from when the
/// daemon starts waiting for it (also the idle keep-alive timeout). A client
/// that trickles bytes to hold a connection (slowloris) is cut off.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to take a response off our hands.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path as sent, still percent-encoded, without the query.
    pub path: String,
    /// The raw query string after `?`, if any.
    pub query: Option<String>,
    /// HTTP/1.x minor version.
    pub minor_version: u8,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// True when a comma-separated header contains `token` (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(key, _)| key == name)
            .flat_map(|(_, value)| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    }

    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("connection", "close") {
            return false;
        }
        self.minor_version >= 1 || self.header_has_token("connection", "keep-alive")
    }

    /// True when a body follows the head.
    pub fn has_body(&self) -> bool {
        self.header("transfer-encoding").is_some()
            || self.header("content-length").is_some_and(|length| length.trim() != "0")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// 400: not HTTP/1.x, or not a head we can trust.
    Malformed,
    /// 431: too long or too many headers.
    TooLarge,
}

/// Parse a request head from the start of `buffer`. `Ok(None)`: not complete
/// yet, read more. `Ok(Some((request, length)))`: the head took `length`
/// bytes; what follows belongs to the next request or the WebSocket.
pub fn parse_head(buffer: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let status = match parsed.parse(buffer) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    let length = match status {
        httparse::Status::Complete(length) => length,
        httparse::Status::Partial if buffer.len() >= MAX_HEAD_BYTES => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    if length > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(minor_version)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(HeadError::Malformed);
    };
    if !target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    let mut header_list = Vec::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| HeadError::Malformed)?;
        header_list.push((header.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target.to_string(), None),
    };
    let request = Request { method: method.to_string(), path, query, minor_version, headers: header_list };
    Ok(Some((request, length)))
}

/// Decode `%XX` escapes (and `+` as space when `plus_is_space`, for query
/// strings). `None` for a broken escape or a result that is not UTF-8.
pub fn percent_decode(input: &str, plus_is_space: bool) -> Option<String> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// `a=1&b=x%20y` -> `[("a",Some("1")),("b",Some("x y"))]`. A value whose
/// %-escape is broken is `None`, so the caller can name the parameter in its
/// error; a pair whose name cannot be decoded names nothing and is left out.
pub fn parse_query(query: &str) -> Vec<(String, Option<String>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(key, true)?, percent_decode(value, true)))
        })
        .collect()
}

/// An `http://` or `https://` URL of a server the daemon calls (a webhook,
/// ntfy), checked once at start. Pure, like the rest of this file.
///
/// `Debug` and `Display` leave the credentials out, so a `Url` can go in a
/// log line or a `{:?}` of the whole `Config` without leaking a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// A host name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    /// What goes on the request line: the path and query, from `/`.
    pub target: String,
    /// `user:password` as written in the URL (still percent-encoded).
    pub userinfo: Option<String>,
}

impl Url {
    /// `http[s]://[user:password@]host[:port][/path][?query]`; a fragment
    /// is dropped (it is never sent). The error says what is wrong.
    pub fn parse(text: &str) -> Result<Url, &'static str> {
        let (scheme, rest) = text.split_once("://").ok_or("must look like http://host[:port]/path")?;
        let (https, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "http" => (false, 80),
            "https" => (true, 443),
            _ => return Err("scheme must be http or https"),
        };
        Url::parse_after_scheme(rest, https, default_port)
    }

    /// What follows `scheme://`, for a scheme whose port is `default_port`
    /// (also `mqtt://`, in `config.rs`).
    pub fn parse_after_scheme(rest: &str, https: bool, default_port: u16) -> Result<Url, &'static str> {
        if rest.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
            return Err("must not contain spaces or control characters");
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(end);
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo.to_string()), host_port),
            None => (None, authority),
        };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or("an IPv6 address needs its closing ]")?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| "not an IPv6 address between [ ]")?;
            (host, after.strip_prefix(':').map(Some).unwrap_or(if after.is_empty() { None } else { Some("") }))
        } else {
            if host_port.matches(':').count() > 1 {
                return Err("an IPv6 address goes in brackets: [fd00::2]");
            }
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err("needs a host, like 192.168.1.10 or ha.lan");
        }
        if !host.contains(':') && !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
            return Err("the host may hold letters, digits and - . _ only");
        }
        let port = match port {
            None => default_port,
            Some(digits) => match digits.parse::<u16>() {
                Ok(port) if port != 0 && digits.bytes().all(|b| b.is_ascii_digit()) => port,
                _ => return Err("the port must be a number from 1 to 65535"),
            },
        };
        let target = match target.chars().next() {
            None => "/".to_string(),
            Some('?') => format!("/{target}"),
            Some(_) => target.to_string(),
        };
        Ok(Url { https, host: host.to_ascii_lowercase(), port, target, userinfo })
    }

    /// `host[:port]` as the `Host` header wants it: brackets around IPv6,
    /// the port only when it is not the scheme's own.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == if self.https { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Without the credentials: `https://ntfy.example/door`.
impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", if self.https { "https" } else { "http" }, self.authority(), self.target)
    }
}

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Url({self})")
    }
}

/// A response, written by `conn.rs` as head + body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
    pub body: Cow<'static, [u8]>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Cow<'static, [u8]>>) -> Response {
        Response { status, headers: vec![("Content-Type", Cow::Borrowed(content_type))], body: body.into() }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Response {
        let mut body = body.into();
        body.push('\n');
        Response::new(status, "text/plain; charset=utf-8", body.into_bytes())
    }

    pub fn json(status: u16, body: String) -> Response {
        Response::new(status, "application/json", body.into_bytes())
    }

    /// `{"error":"<message>"}` with the given status.
    pub fn json_error(status: u16, message: &str) -> Response {
        Response::json(status, serde_json::json!({ "error": message }).to_string())
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The status line and headers. `Content-Length` is always the body's
    /// length, even for HEAD (where the body is then not sent).
    pub fn head_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status));
        for (name, value) in &self.headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        head.push_str(if keep_alive { "Connection: keep-alive\r\n" } else { "Connection: close\r\n" });
        head.push_str("\r\n");
        head.into_bytes()
    }
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let got = match parse_head(input.as_bytes()) {
            Ok(Some((request, length))) => format!(
                "{} {} {:?} 1.{} {} headers, {} bytes, keep-alive {}",
                request.method,
                request.path,
                request.query,
                request.minor_version,
                request.headers.len(),
                length,
                request.keep_alive()
            ),
            Ok(None) => "partial".to_string(),
            Err(error) => format!("{error:?}"),
        };
        assert_eq!(got, expected, "{input:?}");
    }

    #[test]
    fn heads() {
        check("GET / HTTP/1.1\r\nHost: pi\r\n\r\n", "GET / None 1.1 1 headers, 28 bytes, keep-alive true");
        check(
            "GET /ws?id=a&room=b HTTP/1.1\r\nHost: pi\r\nConnection: close\r\n\r\nrest",
            "GET /ws Some(\"id=a&room=b\") 1.1 2 headers, 61 bytes, keep-alive false",
        );
        check("GET / HTTP/1.0\r\n\r\n", "GET / None 1.0 0 headers, 18 bytes, keep-alive false");
        check("GET / HTTP/1.1\r\nHost: pi\r\n", "partial");
        check("", "partial");
        check("\x16\x03\x01\x02\x00garbage\r\n\r\n", "Malformed");
        check("GET http://evil/ HTTP/1.1\r\n\r\n", "Malformed");
        check("GET / HTTP/2.0\r\n\r\n", "Malformed");
        check("GET / HTTP/1.1\r\nBad Header\r\n\r\n", "Malformed");
        check(&format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES)), "TooLarge");
        check(&format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1)), "TooLarge");
        check(
            &format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS)),
            "GET / None 1.1 64 headers, 402 bytes, keep-alive true",
        );
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("/a%20b/%2e%2E", false).as_deref(), Some("/a b/.."));
        assert_eq!(percent_decode("a+b", true).as_deref(), Some("a b"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%2", false), None);
        assert_eq!(percent_decode("%ff", false), None, "not UTF-8");
        assert_eq!(
            parse_query("id=door&room=&token=a%26b"),
            [
                ("id".into(), Some("door".into())),
                ("room".into(), Some("".into())),
                ("token".into(), Some("a&b".into()))
            ]
        );
        assert_eq!(parse_query("token=a%2&id=b"), [("token".into(), None), ("id".into(), Some("b".into()))]);
        assert_eq!(parse_query("%zz=1&id=b"), [("id".into(), Some("b".into()))], "a name that is no name");
    }
    #[test]
    fn urls() {
        let check = |text: &str, expected: Result<&str, &str>| {
            let got = Url::parse(text).map(|url| {
                format!("{} host={} port={} target={} userinfo={:?}", url, url.host, url.port, url.target, url.userinfo)
            });
            assert_eq!(got.as_deref(), expected.as_deref(), "{text:?}");
        };
        check(
            "http://ha:8123/api/webhook/abc",
            Ok("http://ha:8123/api/webhook/abc host=ha port=8123 target=/api/webhook/abc userinfo=None"),
        );
        check("HTTPS://NTFY.sh/door", Ok("https://ntfy.sh/door host=ntfy.sh port=443 target=/door userinfo=None"));
        check("https://ntfy.sh:443", Ok("https://ntfy.sh/ host=ntfy.sh port=443 target=/ userinfo=None"));
        check(
            "http://u:p%40ss@10.0.0.5/x?y=1#z",
            Ok("http://10.0.0.5/x?y=1 host=10.0.0.5 port=80 target=/x?y=1 userinfo=Some(\"u:p%40ss\")"),
        );
        check(
            "http://[fe80::1]:8080?a",
            Ok("http://[fe80::1]:8080/?a host=fe80::1 port=8080 target=/?a userinfo=None"),
        );
        check("http://[::1]/", Ok("http://[::1]/ host=::1 port=80 target=/ userinfo=None"));
        check("ftp://host/", Err("scheme must be http or https"));
        check("ws://host/", Err("scheme must be http or https"));
        check("host:8123/x", Err("must look like http://host[:port]/path"));
        check("http:///path", Err("needs a host, like 192.168.1.10 or ha.lan"));
        check("http://user@:80/", Err("needs a host, like 192.168.1.10 or ha.lan"));
        check("http://host:0/", Err("the port must be a number from 1 to 65535"));
        check("http://host:65536/", Err("the port must be a number from 1 to 65535"));
        check("http://host:/", Err("the port must be a number from 1 to 65535"));
        check("http://host:+80/", Err("the port must be a number from 1 to 65535"));
        check("http://[::1]x/", Err("the port must be a number from 1 to 65535"));
        check("http://[nope]/", Err("not an IPv6 address between [ ]"));
        check("http://ho st/", Err("must not contain spaces or control characters"));
        check("http://h\"st/", Err("the host may hold letters, digits and - . _ only"));
        let url = Url::parse("https://me:secret@example.org:8443/").unwrap();
        assert!(!format!("{url} {url:?}").contains("secret"), "credentials never printed");
        assert_eq!(url.authority(), "example.org:8443");
    }
}
