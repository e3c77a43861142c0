//! The operator API on `server.admin_listen`: health, stats, Prometheus metrics, pause/resume.
//!
//! Off the hot path: one accept thread and a thread per operator connection (at most
//! `MAX_ADMIN_CONNECTIONS`; at the limit the connection idle the longest makes room for a new
//! one), blocking sockets, the same HTTP codec and head timeout as the seller API. A scrape
//! merges the workers' statistics, each taken under that worker's own mutex for a moment.

use crate::http::{self, Decoded, Limits, Method, RequestDecoder, RequestHead};
use crate::lead;
use crate::money::{dollars_string, Cents};
use crate::net::Shared;
use crate::stats::{CampaignCounters, Percentiles, WorkerStats};
use chrono::Utc;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Operator connections open at once. A new one beyond them closes the open connection idle
/// the longest (one not serving a request); only when every one is serving a request is the
/// new one closed at accept.
pub const MAX_ADMIN_CONNECTIONS: usize = 16;
/// An operator connection idle this long between requests is closed. A request itself must
/// arrive whole within the seller API's `server.head_timeout_ms`.
pub const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// An answer the client does not take within this long closes its connection.
pub const ADMIN_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the accept loop, and an idle connection, look for a shutdown.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// On shutdown, how long the accept thread waits for open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Largest operator request body.
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

pub struct Admin {
    pub local_addr: SocketAddr,
    /// The accept thread: it ends after a shutdown, once the connections it started have ended
    /// (within [`SHUTDOWN_GRACE`]), so that nothing of the exchange outlives a join of it.
    pub thread: std::thread::JoinHandle<()>,
}

/// Start the operator API; its thread runs until the exchange shuts down.
pub fn start(addr: SocketAddr, shared: Arc<Shared>, started: Instant) -> io::Result<Admin> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (operator API): {e}"),
        )
    })?;
    let local_addr = listener.local_addr()?;
    // Connection threads still running (an evicted one included, until it has left).
    let open = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(Mutex::new(Conns::default()));
    let thread = std::thread::Builder::new()
        .name("gavel-admin".into())
        .spawn(move || {
            // Non-blocking accept, so that a shutdown is noticed within one poll interval.
            let _ = listener.set_nonblocking(true);
            while !shared.shutdown.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(ACCEPT_POLL);
                        continue;
                    }
                    Err(_) => {
                        std::thread::sleep(ACCEPT_POLL);
                        continue;
                    }
                };
                let _ = stream.set_nonblocking(false);
                // A handle to close it by, should a newer connection need its place.
                let Ok(handle) = stream.try_clone() else {
                    continue;
                };
                let Some(id) = conns.lock().admit(handle, Instant::now()) else {
                    // Every open connection is serving a request.
                    continue;
                };
                open.fetch_add(1, Ordering::AcqRel);
                let shared = shared.clone();
                let conn_open = open.clone();
                let conn_list = conns.clone();
                let spawned = std::thread::Builder::new()
                    .name("gavel-admin-conn".into())
                    .spawn(move || {
                        let conn = Conn {
                            id,
                            list: &conn_list,
                        };
                        let _ = serve_connection(stream, &shared, started, &conn);
                        conn_list.lock().remove(id);
                        // The exchange's state goes before the count says this one has ended.
                        drop(shared);
                        conn_open.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    // The closure, with its decrement, was dropped with the failed spawn.
                    conns.lock().remove(id);
                    open.fetch_sub(1, Ordering::AcqRel);
                }
            }
            let deadline = Instant::now() + SHUTDOWN_GRACE;
            while open.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                std::thread::sleep(ACCEPT_POLL);
            }
        })?;
    Ok(Admin { local_addr, thread })
}

/// The open operator connections, oldest first, and what the accept thread needs to make room
/// for a new one.
#[derive(Default)]
struct Conns {
    next_id: u64,
    open: Vec<OpenConn>,
}

struct OpenConn {
    id: u64,
    /// A clone of the connection's socket: shutting it down ends the connection's thread.
    handle: TcpStream,
    /// The last byte received or answer written.
    last_active: Instant,
    /// A whole request has been read and its answer is not yet written.
    serving: bool,
}

impl Conns {
    /// Take a new connection, closing the one idle the longest when all
    /// [`MAX_ADMIN_CONNECTIONS`] places are taken; `None` (the new one is to be closed) when
    /// every open connection is serving a request.
    fn admit(&mut self, handle: TcpStream, now: Instant) -> Option<u64> {
        if self.open.len() >= MAX_ADMIN_CONNECTIONS {
            let (i, _) = self
                .open
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.serving)
                .min_by_key(|(_, c)| c.last_active)?;
            let evicted = self.open.remove(i);
            let _ = evicted.handle.shutdown(std::net::Shutdown::Both);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.open.push(OpenConn {
            id,
            handle,
            last_active: now,
            serving: false,
        });
        Some(id)
    }

    fn remove(&mut self, id: u64) {
        self.open.retain(|c| c.id != id);
    }

    fn get(&mut self, id: u64) -> Option<&mut OpenConn> {
        self.open.iter_mut().find(|c| c.id == id)
    }
}

/// One connection's place among the open ones.
struct Conn<'a> {
    id: u64,
    list: &'a Mutex<Conns>,
}

impl Conn<'_> {
    /// Bytes came in.
    fn active(&self) {
        if let Some(c) = self.list.lock().get(self.id) {
            c.last_active = Instant::now();
        }
    }

    /// A whole request is in: from now on the connection keeps its place until the answer is
    /// written. False when it already lost its place to a newer connection.
    fn serve(&self) -> bool {
        self.list.lock().get(self.id).is_some_and(|c| {
            c.serving = true;
            true
        })
    }

    /// The answer is written.
    fn served(&self) {
        if let Some(c) = self.list.lock().get(self.id) {
            c.serving = false;
            c.last_active = Instant::now();
        }
    }
}

