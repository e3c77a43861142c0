//! The seller API over TLS (`[server.tls]`): real sockets on loopback, a real rustls client
//! trusting a test CA, and the `gavel check` / `gavel serve` refusals of bad files.

mod common;

use common::*;
use gavel::http::{Decoded, Limits, ResponseDecoder};
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A test CA and a server certificate for 127.0.0.1 and localhost, as PEM files in `dir`.
struct Certs {
    cert_file: PathBuf,
    key_file: PathBuf,
    ca_der: CertificateDer<'static>,
}

fn certs(dir: &Path) -> Certs {
    certs_valid(dir, None)
}

/// A date as year, month, day.
type Ymd = (i32, u8, u8);

/// [`certs`], the server's certificate valid from the first date to the second when given.
fn certs_valid(dir: &Path, valid: Option<(Ymd, Ymd)>) -> Certs {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Gavel Seller Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    if let Some(((y0, m0, d0), (y1, m1, d1))) = valid {
        params.not_before = rcgen::date_time_ymd(y0, m0, d0);
        params.not_after = rcgen::date_time_ymd(y1, m1, d1);
    }
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let cert_file = dir.join("server.pem");
    let key_file = dir.join("server.key");
    // The chain: the server's certificate, then the CA's.
    std::fs::write(&cert_file, format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    Certs {
        cert_file,
        key_file,
        ca_der: CertificateDer::from(ca.der().to_vec()),
    }
}

fn bidder(name: &str, cents: i64, delay_ms: u64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, Some("b-1")).after_ms(delay_ms),
        Kind::Post => Reply::accepted(),
    })
}

/// The common test config with `[server.tls]` and a short head timeout.
fn tls_config(fleet: &Fleet, certs: &Certs, head_timeout_ms: u64) -> String {
    config(fleet, "", |_| String::new()).replace(
        "max_in_flight = 1000\n",
        &format!(
            "max_in_flight = 1000\nhead_timeout_ms = {}\n\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            head_timeout_ms,
            certs.cert_file.display(),
            certs.key_file.display()
        ),
    )
}

fn client_config(certs: &Certs, alpn: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Arc::new(config)
}

/// A keep-alive seller connection over TLS (blocking rustls client).
struct TlsClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> TlsClient {
        let tcp = TcpStream::connect(addr).expect("connect to exchange");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let session = rustls::ClientConnection::new(config.clone(), name).unwrap();
        TlsClient {
            tls: rustls::StreamOwned::new(session, tcp),
            buf: Vec::new(),
        }
    }

    /// Finish the handshake now (it otherwise happens with the first write).
    fn handshake(&mut self) {
        while self.tls.conn.is_handshaking() {
            self.tls
                .conn
                .complete_io(&mut self.tls.sock)
                .expect("TLS handshake");
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.tls.write_all(bytes).expect("write over TLS");
        self.tls.flush().expect("flush over TLS");
    }

    fn lead(&mut self, body: &str) -> Response {
        self.send(&Client::request(
            "POST",
            "/v1/leads",
            Some(KEY),
            body.as_bytes(),
        ));
        self.read_response().expect("an answer")
    }

    /// One response; `None` when the exchange ended the session first.
    fn read_response(&mut self) -> Option<Response> {
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
            match self.tls.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => panic!("reading answer over TLS: {}", e),
            }
        }
    }

    /// The exchange ended the session with close_notify (a clean TLS close).
    fn closed_cleanly(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(self.tls.read(&mut b), Ok(0))
    }
}

/// Read from a plain socket until the exchange closes it; `None` when it stays open.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while start.elapsed() < limit {
        match stream.read(&mut b) {
            Ok(0) => return Some((start.elapsed(), got)),
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some((start.elapsed(), got)),
        }
    }
    None
}

