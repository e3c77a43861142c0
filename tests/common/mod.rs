//! Test helpers: start the exchange on loopback from TOML text, talk to it as a seller would.
#![allow(dead_code)]

use gavel::http::{Decoded, Limits, ResponseDecoder};
use gavel::sim::buyer::Fleet;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub const KEY: &str = "sk-test-0123456789";
pub const OTHER_KEY: &str = "sk-other-0123456789";

pub const LEAD: &str = r#"{"campaign": "auto", "source": "fb-17",
  "lead": {"first_name": "Ana", "last_name": "Diaz", "email": "ana@example.com", "phone": "7135550147",
           "street": "12 Main St", "city": "Houston", "state": "TX", "zip": "77002",
           "lead_type": "auto", "age": 34, "insured": true},
  "consent": {"trustedform_cert_url": "https://cert.trustedform.com/2f1e0c", "vertical": "auto_insurance"}}"#;

/// A config with one seller on campaign `auto` and one buyer per fleet endpoint.
/// `campaign_extra` lines go into the campaign, `buyer_extra(i)` into buyer i.
pub fn config(
    fleet: &Fleet,
    campaign_extra: &str,
    buyer_extra: impl Fn(usize) -> String,
) -> String {
    let mut s = format!(
        r#"
[server]
listen = "127.0.0.1:0"
workers = 1
max_in_flight = 1000

[journal]
dir = "{journal}"
sync = "os"

[[sellers]]
id = "seller-1"
api_key = "{KEY}"
campaigns = ["auto"]
payout_share = 0.80

[[sellers]]
id = "seller-2"
api_key = "{OTHER_KEY}"
campaigns = ["other"]
payout_fixed = 20.00

[[campaigns]]
id = "auto"
vertical = "auto_insurance"
ping_timeout_ms = 300
post_timeout_ms = 500
reserve_price = 5.00
ping_fields = ["state", "zip", "lead_type", "age", "insured"]
required_fields = ["first_name", "phone", "email", "state", "zip"]
require_consent = true
{campaign_extra}

[[campaigns]]
id = "other"
vertical = "solar"
"#,
        journal = temp_dir("journal").display()
    );
    for i in 0..fleet.len() {
        s.push_str(&format!(
            r#"
[[buyers]]
id = "{name}"
campaigns = ["auto"]
ping_url = "{ping}"
post_url = "{post}"
min_idle = 1
{extra}
"#,
            name = fleet.name(i),
            ping = fleet.ping_url(i),
            post = fleet.post_url(i),
            extra = buyer_extra(i)
        ));
    }
    s
}

pub fn temp_dir(what: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    static REGISTER: std::sync::Once = std::sync::Once::new();
    let d = std::env::temp_dir().join(format!(
        "gavel-test-{}-{}-{}",
        what,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    // SAFETY: atexit with a function that takes and returns nothing, registered once.
    REGISTER.call_once(|| unsafe {
        libc::atexit(remove_temp_dirs);
    });
    if let Ok(mut made) = MADE.lock() {
        made.push(d.clone());
    }
    d
}

/// Every directory `temp_dir` made in this test process (journals of a few MiB each).
static MADE: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Run at the test process's exit, whether its tests passed or not: a test run leaves nothing
/// in the temporary directory. `GAVEL_KEEP_TEST_DIRS=1` keeps them for a post-mortem.
extern "C" fn remove_temp_dirs() {
    if std::env::var_os("GAVEL_KEEP_TEST_DIRS").is_some() {
        return;
    }
    if let Ok(made) = MADE.lock() {
        for d in made.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub struct Exchange {
    pub handle: Option<gavel::net::ServerHandle>,
    pub addr: SocketAddr,
}

impl Exchange {
    pub fn start(toml: &str) -> Exchange {
        let snap = match gavel::config::parse(toml) {
            Ok(s) => s,
            Err(e) => panic!("test config invalid: {}\n{}", e, toml),
        };
        let handle = gavel::net::start(Arc::new(snap)).expect("start exchange");
        let addr = handle.local_addr();
        Exchange {
            handle: Some(handle),
            addr,
        }
    }

    /// Start from a config file, as `gavel serve --config FILE` does (so it can be reloaded).
    pub fn start_file(path: &std::path::Path) -> Exchange {
        let snap = match gavel::config::load(path) {
            Ok(s) => s,
            Err(e) => panic!("test config invalid: {}", e),
        };
        let handle = gavel::net::start(Arc::new(snap)).expect("start exchange");
        let addr = handle.local_addr();
        Exchange {
            handle: Some(handle),
            addr,
        }
    }

    /// The operator listener (the config must have `admin_listen`).
    #[allow(dead_code)]
    pub fn admin_addr(&self) -> SocketAddr {
        self.handle
            .as_ref()
            .and_then(|h| h.admin_addr())
            .expect("admin listener")
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub keep_alive: bool,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "answer is not JSON ({}): {}",
                e,
                String::from_utf8_lossy(&self.body)
            ),
        }
    }
}

/// A keep-alive seller connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// `n` leads sent at once to `addr`, each on its own connection and with its own email (so none
/// is a duplicate of another); the clients, to read the answers from.
#[allow(dead_code)]
pub fn send_leads_at_once(addr: SocketAddr, n: usize) -> Vec<Client> {
    (0..n)
        .map(|i| {
            let mut c = Client::connect(addr);
            let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
            c.send_raw(&Client::request(
                "POST",
                "/v1/leads",
                Some(KEY),
                lead.as_bytes(),
            ));
            c
        })
        .collect()
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to exchange");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    pub fn request(method: &str, path: &str, key: Option<&str>, body: &[u8]) -> Vec<u8> {
        let mut r = format!("{} {} HTTP/1.1\r\nHost: gavel\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", method, path, body.len());
        if let Some(k) = key {
            r.push_str(&format!("Authorization: Bearer {}\r\n", k));
        }
        r.push_str("\r\n");
        let mut v = r.into_bytes();
        v.extend_from_slice(body);
        v
    }

    pub fn post(&mut self, path: &str, key: Option<&str>, body: &[u8]) -> Response {
        self.send_raw(&Client::request("POST", path, key, body));
        self.read_response().expect("an answer")
    }

    pub fn lead(&mut self, body: &str) -> Response {
        self.post("/v1/leads", Some(KEY), body.as_bytes())
    }

    /// Read one response; `None` when the exchange closed the connection first.
    pub fn read_response(&mut self) -> Option<Response> {
        let mut dec = ResponseDecoder::new(Limits::default());
        let mut body = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if !self.buf.is_empty() {
                match dec.decode(&self.buf, &mut body) {
                    Ok(Decoded::Complete { head, consumed }) => {
                        self.buf.drain(..consumed);
                        return Some(Response {
                            status: head.status,
                            keep_alive: head.keep_alive,
                            retry_after: head.retry_after.as_deref().map(str::to_string),
                            body,
                        });
                    }
                    Ok(Decoded::NeedMore { consumed }) => {
                        self.buf.drain(..consumed);
                    }
                    Err(e) => panic!("bad HTTP from exchange: {:?}", e),
                }
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading answer: {}", e),
            }
        }
    }

    /// True when the exchange closed the connection (reads EOF within the timeout).
    pub fn closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(self.stream.read(&mut b), Ok(0))
            || matches!(self.stream.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// Parse a JSON body the exchange sent to a buyer.
/// One request to the operator listener with `token`, on a new connection, and its answer.
#[allow(dead_code)]
pub fn operator_request(admin: SocketAddr, method: &str, path: &str, token: &str) -> Response {
    let mut c = Client::connect(admin);
    c.send_raw(&Client::request(method, path, Some(token), b""));
    c.read_response()
        .expect("an answer from the operator listener")
}

pub fn body_json(b: &[u8]) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("buyer got non-JSON ({}): {}", e, String::from_utf8_lossy(b)))
}