fn serve_connection(
    mut stream: TcpStream,
    shared: &Shared,
    started: Instant,
    conn: &Conn<'_>,
) -> io::Result<()> {
    // Short reads, so that an idle connection notices a shutdown; idleness is counted apart.
    stream.set_read_timeout(Some(ACCEPT_POLL))?;
    let mut last_byte = Instant::now();
    // When the request being read began: the accept for the first, its first byte for a later
    // one; `None` between requests. As on the seller port, a request not whole within
    // `server.head_timeout_ms` closes the connection.
    let mut request_started = Some(last_byte);
    let mut head_timeout = shared.runtime().snap.server.head_timeout;
    stream.set_nodelay(true)?;
    let mut decoder = RequestDecoder::new(Limits::with_max_body_bytes(MAX_ADMIN_BODY_BYTES));
    let mut buf = Vec::with_capacity(4096);
    let mut body = Vec::new();
    let mut chunk = [0u8; 4096];
    // `100 Continue` was written for the request being read.
    let mut continued = false;
    loop {
        let (head, consumed) = loop {
            if !buf.is_empty() {
                match decoder.decode(&buf, &mut body) {
                    Ok(Decoded::Complete { head, consumed }) => break (head, consumed),
                    Ok(Decoded::NeedMore { consumed }) => {
                        buf.drain(..consumed);
                        // A client that waits for `100 Continue` before its body is told to
                        // go on (HTTP/1.1 only, RFC 9110 §10.1.1), once per request.
                        let expects = decoder
                            .pending_head()
                            .is_some_and(|h| h.expect_continue && h.version_minor >= 1);
                        if expects && !continued {
                            // Without a valid token it hears its 401 at once instead, and
                            // does not send the body; the connection closes after it, the
                            // body's bytes unread (as on the seller port).
                            let refused = decoder.pending_head().is_some_and(|h| {
                                h.path.split('?').next() != Some("/healthz")
                                    && !authorized(h, shared)
                            });
                            if refused {
                                let mut out = Vec::new();
                                let (status, content_type, payload) = unauthorized();
                                http::write_response(
                                    &mut out,
                                    status,
                                    &[
                                        ("Content-Type", content_type),
                                        ("Cache-Control", "no-store"),
                                        ("WWW-Authenticate", "Bearer"),
                                    ],
                                    &payload,
                                    http::Persist::Close,
                                );
                                write_answer(&mut stream, &out, ADMIN_WRITE_TIMEOUT)?;
                                return Ok(());
                            }
                            write_answer(
                                &mut stream,
                                b"HTTP/1.1 100 Continue\r\n\r\n",
                                ADMIN_WRITE_TIMEOUT,
                            )?;
                            continued = true;
                        }
                    }
                    Err(e) => {
                        let mut out = Vec::new();
                        http::write_error_response(&mut out, e);
                        write_answer(&mut stream, &out, ADMIN_WRITE_TIMEOUT)?;
                        return Ok(());
                    }
                }
            }
            let n = loop {
                // Checked before every read, so that a client dripping bytes faster than the
                // read timeout is held to it too.
                if request_started.is_some_and(|t| t.elapsed() >= head_timeout) {
                    return Ok(());
                }
                match stream.read(&mut chunk) {
                    Ok(n) => break n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        if shared.shutdown.load(Ordering::Relaxed)
                            || last_byte.elapsed() >= ADMIN_IDLE_TIMEOUT
                        {
                            return Ok(());
                        }
                    }
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Ok(());
            }
            last_byte = Instant::now();
            request_started.get_or_insert(last_byte);
            conn.active();
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..consumed);
        continued = false;
        if !conn.serve() {
            // A newer connection took its place while the request came in.
            return Ok(());
        }
        let (status, content_type, payload) = route(&head, shared, started);
        let mut headers = vec![
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
        ];
        if status == 401 {
            // RFC 9110 §11.6.1: a 401 names the scheme it wants.
            headers.push(("WWW-Authenticate", "Bearer"));
        }
        if status == 405 {
            if let Some(allow) = allowed_method(head.path.split('?').next().unwrap_or("")) {
                let allow = match allow {
                    Method::Get => "GET, HEAD",
                    m => method_name(m),
                };
                headers.push(("Allow", allow));
            }
        }
        let mut out = Vec::with_capacity(payload.len() + 128);
        // A request without exactly one Host is closed after its 400, as on the seller port:
        // what it was meant for, and what follows it on the connection, is not known.
        let host_ok = crate::http::host_ok(&head);
        let keep_alive = head.keep_alive && host_ok;
        let persist = http::Persist::for_request(keep_alive, head.version_minor);
        if head.method == Method::Head {
            // The headers a GET would get, no body (RFC 9110 §9.3.2).
            http::write_response_head(&mut out, status, &headers, payload.len(), persist);
        } else {
            http::write_response(&mut out, status, &headers, &payload, persist);
        }
        write_answer(&mut stream, &out, ADMIN_WRITE_TIMEOUT)?;
        conn.served();
        if !keep_alive || shared.shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        // The next request's time runs from its first byte (now, if some are in already), under
        // the head timeout in force then (a reload may have changed it).
        head_timeout = shared.runtime().snap.server.head_timeout;
        request_started = (!buf.is_empty()).then(Instant::now);
        last_byte = Instant::now();
    }
}

/// Writes `bytes` whole within `limit` of now, or fails `TimedOut`: a client that takes an
/// answer a little at a time cannot stretch it past the limit (a socket's own send timeout
/// counts from the last byte taken, so each trickle would start it again).
fn write_answer(stream: &mut TcpStream, mut bytes: &[u8], limit: Duration) -> io::Result<()> {
    let deadline = Instant::now() + limit;
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not take its answer in time",
            ));
        }
        stream.set_write_timeout(Some(left))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn error(status: u16, code: &str, message: &str) -> (u16, &'static str, Vec<u8>) {
    let mut out = Vec::new();
    lead::write_error(&mut out, None, code, message, None);
    (status, "application/json", out)
}

fn unauthorized() -> (u16, &'static str, Vec<u8>) {
    error(
        401,
        "unauthorized",
        "operator API needs Authorization: Bearer <admin.token> (the dashboard: /?token=<admin.token>)",
    )
}