#[test]
fn a_lead_posted_over_tls_is_auctioned_and_answered() {
    let dir = temp_dir("seller-tls");
    let certs = certs(&dir);
    let fleet = Fleet::start(vec![bidder("low", 2000, 0), bidder("high", 6150, 0)]).unwrap();
    let ex = Exchange::start(&tls_config(&fleet, &certs, 10_000));
    let mut c = TlsClient::connect(ex.addr, &client_config(&certs, true));
    let r = c.lead(LEAD);
    assert_eq!(r.status, 200);
    assert!(r.keep_alive);
    let v = r.json();
    assert_eq!(v["status"], "sold", "{}", v);
    assert_eq!(v["price"], 61.5, "{}", v);
    assert_eq!(v["sales"][0]["buyer"], "high", "{}", v);
    assert_eq!(v["payout"], 49.2, "{}", v);
    assert_eq!(c.tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(fleet.posts(1), 1);
}

#[test]
fn a_tls_connection_keeps_alive_and_answers_pipelined_requests_in_order() {
    let dir = temp_dir("seller-tls");
    let certs = certs(&dir);
    let fleet = Fleet::start(vec![bidder("a", 1000, 100)]).unwrap();
    let ex = Exchange::start(&tls_config(&fleet, &certs, 10_000));
    // No ALPN offered: plain HTTP/1.1 over TLS all the same.
    let mut c = TlsClient::connect(ex.addr, &client_config(&certs, false));
    for _ in 0..4 {
        let v = c.lead(LEAD).json();
        assert_eq!(v["status"], "sold", "{}", v);
        assert_eq!(v["price"], 10.0);
    }
    // The first lead waits on a 100 ms buyer; the answers behind it must keep their places.
    let mut bytes = Client::request("POST", "/v1/leads", Some(KEY), LEAD.as_bytes());
    bytes.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    bytes.extend_from_slice(&Client::request("POST", "/v1/leads", None, b"{}"));
    bytes.extend_from_slice(&Client::request(
        "POST",
        "/v1/leads",
        Some(KEY),
        LEAD.as_bytes(),
    ));
    c.send(&bytes);
    let first = c.read_response().unwrap();
    let second = c.read_response().unwrap();
    let third = c.read_response().unwrap();
    let fourth = c.read_response().unwrap();
    assert_eq!(first.json()["status"], "sold");
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["status"], "ok");
    assert_eq!(third.status, 401);
    assert_eq!(fourth.json()["status"], "sold");
    assert_eq!(fleet.posts(0), 6);
    // A bad head: 400, then the session is closed with close_notify.
    c.send(b"NOT HTTP AT ALL\r\n\r\n");
    let bad = c.read_response().unwrap();
    assert_eq!(bad.status, 400);
    assert!(!bad.keep_alive);
    assert!(c.closed_cleanly(), "close_notify after the 400");
}

#[test]
fn plain_http_or_garbage_on_the_tls_port_is_disconnected_and_tls_clients_go_on() {
    let dir = temp_dir("seller-tls");
    let certs = certs(&dir);
    let fleet = Fleet::start(vec![bidder("a", 1500, 0)]).unwrap();
    let ex = Exchange::start(&tls_config(&fleet, &certs, 10_000));
    let config = client_config(&certs, true);
    // A TLS client already connected before the bad ones arrive.
    let mut before = TlsClient::connect(ex.addr, &config);
    assert_eq!(before.lead(LEAD).json()["status"], "sold");

    let mut plain = TcpStream::connect(ex.addr).unwrap();
    plain
        .write_all(&Client::request(
            "POST",
            "/v1/leads",
            Some(KEY),
            LEAD.as_bytes(),
        ))
        .unwrap();
    let (_, got) = closed_within(&mut plain, Duration::from_secs(5))
        .expect("a plain HTTP client on the TLS port is disconnected");
    assert!(
        !got.starts_with(b"HTTP/"),
        "no plaintext answer: {:?}",
        String::from_utf8_lossy(&got)
    );

    let mut garbage = TcpStream::connect(ex.addr).unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    assert!(
        closed_within(&mut garbage, Duration::from_secs(5)).is_some(),
        "a malformed handshake is disconnected"
    );

    // Nothing else was touched: the old session and a new one are served.
    assert_eq!(before.lead(LEAD).json()["status"], "sold");
    let mut after = TlsClient::connect(ex.addr, &config);
    assert_eq!(after.lead(LEAD).json()["status"], "sold");
    assert_eq!(fleet.posts(0), 3, "no lead came through the plain client");
}

#[test]
fn a_stalled_handshake_is_closed_after_the_head_timeout_but_an_idle_session_is_not() {
    let dir = temp_dir("seller-tls");
    let certs = certs(&dir);
    let fleet = Fleet::start(vec![bidder("a", 1500, 0)]).unwrap();
    let ex = Exchange::start(&tls_config(&fleet, &certs, 300));
    let config = client_config(&certs, true);

    let opened = Instant::now();
    // TCP open, not a byte of TLS.
    let mut silent = TcpStream::connect(ex.addr).unwrap();
    // Half a ClientHello, then nothing.
    let mut half = TcpStream::connect(ex.addr).unwrap();
    let mut hello = Vec::new();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut session = rustls::ClientConnection::new(config.clone(), name).unwrap();
    session.write_tls(&mut hello).unwrap();
    half.write_all(&hello[..hello.len() / 2]).unwrap();
    // A session whose handshake is done, then idle (no request yet).
    let mut idle = TlsClient::connect(ex.addr, &config);
    idle.handshake();

    for (what, s) in [("silent", &mut silent), ("half a hello", &mut half)] {
        closed_within(s, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{}: still open after 5 s", what));
        let after = opened.elapsed();
        assert!(
            after >= Duration::from_millis(200) && after < Duration::from_millis(2000),
            "{}: closed after {:?}",
            what,
            after
        );
    }
    // Idle past the head timeout is not a slow request: the session still serves.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(idle.lead(LEAD).json()["status"], "sold");
}

fn gavel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gavel"))
}