// ---------------------------------------------------------------------------------------------
// The real binary as a process.
// ---------------------------------------------------------------------------------------------

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub fn gavel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gavel"))
}

/// Start `gavel serve` and read the seller address it announces.
pub fn serve(config: &Path) -> (Child, SocketAddr) {
    let (child, addr, _) = serve_logged(config);
    (child, addr)
}

/// Spawn `gavel serve --config CONFIG` with its stderr piped to the test.
pub fn spawn_serve_piped(config: &Path) -> Child {
    gavel()
        .args(["serve", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gavel serve")
}

/// The journal directory a test config names (`[journal] dir`).
#[allow(dead_code)]
pub fn journal_dir_of(toml: &str) -> std::path::PathBuf {
    toml.lines()
        .find_map(|l| l.strip_prefix("dir = \""))
        .and_then(|l| l.strip_suffix('"'))
        .map(std::path::PathBuf::from)
        .expect("the config names its journal dir")
}

/// The lines of a child's piped stderr, as they come, on a channel (read by a thread).
#[allow(dead_code)]
pub fn stderr_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Start `gavel serve`; also return what it printed on stderr before announcing its address.
pub fn serve_logged(config: &Path) -> (Child, SocketAddr, Vec<String>) {
    let mut log = Vec::new();
    let mut child = spawn_serve_piped(config);
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    for _ in 0..50 {
        line.clear();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        log.push(line.trim_end().to_string());
        if let Some(rest) = line.split("serving sellers on ").nth(1) {
            if let Some(addr) = rest.split_whitespace().next().and_then(|a| a.parse().ok()) {
                // Keep draining stderr so the child never blocks on a full pipe.
                std::thread::spawn(move || {
                    let mut sink = String::new();
                    while stderr.read_line(&mut sink).unwrap_or(0) > 0 {
                        sink.clear();
                    }
                });
                return (child, addr, log);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("gavel serve did not start: {}", line);
}

/// The journal in `dir`, opened by the test itself (the exchange not running) to write the
/// records a scenario needs: 1 MiB segments, no sync, nothing removed.
#[allow(dead_code)]
pub fn open_journal(dir: impl Into<std::path::PathBuf>) -> gavel::journal::Journal {
    let (j, _) = gavel::journal::Journal::open(gavel::journal::JournalOptions {
        dir: dir.into(),
        segment_bytes: 1 << 20,
        sync: gavel::journal::SyncMode::Os,
        retain_segments: 0,
        keep_us: gavel::journal::CAP_WINDOW_US,
    })
    .expect("open the test journal");
    j
}

/// Wait for `child` at most `limit`, killing it when it runs past; its exit code and stderr.
pub fn finish_within(mut child: std::process::Child, limit: Duration) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The journal directory a test config names.
pub fn journal_dir(toml: &str) -> String {
    toml.lines()
        .find_map(|l| l.strip_prefix("dir = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("the config names its journal")
        .to_string()
}