fn authorized(head: &RequestHead, shared: &Shared) -> bool {
    let rt = shared.runtime();
    let Some(token) = rt.snap.admin_token.as_deref() else {
        // No token configured: the operator API is closed but for /healthz.
        return false;
    };
    let from_header = head
        .authorization
        .as_deref()
        .and_then(|a| a.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    // The dashboard page is opened in a browser, which cannot send a bearer header: its
    // address may carry the token, and only its address (its script sends the header). A
    // token in any other URL would end up in proxy logs and shell history, and a link could
    // pause a buyer or reload the config.
    let dashboard = matches!(head.method, Method::Get | Method::Head)
        && head.path.split('?').next() == Some("/");
    let given = match from_header {
        Some(t) => Some(Cow::Borrowed(t.as_bytes())),
        None if dashboard => query_token(&head.path),
        None => None,
    };
    given.is_some_and(|g| constant_time_eq(&g, token.as_bytes()))
}

/// A buyer id from a request path, percent-decoded strictly: a `%` not followed by two hex
/// digits, or escapes that decode to bytes that are not UTF-8, are refused rather than read
/// as they are, so one path never names a buyer by accident of a mistyped escape (`a%zz`
/// would otherwise be the buyer `a%zz` while `a%41` is the buyer `aA`).
fn path_id(raw: &str) -> Result<std::borrow::Cow<'_, str>, &'static str> {
    let b = raw.as_bytes();
    let hex = |i: usize| b.get(i).is_some_and(u8::is_ascii_hexdigit);
    for (i, _) in raw.match_indices('%') {
        if !(hex(i + 1) && hex(i + 2)) {
            return Err(
                "the buyer id in the path has a '%' not followed by two hex digits \
                        (write '%' itself as %25)",
            );
        }
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "the buyer id in the path decodes to bytes that are not UTF-8")
}

/// The `token=` value of a request target's query, percent-decoded (`%XX` is a byte; anything
/// else, `+` included, is itself), as the dashboard's script reads its own address: a token
/// pasted as it is (a base64 token with `/`, `+`, `=`) and one percent-encoded
/// (`encodeURIComponent`, which the script polls `/v1/stats` with) both work. A space must be
/// written `%20`.
fn query_token(path: &str) -> Option<Cow<'_, [u8]>> {
    let (_, query) = path.split_once('?')?;
    let raw = query.split('&').find_map(|kv| kv.strip_prefix("token="))?;
    Some(percent_encoding::percent_decode_str(raw).into())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The one method a known operator path takes, or `None` for an unknown path. Pause and
/// resume are known by their shape, whether or not the buyer exists.
fn allowed_method(path: &str) -> Option<Method> {
    match path {
        "/" | "/healthz" | "/v1/stats" | "/metrics" => Some(Method::Get),
        "/v1/admin/stats/reset" | "/v1/admin/reload" => Some(Method::Post),
        p => p
            .strip_prefix("/v1/admin/buyers/")
            .and_then(|rest| rest.rsplit_once('/'))
            .filter(|(id, action)| !id.is_empty() && matches!(*action, "pause" | "resume"))
            .map(|_| Method::Post),
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
        Method::Other => "another method",
    }
}

fn route(head: &RequestHead, shared: &Shared, started: Instant) -> (u16, &'static str, Vec<u8>) {
    let path = head.path.split('?').next().unwrap_or("");
    if !crate::http::host_ok(head) {
        return error(
            400,
            "bad_host",
            "an HTTP/1.1 request carries exactly one Host header",
        );
    }
    if path == "/healthz" && !matches!(head.method, Method::Get | Method::Head) {
        // Open to all, like the answer below: a probe sent the wrong way learns only that.
        let message = format!("/healthz takes GET, not {}", method_name(head.method));
        return error(405, "method_not_allowed", &message);
    }
    if path == "/healthz" {
        // What a load balancer needs to know: whether leads sent now would be taken.
        return if shared.draining.load(Ordering::Relaxed) {
            (
                503,
                "application/json",
                b"{\"status\":\"draining\"}".to_vec(),
            )
        } else if !shared.journal.accepts_leads() {
            (
                503,
                "application/json",
                b"{\"status\":\"journal_unavailable\"}".to_vec(),
            )
        } else {
            (200, "application/json", b"{\"status\":\"ok\"}".to_vec())
        };
    }
    if !authorized(head, shared) {
        return unauthorized();
    }
    // HEAD asks what GET would answer, without the body.
    let method = match head.method {
        Method::Head => Method::Get,
        m => m,
    };
    // A known path asked with another method: 405 (after the token check, so that the
    // endpoints are not probed without one), as the seller API answers.
    if let Some(allow) = allowed_method(path).filter(|m| *m != method) {
        let message = format!(
            "{path} takes {}, not {}",
            method_name(allow),
            method_name(head.method)
        );
        return error(405, "method_not_allowed", &message);
    }
    match (method, path) {
        (Method::Get, "/v1/stats") => {
            let v = stats_json(shared, started);
            (
                200,
                "application/json",
                serde_json::to_vec(&v).unwrap_or_default(),
            )
        }
        (Method::Get, "/metrics") => (
            200,
            "text/plain; version=0.0.4",
            metrics_text(shared).into_bytes(),
        ),
        (Method::Get, "/") => (
            200,
            "text/html; charset=utf-8",
            DASHBOARD.as_bytes().to_vec(),
        ),
        (Method::Post, "/v1/admin/stats/reset") => {
            for s in &shared.stats {
                s.lock().reset();
            }
            shared.seller_conns.reset_counts();
            shared.dedupe.reset_forced_evictions();
            (200, "application/json", b"{\"status\":\"reset\"}".to_vec())
        }
        (Method::Post, "/v1/admin/reload") => reload(shared),
        (Method::Post, p) if p.starts_with("/v1/admin/buyers/") => {
            let rest = &p["/v1/admin/buyers/".len()..];
            let Some((id, action)) = rest
                .rsplit_once('/')
                .filter(|(_, action)| matches!(*action, "pause" | "resume"))
            else {
                return error(
                    404,
                    "not_found",
                    "use /v1/admin/buyers/{id}/pause or /resume",
                );
            };
            // The id as the operator's client encoded it: `acme%20ins` is `acme ins`.
            let id = match path_id(id) {
                Ok(id) => id,
                Err(why) => return error(400, "invalid_path", why),
            };
            let id: &str = &id;
            let rt = shared.runtime();
            let Some(b) = rt.snap.buyer_by_id(id) else {
                return error(404, "unknown_buyer", "no such buyer");
            };
            // The pause flag is shared with the cap tables of earlier generations, so leads
            // still running under an earlier config see it too.
            match action {
                "pause" => rt.caps.pause(b),
                "resume" => rt.caps.resume(b),
                _ => return error(404, "not_found", "use /pause or /resume"),
            }
            // Kept beside the journal, so that a restart does not undo it, whatever the
            // config's `paused` says.
            let persisted = shared
                .write_pause_decision(id, action == "pause", rt.snap.buyers[b].paused)
                .is_ok();
            let body = json!({"buyer": id, "paused": rt.caps.is_paused(b), "persisted": persisted});
            (
                200,
                "application/json",
                serde_json::to_vec(&body).unwrap_or_default(),
            )
        }
        _ => error(404, "not_found", "no such operator endpoint"),
    }
}

/// `POST /v1/admin/reload`: 200 with what changed; 422 for a file the loader refuses (its
/// errors, each naming key and line); 409 for a change to a setting fixed while running.
/// Either way the config in force is untouched by a refused reload.
fn reload(shared: &Shared) -> (u16, &'static str, Vec<u8>) {
    use crate::net::ReloadError;
    let result = crate::net::reload(shared);
    // The operator's log shows every reload, whichever way it was asked for.
    {
        use std::io::Write as _;
        let mut err = std::io::stderr();
        let _ = match &result {
            Ok(report) => writeln!(
                err,
                "gavel: operator API: config reloaded, generation {}",
                report.generation
            ),
            Err(e) => e
                .to_string()
                .lines()
                .try_for_each(|l| writeln!(err, "gavel: operator API: reload refused: {l}")),
        };
    }
    let (status, body) = match result {
        Ok(report) => {
            let mut v = serde_json::to_value(&report).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.insert("status".into(), json!("reloaded"));
            }
            (200, v)
        }
        Err(e) => {
            let message = e.to_string();
            match &e {
                ReloadError::NoFile => (
                    409,
                    json!({"error": {"code": "no_config_file", "message": message}}),
                ),
                ReloadError::Config(crate::config::ConfigError::Io { .. }) => (
                    422,
                    json!({"error": {"code": "config_unreadable", "message": message}}),
                ),
                ReloadError::Config(crate::config::ConfigError::Parse(i)) => {
                    let mut err = json!({"code": "invalid_config", "message": message});
                    // A syntax error may be at no key at all: then no `field`.
                    if !i.key.is_empty() {
                        err["field"] = json!(i.key);
                    }
                    (422, json!({"error": err, "issues": [issue_json(i)]}))
                }
                ReloadError::Config(crate::config::ConfigError::Invalid(issues)) => {
                    let mut err = json!({"code": "invalid_config", "message": message});
                    if let Some(first) = issues.first().filter(|i| !i.key.is_empty()) {
                        err["field"] = json!(first.key);
                    }
                    let list: Vec<Value> = issues.iter().map(issue_json).collect();
                    (422, json!({"error": err, "issues": list}))
                }
                ReloadError::RestartRequired(keys) => {
                    let names: Vec<&str> = keys.iter().map(|k| k.key).collect();
                    (
                        409,
                        json!({"error": {"code": "restart_required", "message": message,
                                         "field": names.first().copied().unwrap_or("")},
                               "restart_required": keys}),
                    )
                }
            }
        }
    };
    (
        status,
        "application/json",
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

fn issue_json(i: &crate::config::Issue) -> Value {
    let mut v = json!({"line": i.line, "message": i.message});
    if !i.key.is_empty() {
        v["key"] = json!(i.key);
    }
    v
}

/// Every worker's counters summed, with every configured campaign listed (at zero before its
/// first lead), as every configured buyer is.
fn merged(shared: &Shared) -> WorkerStats {
    let mut total = WorkerStats::default();
    for s in &shared.stats {
        total.merge(&s.lock());
    }
    for c in &shared.runtime().snap.campaigns {
        total.campaign(&c.id);
    }
    total
}

fn dollars(c: Cents) -> Value {
    serde_json::from_str(&dollars_string(c)).unwrap_or(Value::Null)
}

/// Percentiles as `/v1/stats` gives them: the 99.9th under both `p99.9` (the name the operator
/// reads everywhere else) and `p999` (a key without a dot, for tools that split paths on dots).
fn pct_json(p: &Percentiles) -> Value {
    json!({"count": p.count, "p50": p.p50, "p90": p.p90, "p99": p.p99, "p99.9": p.p999, "p999": p.p999, "max": p.max, "mean": p.mean})
}

/// `GET /v1/stats`: per campaign and per buyer counters, money in dollars, latency percentiles.
/// The journal's health: whether it takes new leads (a full disk stops them before their
/// records could be lost), whether the next segment is made, and the records it refused.
fn journal_json(shared: &Shared, s: &WorkerStats) -> Value {
    let (background_errors, last_error) = shared.journal.background_errors();
    json!({
        "accepting_leads": shared.journal.accepts_leads(),
        "spare_segment_ready": shared.journal.spare_ready(),
        "directory_lost": shared.journal.dir_lost(),
        "segment_lost": shared.journal.segment_lost(),
        "head_segment": shared.journal.head(),
        "records_refused_since_start": shared.journal.refused(),
        "errors": s.journal_errors,
        "background_errors": background_errors,
        "last_background_error": last_error,
    })
}

pub fn stats_json(shared: &Shared, started: Instant) -> Value {
    let s = merged(shared);
    let rt = shared.runtime();
    let snap = &rt.snap;
    let now = Utc::now();
    let mut campaigns = Map::new();
    for (id, c) in &s.campaigns {
        campaigns.insert(
            id.clone(),
            json!({
                "leads": c.leads, "sold": c.sold, "unsold": c.unsold, "rejected": c.rejected,
                "revenue": dollars(c.revenue_cents), "payout": dollars(c.payout_cents),
                "profit": dollars(c.revenue_cents - c.payout_cents),
                "test_leads": c.test_leads,
                "pings": c.pings, "pings_bid": c.pings_bid, "pings_refused": c.pings_refused,
                "posts_refused": c.posts_refused,
                "buyers_not_pinged": c.buyers_not_pinged,
            }),
        );
    }
    let mut buyers = Map::new();
    let counters = |c: &crate::stats::BuyerCounters| {
        json!({
            "pings": c.pings, "bids": c.bids, "no_bids": c.no_bids, "timeouts": c.timeouts,
            "errors": c.errors, "invalid": c.invalid, "posts": c.posts, "wins": c.wins,
            "post_rejects": c.post_rejects,
            "average_bid": dollars(crate::money::average_cents(c.bid_sum_cents, c.bids)),
            "spent": dollars(c.spent_cents),
            "response_us": pct_json(&Percentiles::of(&c.response_us)),
        })
    };
    for (i, b) in snap.buyers.iter().enumerate() {
        let default = Default::default();
        let c = s.buyer_counters(&b.id).unwrap_or(&default);
        let left = rt.caps.remaining(i, now);
        let used = rt.caps.used(i, now);
        let mut entry = counters(c);
        let more = json!({
                "removed": false,
                "paused": left.paused,
                // The limits in force, what is left of them, and what they have taken (over
                // the limit when a reload lowered a cap after sales).
                "caps": {
                    "hourly": b.caps.hourly, "daily": b.caps.daily, "weekly": b.caps.weekly,
                    "monthly": b.caps.monthly,
                    "daily_budget": b.caps.daily_budget_cents.map(dollars),
                    "weekly_budget": b.caps.weekly_budget_cents.map(dollars),
                    "monthly_budget": b.caps.monthly_budget_cents.map(dollars),
                },
                "caps_left": {
                    "hourly": left.hourly, "daily": left.daily, "weekly": left.weekly,
                    "monthly": left.monthly,
                    "daily_budget": left.daily_budget_cents.map(dollars),
                    "weekly_budget": left.weekly_budget_cents.map(dollars),
                    "monthly_budget": left.monthly_budget_cents.map(dollars),
                },
                "caps_used": {
                    "hourly": used.hourly, "daily": used.daily, "weekly": used.weekly,
                    "monthly": used.monthly,
                    "daily_budget": used.daily_budget_cents.map(dollars),
                    "weekly_budget": used.weekly_budget_cents.map(dollars),
                    "monthly_budget": used.monthly_budget_cents.map(dollars),
                },
        });
        if let (Value::Object(e), Value::Object(m)) = (&mut entry, more) {
            e.extend(m);
        }
        buyers.insert(b.id.clone(), entry);
    }
    // A buyer a reload removed keeps its counters: what it bought is in its campaigns'
    // revenue, so the buyers' spend still adds up to it. It has no caps any more.
    for (id, c) in s.buyers() {
        if !buyers.contains_key(id) {
            let mut entry = counters(c);
            if let Value::Object(e) = &mut entry {
                e.insert("removed".into(), Value::Bool(true));
            }
            buyers.insert(id.to_string(), entry);
        }
    }
    let refused: Map<String, Value> = s
        .refused
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "uptime_s": started.elapsed().as_secs(),
        "workers": snap.server.workers,
        "in_flight": shared.in_flight.load(Ordering::Relaxed),
        "journal": journal_json(shared, &s),
        // `entries` as configured; the keys held now and the most it may hold (each shard's
        // room for the uneven spread of keys added).
        "dedupe": {
            "entries": snap.server.dedupe_entries,
            "held": shared.dedupe.len(),
            "capacity": shared.dedupe.capacity(),
            "forced_evictions": shared.dedupe.forced_evictions(),
        },
        // Seller connections against `server.max_connections` (across all workers): open now,
        // idle ones closed to make room for a new one, new ones refused (503) at the limit.
        "connections": {
            "sellers_open": shared.seller_conns.open(),
            "sellers_max": snap.server.max_connections,
            "sellers_evicted": shared.seller_conns.evicted(),
            "sellers_refused": shared.seller_conns.refused(),
        },
        "campaigns": campaigns,
        "buyers": buyers,
        "overhead_us": pct_json(&Percentiles::of(&s.overhead_us)),
        "elapsed_us": pct_json(&Percentiles::of(&s.elapsed_us)),
        "overhead_stages_us": {
            "intake": pct_json(&Percentiles::of(&s.overhead_intake_us)),
            "close": pct_json(&Percentiles::of(&s.overhead_close_us)),
            "answer": pct_json(&Percentiles::of(&s.overhead_answer_us)),
        },
        "answer_write_us": pct_json(&Percentiles::of(&s.answer_write_us)),
        "refused": refused,
    })
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn histogram_text(out: &mut String, name: &str, labels: &str, h: &hdrhistogram::Histogram<u64>) {
    // Fixed bucket bounds in seconds, from the microsecond histogram.
    // Up to a minute: a ping or post timeout may be that long, and a timeout counts in a
    // buyer's response time at the time waited.
    const BOUNDS_US: [u64; 20] = [
        10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
        500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 60_000_000,
    ];
    let sep = if labels.is_empty() { "" } else { "," };
    for b in BOUNDS_US {
        // The histogram keeps values to two significant digits: a bound falls inside a bucket
        // of equivalent values (10,000 µs in 10,000..=10,047). Each `le` is that bucket's top,
        // so every value counted under it is at most it, as `le` says.
        let le = h.highest_equivalent(b);
        let count = h.count_between(0, le);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{}\"}} {count}",
            le as f64 / 1e6
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.len());
    // Each bucket counted at its middle value: within half a bucket (0.5 %) of the exact sum.
    let sum: f64 = h
        .iter_recorded()
        .map(|v| h.median_equivalent(v.value_iterated_to()) as f64 * v.count_at_value() as f64)
        .sum::<f64>()
        / 1e6
        // An empty sum of floats is -0.0, which would print as `-0`.
        + 0.0;
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum}");
    let _ = writeln!(out, "{name}_count{braces} {}", h.len());
}