/// Run `gavel <cmd> --config` on `toml`; exit code and all output.
fn run(cmd: &str, toml: &str) -> (Option<i32>, String, String) {
    let dir = temp_dir("seller-tls-check");
    let path = dir.join("gavel.toml");
    std::fs::write(&path, toml).unwrap();
    let out = gavel().args([cmd, "--config"]).arg(&path).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_and_serve_refuse_a_missing_or_bad_certificate_or_key_naming_the_key() {
    let dir = temp_dir("seller-tls");
    let certs = certs(&dir);
    let fleet = Fleet::start(vec![bidder("a", 1500, 0)]).unwrap();
    let good = tls_config(&fleet, &certs, 10_000);

    let (code, out, err) = run("check", &good);
    assert_eq!(code, Some(0), "{}{}", out, err);
    let tls_warning = |text: &str| {
        text.lines()
            .any(|l| l.contains("warning") && l.to_ascii_lowercase().contains("tls"))
    };
    assert!(
        !tls_warning(&out) && !tls_warning(&err),
        "no warning for [server.tls]: {}{}",
        out,
        err
    );

    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN NONSENSE-----\nnot base64 at all\n").unwrap();
    let encrypted = dir.join("encrypted.key");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n\
         -----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let other_key = dir.join("other.key");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let key = certs.key_file.display().to_string();
    let cert = certs.cert_file.display().to_string();
    let cases = [
        (
            good.replace(&key, "/nonexistent/server.key"),
            "server.tls.key_file",
        ),
        (
            good.replace(&key, &garbage.display().to_string()),
            "server.tls.key_file",
        ),
        (
            good.replace(&key, &cert),
            "server.tls.key_file", // a certificate where the key should be
        ),
        (
            good.replace(&key, &other_key.display().to_string()),
            "server.tls.key_file", // a key that does not belong to the certificate
        ),
        (
            good.replace(&cert, "/nonexistent/server.pem"),
            "server.tls.cert_file",
        ),
        (
            good.replace(&cert, &garbage.display().to_string()),
            "server.tls.cert_file",
        ),
    ];
    for (toml, named) in &cases {
        let (code, out, err) = run("check", toml);
        assert_eq!(code, Some(1), "check: {}{}", out, err);
        assert!(err.contains(named), "check should name {}: {}", named, err);
        assert!(err.contains("line "), "with its line: {}", err);
    }
    // An encrypted key is named as one.
    let (code, out, err) = run(
        "check",
        &good.replace(&key, &encrypted.display().to_string()),
    );
    assert_eq!(code, Some(1), "check: {}{}", out, err);
    assert!(
        err.contains("server.tls.key_file") && err.contains("an encrypted private key"),
        "{err}"
    );
    // `serve` refuses to start, with that one line.
    let (code, out, err) = run("serve", &cases[0].0);
    assert_eq!(code, Some(1), "serve: {}{}", out, err);
    assert_eq!(err.trim().lines().count(), 1, "{}", err);
    assert!(err.contains("server.tls.key_file"), "{}", err);
    // Both files missing: both are named in the one run, each on its line.
    let both = good
        .replace(&key, "/nonexistent/server.key")
        .replace(&cert, "/nonexistent/server.pem");
    let (code, out, err) = run("check", &both);
    assert_eq!(code, Some(1), "check: {}{}", out, err);
    assert_eq!(err.trim().lines().count(), 2, "{}", err);
    assert!(err.contains("server.tls.cert_file"), "{}", err);
    assert!(err.contains("server.tls.key_file"), "{}", err);
}

#[test]
fn check_and_serve_warn_of_a_seller_certificate_out_of_its_dates() {
    let fleet = Fleet::start(vec![bidder("a", 1500, 0)]).unwrap();
    for (name, valid, said) in [
        (
            "expired",
            ((2020, 1, 1), (2021, 3, 4)),
            "the certificate expired on 2021-03-04 00:00 UTC",
        ),
        (
            "not-yet",
            ((2090, 1, 1), (2091, 1, 1)),
            "the certificate is not valid before 2090-01-01 00:00 UTC",
        ),
    ] {
        let dir = temp_dir(&format!("seller-tls-{name}"));
        let certs = certs_valid(&dir, Some(valid));
        let toml = tls_config(&fleet, &certs, 10_000);
        // rustls takes the certificate (clients judge its dates), so the config is valid...
        let (code, out, err) = run("check", &toml);
        assert_eq!(code, Some(0), "{name}: {out}{err}");
        // ...and the operator is told, once, before sellers' handshakes fail.
        let warned: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("warning: server.tls.cert_file: "))
            .collect();
        assert_eq!(warned.len(), 1, "{name}: {out}");
        assert!(warned[0].contains(said), "{name}: {out}");
    }
    // A certificate well within its dates: no warning.
    let dir = temp_dir("seller-tls-current");
    let certs = certs_valid(&dir, Some(((2020, 1, 1), (2999, 1, 1))));
    let (code, out, err) = run("check", &tls_config(&fleet, &certs, 10_000));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!out.contains("server.tls.cert_file"), "{out}");
}

/// Whether a TLS handshake with the exchange succeeds for a client trusting `certs`' CA.
fn handshake_ok(addr: SocketAddr, certs: &Certs) -> bool {
    let mut c = TlsClient::connect(addr, &client_config(certs, true));
    while c.tls.conn.is_handshaking() {
        if c.tls.conn.complete_io(&mut c.tls.sock).is_err() {
            return false;
        }
    }
    true
}

/// A certificate renewed at the same paths, or given at new ones, is served to new connections
/// after a reload, which names `server.tls` among the settings changed; sessions already open
/// keep going. A reload with a bad key changes nothing, and one that turns TLS off is refused
/// as a restart's.
#[test]
fn a_reload_serves_a_renewed_certificate_to_new_connections() {
    const TOKEN: &str = "test-operator-token";
    let dir = temp_dir("seller-tls-reload");
    let first = certs(&dir);
    let fleet = Fleet::start(vec![bidder("acme", 5000, 0)]).unwrap();
    let with_admin = |toml: String| {
        toml.replace(
            "workers = 1\n",
            "workers = 2\nadmin_listen = \"127.0.0.1:0\"\n",
        )
        .replace(
            "[journal]",
            &format!("[admin]\ntoken = \"{TOKEN}\"\n\n[journal]"),
        )
    };
    let path = dir.join("gavel.toml");
    let base = with_admin(tls_config(&fleet, &first, 10_000));
    std::fs::write(&path, &base).unwrap();
    let ex = Exchange::start_file(&path);
    let admin = ex.admin_addr();
    let reload = || operator_request(admin, "POST", "/v1/admin/reload", TOKEN);
    let mut open = TlsClient::connect(ex.addr, &client_config(&first, true));
    assert_eq!(open.lead(LEAD).json()["status"], "sold");

    // Renewed in place: a new CA and key at the same paths.
    let renewed = certs(&dir);
    let r = reload();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert!(
        v["settings"]
            .as_array()
            .is_some_and(|s| s.iter().any(|k| k == "server.tls")),
        "{v}"
    );
    assert!(handshake_ok(ex.addr, &renewed), "the renewed certificate");
    assert!(!handshake_ok(ex.addr, &first), "the old certificate");
    let mut new = TlsClient::connect(ex.addr, &client_config(&renewed, true));
    assert_eq!(new.lead(LEAD).json()["status"], "sold");
    assert_eq!(
        open.lead(LEAD).json()["status"],
        "sold",
        "an open session keeps going"
    );

    // At new paths.
    let other_dir = temp_dir("seller-tls-reload-2");
    let moved = certs(&other_dir);
    let files = |c: &Certs| {
        format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\n",
            c.cert_file.display(),
            c.key_file.display()
        )
    };
    assert!(base.contains(&files(&first)));
    std::fs::write(&path, base.replace(&files(&first), &files(&moved))).unwrap();
    let r = reload();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(handshake_ok(ex.addr, &moved));
    assert!(!handshake_ok(ex.addr, &renewed));

    // A key that does not match: refused, the certificate in force still served.
    std::fs::write(
        &moved.key_file,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let r = reload();
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["field"], "server.tls.key_file");
    assert!(handshake_ok(ex.addr, &moved));

    // TLS off: the listener's, a restart's.
    let plain = base.replace(&format!("[server.tls]\n{}", files(&first)), "");
    assert!(!plain.contains("server.tls"));
    std::fs::write(&path, plain).unwrap();
    let r = reload();
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["restart_required"][0]["key"], "server.tls", "{v}");
    assert_eq!(v["restart_required"][0]["running"], "on", "{v}");
    assert_eq!(v["restart_required"][0]["file"], "none", "{v}");
    assert!(handshake_ok(ex.addr, &moved));
}