/// A counter family by campaign and status: one `name{campaign, status} n` line for each of
/// the statuses `statuses` gives a campaign's counters.
fn by_campaign_and_status<const N: usize>(
    out: &mut String,
    name: &str,
    help: &str,
    campaigns: &BTreeMap<String, CampaignCounters>,
    statuses: impl Fn(&CampaignCounters) -> [(&'static str, u64); N],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (id, c) in campaigns {
        for (status, n) in statuses(c) {
            let _ = writeln!(
                out,
                "{name}{{campaign=\"{}\",status=\"{}\"}} {}",
                label(id),
                status,
                n
            );
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub fn metrics_text(shared: &Shared) -> String {
    let s = merged(shared);
    let rt = shared.runtime();
    let snap = &rt.snap;
    let now = Utc::now();
    let mut out = String::with_capacity(8192);
    by_campaign_and_status(
        &mut out,
        "gavel_leads_total",
        "Leads by campaign and outcome.",
        &s.campaigns,
        |c| {
            [
                ("sold", c.sold),
                ("unsold", c.unsold),
                ("rejected", c.rejected),
            ]
        },
    );
    by_campaign_and_status(
        &mut out,
        "gavel_seller_pings_total",
        "Seller-side pings (/v1/ping) by campaign and answer (not leads: a lead is counted when posted).",
        &s.campaigns,
        |c| {
            [
                ("bid", c.pings_bid),
                ("no_bid", c.pings.saturating_sub(c.pings_bid)),
                ("refused", c.pings_refused),
            ]
        },
    );
    out.push_str("# HELP gavel_posts_refused_total Seller-side posts (/v1/post) refused for their content while the ping stays postable, by campaign.\n# TYPE gavel_posts_refused_total counter\n");
    for (id, c) in &s.campaigns {
        let _ = writeln!(
            out,
            "gavel_posts_refused_total{{campaign=\"{}\"}} {}",
            label(id),
            c.posts_refused
        );
    }
    out.push_str("# HELP gavel_buyers_not_pinged_total Eligible buyers left out of leads' pings because more were eligible than a lead pings (1024), summed over leads since the start, by campaign.\n# TYPE gavel_buyers_not_pinged_total counter\n");
    for (id, c) in &s.campaigns {
        let _ = writeln!(
            out,
            "gavel_buyers_not_pinged_total{{campaign=\"{}\"}} {}",
            label(id),
            c.buyers_not_pinged
        );
    }
    out.push_str("# HELP gavel_test_leads_total Leads sent as tests (counted in gavel_leads_total too; they move no money), by campaign.\n# TYPE gavel_test_leads_total counter\n");
    for (id, c) in &s.campaigns {
        let _ = writeln!(
            out,
            "gavel_test_leads_total{{campaign=\"{}\"}} {}",
            label(id),
            c.test_leads
        );
    }
    out.push_str("# HELP gavel_revenue_dollars_total What buyers paid, by campaign.\n# TYPE gavel_revenue_dollars_total counter\n");
    for (id, c) in &s.campaigns {
        let _ = writeln!(
            out,
            "gavel_revenue_dollars_total{{campaign=\"{}\"}} {}",
            label(id),
            dollars_string(c.revenue_cents)
        );
    }
    out.push_str("# HELP gavel_payout_dollars_total What sellers earned, by campaign.\n# TYPE gavel_payout_dollars_total counter\n");
    for (id, c) in &s.campaigns {
        let _ = writeln!(
            out,
            "gavel_payout_dollars_total{{campaign=\"{}\"}} {}",
            label(id),
            dollars_string(c.payout_cents)
        );
    }
    out.push_str(
        "# HELP gavel_pings_total Pings by buyer and result.\n# TYPE gavel_pings_total counter\n",
    );
    for (id, b) in s.buyers() {
        for (result, n) in [
            ("bid", b.bids),
            ("no_bid", b.no_bids),
            ("timeout", b.timeouts),
            ("error", b.errors),
            ("invalid", b.invalid),
        ] {
            let _ = writeln!(
                out,
                "gavel_pings_total{{buyer=\"{}\",result=\"{}\"}} {}",
                label(id),
                result,
                n
            );
        }
    }
    out.push_str(
        "# HELP gavel_wins_total Leads sold to each buyer.\n# TYPE gavel_wins_total counter\n",
    );
    for (id, b) in s.buyers() {
        let _ = writeln!(
            out,
            "gavel_wins_total{{buyer=\"{}\"}} {}",
            label(id),
            b.wins
        );
    }
    out.push_str("# HELP gavel_buyer_spent_dollars_total What each buyer paid for the leads it bought (test leads move none).\n# TYPE gavel_buyer_spent_dollars_total counter\n");
    for (id, b) in s.buyers() {
        let _ = writeln!(
            out,
            "gavel_buyer_spent_dollars_total{{buyer=\"{}\"}} {}",
            label(id),
            dollars_string(b.spent_cents)
        );
    }
    out.push_str("# HELP gavel_refused_total Requests refused before an auction, by status.\n# TYPE gavel_refused_total counter\n");
    for (code, n) in &s.refused {
        let _ = writeln!(out, "gavel_refused_total{{status=\"{}\"}} {}", code, n);
    }
    out.push_str("# HELP gavel_in_flight Auctions in flight.\n# TYPE gavel_in_flight gauge\n");
    let _ = writeln!(
        out,
        "gavel_in_flight {}",
        shared.in_flight.load(Ordering::Relaxed)
    );
    let (background_errors, _) = shared.journal.background_errors();
    out.push_str("# HELP gavel_journal_accepting_leads 1 while the journal takes new leads, 0 when its disk is full (leads answered 503 journal_unavailable).\n# TYPE gavel_journal_accepting_leads gauge\n");
    let _ = writeln!(
        out,
        "gavel_journal_accepting_leads {}",
        u8::from(shared.journal.accepts_leads())
    );
    out.push_str("# HELP gavel_journal_errors_total Records the journal refused (a full disk, an I/O error).\n# TYPE gavel_journal_errors_total counter\n");
    let _ = writeln!(out, "gavel_journal_errors_total {}", s.journal_errors);
    out.push_str("# HELP gavel_journal_background_errors_total Failures of the journal's background work (msync, retention, making the next segment).\n# TYPE gavel_journal_background_errors_total counter\n");
    let _ = writeln!(
        out,
        "gavel_journal_background_errors_total {}",
        background_errors
    );
    out.push_str("# HELP gavel_dedupe_forced_evictions_total Phones and emails the dedupe index dropped for room while still inside their dedupe_days window (raise server.dedupe_entries).\n# TYPE gavel_dedupe_forced_evictions_total counter\n");
    let _ = writeln!(
        out,
        "gavel_dedupe_forced_evictions_total {}",
        shared.dedupe.forced_evictions()
    );
    out.push_str("# HELP gavel_dedupe_keys_held Phones and emails the dedupe index holds now (server.dedupe_entries are held before any is dropped).\n# TYPE gavel_dedupe_keys_held gauge\n");
    let _ = writeln!(out, "gavel_dedupe_keys_held {}", shared.dedupe.len());
    out.push_str("# HELP gavel_seller_connections_open Seller connections open, across all workers (at most server.max_connections).\n# TYPE gavel_seller_connections_open gauge\n");
    let _ = writeln!(
        out,
        "gavel_seller_connections_open {}",
        shared.seller_conns.open()
    );
    out.push_str("# HELP gavel_seller_connections_evicted_total Idle seller connections closed at server.max_connections to make room for a new one.\n# TYPE gavel_seller_connections_evicted_total counter\n");
    let _ = writeln!(
        out,
        "gavel_seller_connections_evicted_total {}",
        shared.seller_conns.evicted()
    );
    out.push_str("# HELP gavel_seller_connections_refused_total New seller connections refused (503 overloaded) at server.max_connections, every open one serving a request.\n# TYPE gavel_seller_connections_refused_total counter\n");
    let _ = writeln!(
        out,
        "gavel_seller_connections_refused_total {}",
        shared.seller_conns.refused()
    );
    for (name, help, used) in [
        (
            "gavel_cap_remaining",
            "Leads (or dollars for the budgets) left in each buyer's cap windows, 0 at or over the limit.",
            false,
        ),
        (
            "gavel_cap_used",
            "Leads (or dollars for the budgets) each buyer's cap windows have taken; over the limit when a reload lowered or added a cap after sales.",
            true,
        ),
    ] {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for (i, b) in snap.buyers.iter().enumerate() {
            let v = if used {
                rt.caps.used(i, now)
            } else {
                rt.caps.remaining(i, now)
            };
            let leads = |n: Option<u64>| n.map(|n| n.to_string());
            let budget = |c: Option<Cents>| c.map(dollars_string);
            for (w, v) in [
                ("hourly", leads(v.hourly)),
                ("daily", leads(v.daily)),
                ("weekly", leads(v.weekly)),
                ("monthly", leads(v.monthly)),
                ("daily_budget", budget(v.daily_budget_cents)),
                ("weekly_budget", budget(v.weekly_budget_cents)),
                ("monthly_budget", budget(v.monthly_budget_cents)),
            ] {
                if let Some(v) = v {
                    let _ = writeln!(
                        out,
                        "{name}{{buyer=\"{}\",window=\"{}\"}} {}",
                        label(&b.id),
                        w,
                        v
                    );
                }
            }
        }
    }
    out.push_str("# HELP gavel_cap_limit Each buyer's caps in force, in leads (or dollars for the budgets).\n# TYPE gavel_cap_limit gauge\n");
    for b in &snap.buyers {
        let leads = |n: Option<u64>| n.map(|n| n.to_string());
        let budget = |c: Option<Cents>| c.map(dollars_string);
        for (w, v) in [
            ("hourly", leads(b.caps.hourly)),
            ("daily", leads(b.caps.daily)),
            ("weekly", leads(b.caps.weekly)),
            ("monthly", leads(b.caps.monthly)),
            ("daily_budget", budget(b.caps.daily_budget_cents)),
            ("weekly_budget", budget(b.caps.weekly_budget_cents)),
            ("monthly_budget", budget(b.caps.monthly_budget_cents)),
        ] {
            if let Some(v) = v {
                let _ = writeln!(
                    out,
                    "gavel_cap_limit{{buyer=\"{}\",window=\"{}\"}} {}",
                    label(&b.id),
                    w,
                    v
                );
            }
        }
    }
    out.push_str("# HELP gavel_internal_overhead_seconds Engine time per lead (elapsed minus waiting on buyers).\n# TYPE gavel_internal_overhead_seconds histogram\n");
    histogram_text(
        &mut out,
        "gavel_internal_overhead_seconds",
        "",
        &s.overhead_us,
    );
    out.push_str("# HELP gavel_internal_overhead_stage_seconds Engine time per lead by stage: intake (arrival to first ping), close (ranking, caps, posts), answer (last buyer answer to seller answer handed to the kernel).\n# TYPE gavel_internal_overhead_stage_seconds histogram\n");
    for (stage, h) in [
        ("intake", &s.overhead_intake_us),
        ("close", &s.overhead_close_us),
        ("answer", &s.overhead_answer_us),
    ] {
        histogram_text(
            &mut out,
            "gavel_internal_overhead_stage_seconds",
            &format!("stage=\"{stage}\""),
            h,
        );
    }
    out.push_str("# HELP gavel_answer_write_seconds The send of each seller answer (outside the internal overhead, as a ping's send is).\n# TYPE gavel_answer_write_seconds histogram\n");
    histogram_text(
        &mut out,
        "gavel_answer_write_seconds",
        "",
        &s.answer_write_us,
    );
    out.push_str("# HELP gavel_buyer_response_seconds Buyers' ping response time, a timeout at the time waited; pings never sent are not counted.\n# TYPE gavel_buyer_response_seconds histogram\n");
    for (id, b) in s.buyers() {
        histogram_text(
            &mut out,
            "gavel_buyer_response_seconds",
            &format!("buyer=\"{}\"", label(id)),
            &b.response_us,
        );
    }
    out
}

/// `GET /`: the dashboard. One self-contained page (no outside scripts, styles or fonts, so it
/// works offline) that polls `/v1/stats` every two seconds and draws its plots as inline SVG.
const DASHBOARD: &str = r##"<!doctype html>
<html><head><meta charset="utf-8"><title>Gavel</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child{text-align:left}
svg{display:block;margin:.5em 0}svg text{font:11px system-ui,sans-serif;fill:#333}.none{color:#888}</style></head>
<body><h1>Gavel</h1><div id="summary"></div>
<h2>Leads by campaign</h2><div id="plot-leads"></div>
<h2>Revenue, payout and profit by campaign ($)</h2><div id="plot-money"></div>
<h2>Pings by buyer and result</h2><div id="plot-pings"></div>
<h2>Buyer response time (ms)</h2><div id="plot-response"></div>
<h2>Internal overhead (µs)</h2><div id="plot-overhead"></div><div id="plot-overhead-series"></div>
<h2>Cap usage</h2><div id="plot-caps"></div>
<h2>Campaigns</h2><table id="campaigns"></table><h2>Buyers</h2><table id="buyers"></table>
<script>
'use strict';
// Plain script, no outside resources: the plots are SVG built here from /v1/stats, every
// two seconds. A field missing from the answer reads as 0 (or is left out); every id is escaped.
// The token as the server reads a query's: %XX a byte, anything else (`+` too) itself, so a
// token pasted as it is works as well as one percent-encoded.
const token = (() => {
  const m = /[?&]token=([^&#]*)/.exec(location.search);
  if (!m) return '';
  const raw = m[1], bytes = [], enc = new TextEncoder();
  for (let i = 0; i < raw.length;) {
    if (raw[i] === '%' && /^[0-9a-fA-F]{2}$/.test(raw.slice(i + 1, i + 3))) {
      bytes.push(parseInt(raw.slice(i + 1, i + 3), 16)); i += 3;
    } else {
      const c = String.fromCodePoint(raw.codePointAt(i));
      bytes.push(...enc.encode(c)); i += c.length;
    }
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
})();
const series = [];
const W = 720, LABEL = 160, RIGHT = 90;
const $ = id => document.getElementById(id);
const esc = v => String(v ?? '').replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
const num = v => { const n = Number(v); return Number.isFinite(n) ? n : 0; };
const obj = v => (v && typeof v === 'object') ? v : {};
const fmt = n => { const a = Math.abs(n); return a >= 1e6 ? (n / 1e6).toFixed(1) + 'M' : a >= 1e4 ? (n / 1e3).toFixed(1) + 'k' : String(Math.round(n * 100) / 100); };
const usd = n => (n < 0 ? '-$' : '$') + Math.abs(n).toFixed(2);
const short = s => s.length > 22 ? s.slice(0, 21) + '…' : s;
function legend(keys) {
  return keys.map(([name, color], i) => `<rect x="${LABEL + i * 95}" y="3" width="10" height="10" fill="${color}"/><text x="${LABEL + 14 + i * 95}" y="12">${esc(name)}</text>`).join('');
}
function draw(id, svg, h) {
  const el = $(id);
  if (el) el.innerHTML = svg === null ? '<p class="none">nothing yet</p>' : `<svg width="${W}" height="${h}" viewBox="0 0 ${W} ${h}">${svg}</svg>`;
}
function label(text, y) { return `<text x="0" y="${y}"><title>${esc(text)}</title>${esc(short(text))}</text>`; }
// Horizontal bars, a row per [label, values] (values in the order of keys): stacked into one
// bar, or grouped as one thin bar per key; grouped values may be negative (a loss).
function bars(id, rows, keys, stacked, unit, f = fmt) {
  if (!rows.length) return draw(id, null, 0);
  const bh = stacked ? 16 : 12, rowh = (stacked ? bh : bh * keys.length) + 8, h = 22 + rows.length * rowh;
  const vals = rows.flatMap(r => r[1]);
  const lo = stacked ? 0 : Math.min(0, ...vals);
  const tops = stacked ? rows.map(r => r[1].reduce((a, v) => a + Math.max(0, v), 0)) : vals;
  const hi = Math.max(lo + 1e-9, ...tops), span = W - LABEL - RIGHT;
  const x = v => LABEL + span * (v - lo) / (hi - lo);
  let s = legend(keys);
  rows.forEach(([name, values], i) => {
    const y = 20 + i * rowh;
    s += label(name, y + 12);
    let acc = 0;
    values.forEach((v, k) => {
      const [key, color] = keys[k];
      let x0, x1, by = y;
      if (stacked) { v = Math.max(0, v); x0 = x(acc); acc += v; x1 = x(acc); }
      else { x0 = x(Math.min(0, v)); x1 = x(Math.max(0, v)); by = y + k * bh; }
      s += `<rect x="${x0.toFixed(1)}" y="${by}" width="${Math.max(0, x1 - x0).toFixed(1)}" height="${bh - 1}" fill="${color}"><title>${esc(name)} ${esc(key)}: ${esc(f(v) + unit)}</title></rect>`;
      if (!stacked) s += `<text x="${W - RIGHT + 4}" y="${by + bh - 2}">${esc(f(v))}</text>`;
    });
    if (stacked) s += `<text x="${W - RIGHT + 4}" y="${y + 12}">${esc(f(acc))}</text>`;
  });
  if (lo < 0) s += `<line x1="${x(0).toFixed(1)}" x2="${x(0).toFixed(1)}" y1="18" y2="${h}" stroke="#888"/>`;
  draw(id, s, h);
}
// Lines over the last 120 polls.
function lines(id, points, keys, unit) {
  const h = 200, top = 22, bottom = 190, n = 120;
  const max = Math.max(1, ...points.flatMap(p => keys.map(([k]) => num(p[k]))));
  let s = legend(keys) + `<text x="0" y="${top + 8}">${esc(fmt(max) + ' ' + unit)}</text><text x="0" y="${bottom}">0</text>`;
  s += `<line x1="${LABEL}" x2="${W}" y1="${bottom}" y2="${bottom}" stroke="#ccc"/>`;
  keys.forEach(([k, color]) => {
    const pts = points.map((p, i) => `${(LABEL + (W - LABEL) * i / (n - 1)).toFixed(1)},${(bottom - (bottom - top) * num(p[k]) / max).toFixed(1)}`).join(' ');
    s += `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${pts}"/>`;
  });
  draw(id, s, h);
}
// For every cap a buyer has: what it has taken against the limit.
function caps(id, buyers) {
  const rows = [];
  for (const [b, v] of buyers) {
    const lim = obj(v.caps), taken = obj(v.caps_used);
    for (const w of ['hourly', 'daily', 'weekly', 'monthly', 'daily_budget', 'weekly_budget', 'monthly_budget']) {
      if (lim[w] === null || lim[w] === undefined || !Number.isFinite(Number(lim[w]))) continue;
      const limit = num(lim[w]), used = Math.max(0, num(taken[w] ?? 0));
      rows.push([b + ' ' + w, used, limit, w.endsWith('_budget') ? usd : fmt]);
    }
  }
  if (!rows.length) return draw(id, null, 0);
  const bh = 14, rowh = 20, h = 22 + rows.length * rowh, span = W - LABEL - RIGHT;
  let s = legend([['used', '#36c'], ['used ≥ 90%', '#c33'], ['left', '#e4e4e4']]);
  rows.forEach(([name, used, limit, show], i) => {
    const y = 20 + i * rowh, f = limit > 0 ? Math.min(1, used / limit) : 1;
    const text = `${show(used)} / ${show(limit)}`;
    s += label(name, y + 11) + `<rect x="${LABEL}" y="${y}" width="${span}" height="${bh}" fill="#e4e4e4"/>`
      + `<rect x="${LABEL}" y="${y}" width="${(span * f).toFixed(1)}" height="${bh}" fill="${f >= 0.9 ? '#c33' : '#36c'}"><title>${esc(name)}: ${esc(text)}</title></rect>`
      + `<text x="${W - RIGHT + 4}" y="${y + 11}">${esc(text)}</text>`;
  });
  draw(id, s, h);
}
function plot(f) { try { f(); } catch (e) { console.error(e); } }
function row(cells, tag) { return '<tr>' + cells.map(c => `<${tag}>${esc(c)}</${tag}>`).join('') + '</tr>'; }
async function tick() {
  let s;
  try {
    const r = await fetch('/v1/stats', {cache: 'no-store', headers: {'Authorization': 'Bearer ' + token}});
    if (!r.ok) { $('summary').textContent = 'HTTP ' + r.status + ' (open /?token=<admin.token>, a space as %20, % as %25)'; return; }
    s = obj(await r.json());
  } catch (e) { $('summary').textContent = 'no answer from /v1/stats: ' + e; return; }
  const camps = Object.entries(obj(s.campaigns)).map(([id, v]) => [id, obj(v)]);
  const buyers = Object.entries(obj(s.buyers)).map(([id, v]) => [id, obj(v)]);
  const o = obj(s.overhead_us);
  $('summary').textContent =
    `uptime ${num(s.uptime_s)} s, ${num(s.workers)} workers, ${num(s.in_flight)} auctions in flight, overhead p50 ${num(o.p50)} µs p99 ${num(o.p99)} µs`;
  series.push(o); if (series.length > 120) series.shift();
  plot(() => bars('plot-leads', camps.map(([id, v]) => [id, [num(v.sold), num(v.unsold), num(v.rejected)]]),
    [['sold', '#2a7'], ['unsold', '#bbb'], ['rejected', '#c33']], true, ' leads'));
  plot(() => bars('plot-money', camps.map(([id, v]) => [id, [num(v.revenue), num(v.payout), num(v.profit)]]),
    [['revenue', '#36c'], ['payout', '#e90'], ['profit', '#2a7']], false, '', usd));
  plot(() => bars('plot-pings', buyers.map(([id, v]) => [id, [num(v.bids), num(v.no_bids), num(v.timeouts), num(v.errors), num(v.invalid)]]),
    [['bids', '#2a7'], ['no-bids', '#bbb'], ['timeouts', '#e90'], ['errors', '#c33'], ['invalid', '#939']], true, ' pings'));
  plot(() => bars('plot-response', buyers.filter(([id, v]) => num(obj(v.response_us).count) > 0).map(([id, v]) => { const p = obj(v.response_us); return [id, [num(p.p50) / 1000, num(p.p90) / 1000, num(p.p99) / 1000]]; }),
    [['p50', '#2a7'], ['p90', '#e90'], ['p99', '#c33']], false, ' ms'));
  plot(() => bars('plot-overhead', [['p50', o.p50], ['p90', o.p90], ['p99', o.p99], ['p99.9', o.p999], ['max', o.max]].map(([k, v]) => [k, [num(v)]]),
    [['µs', '#36c']], false, ' µs'));
  plot(() => lines('plot-overhead-series', series, [['p50', '#2a7'], ['p99', '#c33']], 'µs'));
  plot(() => caps('plot-caps', buyers));
  let t = row(['campaign', 'leads', 'sold', 'unsold', 'rejected', 'revenue', 'payout', 'profit'], 'th');
  for (const [id, v] of camps) t += row([id, v.leads, v.sold, v.unsold, v.rejected, usd(num(v.revenue)), usd(num(v.payout)), usd(num(v.profit))], 'td');
  $('campaigns').innerHTML = t;
  t = row(['buyer', 'state', 'pings', 'bids', 'wins', 'timeouts', 'errors', 'avg bid', 'spent', 'p99 µs', 'daily left'], 'th');
  // A removed buyer has counters and no caps: nothing is left for it, and it is not uncapped.
  for (const [id, v] of buyers) t += row([id, v.removed ? 'removed' : v.paused ? 'paused' : 'active', v.pings, v.bids, v.wins, v.timeouts, v.errors,
    num(v.bids) > 0 ? usd(num(v.average_bid)) : '–', usd(num(v.spent)), num(obj(v.response_us).count) > 0 ? obj(v.response_us).p99 : '–',
    v.removed ? '–' : obj(v.caps_left).daily ?? '∞'], 'td');
  $('buyers').innerHTML = t;
}
tick(); setInterval(tick, 2000);
</script></body></html>
"##;

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that takes its answer a little at a time is held to the limit for the whole
    /// answer, not for each piece.
    #[test]
    fn an_answer_taken_a_trickle_at_a_time_is_given_up_at_the_limit() -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let reader = std::thread::spawn(move || -> io::Result<()> {
            let mut client = TcpStream::connect(addr)?;
            let mut chunk = [0u8; 4096];
            // 40 KiB a second, until the server has given up.
            while !stop.load(Ordering::Relaxed) {
                if !matches!(client.read(&mut chunk), Ok(n) if n > 0) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        });
        let (mut server, _) = listener.accept()?;
        let answer = vec![b'x'; 64 << 20];
        let t = Instant::now();
        let result = write_answer(&mut server, &answer, Duration::from_millis(500));
        let took = t.elapsed();
        done.store(true, Ordering::Relaxed);
        drop(server);
        let read = reader.join();
        assert!(
            matches!(&result, Err(e) if e.kind() == io::ErrorKind::TimedOut),
            "{result:?}"
        );
        // Given up at the limit, give or take a scheduling delay; a limit per write would go
        // on for as long as the client keeps taking bytes (here, about 27 minutes).
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_secs(60), "{took:?}");
        assert!(matches!(read, Ok(Ok(()))), "the client failed: {read:?}");
        Ok(())
    }

    /// Every element the script looks up is on the page, and nothing is fetched from elsewhere.
    #[test]
    fn the_dashboard_is_self_contained() {
        let Some((html, script)) = DASHBOARD.split_once("<script>") else {
            panic!("the page has no inline script");
        };
        for id in script
            .split("$('")
            .skip(1)
            .filter_map(|rest| rest.split_once('\'').map(|(id, _)| id))
        {
            assert!(html.contains(&format!("id=\"{id}\"")), "no element {id}");
        }
        for plot in [
            "plot-leads",
            "plot-money",
            "plot-pings",
            "plot-response",
            "plot-overhead",
            "plot-overhead-series",
            "plot-caps",
        ] {
            assert!(script.contains(&format!("'{plot}'")), "{plot} is not drawn");
        }
        for outside in [
            "<script src",
            "<link",
            "@import",
            "http://",
            "https://",
            "//cdn",
        ] {
            assert!(!DASHBOARD.contains(outside), "{outside}");
        }
        // Ids are escaped before they reach innerHTML.
        assert!(script.contains("'&': '&amp;', '<': '&lt;'"));
    }

    /// Every bucket counts exactly the values at or under its `le`, whatever the histogram's
    /// precision; the sum is within 1 %.
    #[test]
    fn histogram_buckets_count_exactly_the_values_under_their_bound() {
        let mut h = crate::stats::histogram();
        let values: Vec<u64> = (0..4000u64)
            .map(|i| 5 + i * 997 % 1_200_000)
            .chain([10_000, 10_040, 10_050, 10_047, 10_048])
            .collect();
        for &v in &values {
            assert!(h.record(v).is_ok());
        }
        // A number at the end of a line, or after `le="`: NaN when there is none.
        let num =
            |text: Option<&str>| -> f64 { text.and_then(|t| t.parse().ok()).unwrap_or(f64::NAN) };
        let mut out = String::new();
        histogram_text(&mut out, "x", "b=\"1\"", &h);
        let mut buckets = 0;
        for line in out
            .lines()
            .filter(|l| l.starts_with("x_bucket") && !l.contains("+Inf"))
        {
            let le = num(line.split("le=\"").nth(1).and_then(|r| r.split('"').next()));
            let count = num(line.rsplit(' ').next());
            let le_us = (le * 1e6).round() as u64;
            assert_eq!(
                count,
                values.iter().filter(|&&v| v <= le_us).count() as f64,
                "{line}"
            );
            buckets += 1;
        }
        assert_eq!(buckets, 20);
        let exact: u64 = values.iter().sum();
        let sum = num(out
            .lines()
            .find(|l| l.starts_with("x_sum"))
            .and_then(|l| l.rsplit(' ').next()));
        assert!(
            (sum * 1e6 - exact as f64).abs() / (exact as f64) < 0.01,
            "{sum} vs {exact}"
        );
        // An empty histogram's sum is 0, not -0.
        let mut out = String::new();
        histogram_text(&mut out, "y", "", &crate::stats::histogram());
        assert!(out.lines().any(|l| l == "y_sum 0"), "{out}");
    }

    /// The query's token is percent-decoded: `%XX` is a byte, `+` stays `+`.
    #[test]
    fn the_query_token_is_percent_decoded() {
        let token = |path: &str| query_token(path).map(|t| t.into_owned());
        assert_eq!(
            token("/v1/stats?token=ops%2FToken%2B2026%3D%3D"),
            Some(b"ops/Token+2026==".to_vec())
        );
        assert_eq!(
            token("/?token=ops/Token%2B2026=="),
            Some(b"ops/Token+2026==".to_vec())
        );
        assert_eq!(
            token("/?token=ops/Token+2026=="),
            Some(b"ops/Token+2026==".to_vec())
        );
        assert_eq!(
            token("/?a=1&token=a%20b+c%25d&token=x"),
            Some(b"a b+c%d".to_vec())
        );
        assert_eq!(token("/?token=%C3%A9"), Some("é".as_bytes().to_vec()));
        // Not an escape: kept as written.
        assert_eq!(token("/?token=100%zz%"), Some(b"100%zz%".to_vec()));
        assert_eq!(token("/?tokens=x"), None);
        assert_eq!(token("/"), None);
    }

    #[test]
    fn a_known_path_takes_one_method() {
        assert_eq!(allowed_method("/v1/stats"), Some(Method::Get));
        assert_eq!(allowed_method("/"), Some(Method::Get));
        assert_eq!(allowed_method("/v1/admin/reload"), Some(Method::Post));
        assert_eq!(
            allowed_method("/v1/admin/buyers/acme/pause"),
            Some(Method::Post)
        );
        assert_eq!(allowed_method("/v1/admin/buyers/acme/stop"), None);
        assert_eq!(allowed_method("/v1/admin/buyers//pause"), None);
        assert_eq!(allowed_method("/healthz"), Some(Method::Get));
        assert_eq!(allowed_method("/nothing"), None);
    }
}
