//! Buyers over HTTPS: a real TLS buyer endpoint on loopback with a certificate from a test CA.

mod common;

use common::*;
use gavel::http::{Decoded, Limits, RequestDecoder};
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct TlsBuyer {
    addr: SocketAddr,
    ca_pem: String,
    connections: Arc<AtomicUsize>,
    posts: Arc<AtomicUsize>,
}

/// A TLS buyer that bids `cents` on every ping and accepts every post, keep-alive.
fn tls_buyer(cents: u32) -> TlsBuyer {
    tls_buyer_with(cents, false)
}

/// The same; with `reset`, each whole answer is followed at once by a TCP reset (no
/// close_notify, no FIN), as a buyer's proxy that drops connections hard does.
fn tls_buyer_with(cents: u32, reset: bool) -> TlsBuyer {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Gavel Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let posts = Arc::new(AtomicUsize::new(0));
    let (conns, posted) = (connections.clone(), posts.clone());
    std::thread::spawn(move || {
        for tcp in listener.incoming().take(256) {
            let Ok(tcp) = tcp else { return };
            if reset {
                // The answer leaves at once: held back by Nagle's algorithm behind the
                // session tickets, the reset would discard it unsent.
                let _ = tcp.set_nodelay(true);
            }
            conns.fetch_add(1, Ordering::Relaxed);
            let config = config.clone();
            let posted = posted.clone();
            std::thread::spawn(move || {
                let Ok(session) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(session, tcp);
                let mut decoder = RequestDecoder::new(Limits::default());
                let (mut buf, mut body, mut chunk) = (Vec::new(), Vec::new(), [0u8; 4096]);
                loop {
                    match decoder.decode(&buf, &mut body) {
                        Ok(Decoded::Complete { head, consumed }) => {
                            buf.drain(..consumed);
                            let answer = if head.path.ends_with("/ping") {
                                format!("{{\"bid\": {}.0, \"bid_id\": \"tls-1\"}}", cents / 100)
                            } else {
                                posted.fetch_add(1, Ordering::Relaxed);
                                "{\"status\": \"accepted\"}".to_string()
                            };
                            let mut out = Vec::new();
                            gavel::http::write_response(
                                &mut out,
                                200,
                                &[("Content-Type", "application/json")],
                                answer.as_bytes(),
                                true,
                            );
                            if tls.write_all(&out).is_err() {
                                return;
                            }
                            if reset {
                                let _ = tls.flush();
                                let sock = socket2::SockRef::from(&tls.sock);
                                let _ = sock.set_linger(Some(Duration::ZERO));
                                return;
                            }
                            continue;
                        }
                        Ok(Decoded::NeedMore { consumed }) => {
                            buf.drain(..consumed);
                        }
                        Err(_) => return,
                    }
                    match tls.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    TlsBuyer {
        addr,
        ca_pem: ca.pem(),
        connections,
        posts,
    }
}

fn with_tls_buyer(fleet: &Fleet, buyer: &TlsBuyer, trust: bool) -> String {
    let dir = temp_dir("tls");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &buyer.ca_pem).unwrap();
    let mut toml = config(fleet, "", |_| String::new());
    if trust {
        toml = toml.replace(
            "[journal]",
            &format!("[tls]\nca_files = [\"{}\"]\n\n[journal]", ca_file.display()),
        );
    }
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"secure\"\ncampaigns = [\"auto\"]\nping_url = \"https://{a}/ping\"\npost_url = \"https://{a}/post\"\nmin_idle = 1\n",
        a = buyer.addr
    ));
    toml
}

fn plain(name: &str, cents: i64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |k, _| match k {
        Kind::Ping => Reply::bid(cents, None),
        Kind::Post => Reply::accepted(),
    })
}

#[test]
fn an_https_buyer_bids_and_buys_over_kept_alive_tls_connections() {
    let buyer = tls_buyer(6000);
    let fleet = Fleet::start(vec![plain("plain", 2000)]).unwrap();
    let ex = Exchange::start(&with_tls_buyer(&fleet, &buyer, true));
    let mut c = ex.client();
    for _ in 0..5 {
        // Leads further apart than `REUSE_AFTER` (2 ms), after which an idle connection is
        // taken rather than a new one opened.
        std::thread::sleep(Duration::from_millis(5));
        let v = c.lead(LEAD).json();
        assert_eq!(v["status"], "sold", "{}", v);
        assert_eq!(v["sales"][0]["buyer"], "secure", "{}", v);
        assert_eq!(v["price"], 60.0);
    }
    assert_eq!(buyer.posts.load(Ordering::Relaxed), 5);
    // The warm one, and one the first post opened (a post does not follow its own lead's
    // ping on one connection while another may be opened); kept alive for the rest.
    assert_eq!(
        buyer.connections.load(Ordering::Relaxed),
        2,
        "TLS connections opened"
    );
}

/// An answer read whole before the buyer resets the connection is the buyer's answer: its bid
/// counts, and its post's acceptance is a sale (not a rejection the lead cascades past, which
/// would sell the consumer twice).
#[test]
fn an_https_buyer_that_resets_after_each_whole_answer_still_bids_and_buys() {
    let buyer = tls_buyer_with(6000, true);
    let fleet = Fleet::start(vec![plain("plain", 2000)]).unwrap();
    let ex = Exchange::start(&with_tls_buyer(&fleet, &buyer, true));
    let mut c = ex.client();
    for i in 0..4 {
        let v = c.lead(LEAD).json();
        assert_eq!(v["status"], "sold", "lead {i}: {v}");
        assert_eq!(v["sales"][0]["buyer"], "secure", "lead {i}: {v}");
        assert_eq!(v["price"], 60.0, "lead {i}: {v}");
        assert_eq!(v["sales"].as_array().map(Vec::len), Some(1), "{v}");
    }
    assert_eq!(buyer.posts.load(Ordering::Relaxed), 4);
    assert_eq!(fleet.posts(0), 0, "the consumer was sold twice");
}

#[test]
fn an_https_buyer_with_an_untrusted_certificate_costs_only_its_own_bid() {
    let buyer = tls_buyer(6000);
    let fleet = Fleet::start(vec![plain("plain", 2000)]).unwrap();
    let toml = with_tls_buyer(&fleet, &buyer, false);
    let ex = Exchange::start(&toml);
    let mut c = ex.client();
    let t = Instant::now();
    let v = c.lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "plain", "{}", v);
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(buyer.posts.load(Ordering::Relaxed), 0);
    // The journal says why, for the operator onboarding the buyer.
    let dir = journal_dir_of(&toml);
    let reasons: Vec<String> = gavel::journal::read_all(&dir)
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.record {
            gavel::journal::Record::PingResult { buyer, reason, .. } if buyer == "secure" => reason,
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("TLS") && reasons[0].contains("certificate"),
        "{reasons:?}"
    );
    // A failed handshake is a failed connect: the warm connection is tried again after a
    // backoff of 50 ms doubling to 1 s, about six times in three seconds, not every 50 ms.
    std::thread::sleep(Duration::from_secs(3));
    let n = buyer.connections.load(Ordering::Relaxed);
    assert!(n <= 12, "{n} handshakes in 3 s");
    let v = c.lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "plain", "{}", v);
}

#[test]
fn a_missing_ca_file_is_a_config_error_naming_the_key() {
    let fleet = Fleet::start(vec![plain("plain", 2000)]).unwrap();
    let toml = config(&fleet, "", |_| String::new()).replace(
        "[journal]",
        "[tls]\nca_files = [\"/nonexistent/ca.pem\"]\n\n[journal]",
    );
    match gavel::config::parse(&toml) {
        Err(gavel::config::ConfigError::Invalid(issues)) => {
            assert_eq!(issues[0].key, "tls.ca_files[0]");
            assert!(issues[0].line.is_some());
        }
        other => panic!("expected an invalid config, got {:?}", other.map(|_| ())),
    }
}

/// The operator is told on stderr why an https buyer's handshakes fail, once a minute at most,
/// however often the exchange tries it.
#[test]
fn a_failing_tls_handshake_is_told_on_stderr_once_a_minute_at_most() {
    let buyer = tls_buyer(6000);
    let fleet = Fleet::start(vec![plain("plain", 2000)]).unwrap();
    // And an https buyer nobody listens for: its connects fail before any handshake, which
    // is no TLS failure to tell.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!(
        "{}\n[[buyers]]\nid = \"gone\"\ncampaigns = [\"auto\"]\nping_url = \"https://{dead}/ping\"\npost_url = \"https://{dead}/post\"\n",
        with_tls_buyer(&fleet, &buyer, false)
    );
    let path = temp_dir("tls-log").join("gavel.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = spawn_serve_piped(&path);
    let rx = stderr_lines(&mut child);
    // The warm connection's handshake may fail before the address is announced.
    let mut told = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("gavel serve did not start");
        if line.contains("TLS handshake failed") {
            told.push(line.clone());
        }
        if let Some(a) = line
            .split("serving sellers on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        {
            break a;
        }
    };
    let v = Client::connect(addr).lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "plain", "{v}");
    // Three seconds of handshakes (the lead's and the warm connection's retries): one line.
    let until = Instant::now() + Duration::from_secs(3);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("TLS handshake failed") => told.push(line),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains(&format!("https://127.0.0.1:{}", buyer.addr.port()))
            && told[0].contains(
                "the buyer's certificate is not signed by a trusted CA (add the CA that signed \
                 it to tls.ca_files)"
            ),
        "{told:?}"
    );
    assert!(!told[0].contains("UnknownIssuer"), "in words: {told:?}");
    assert!(buyer.connections.load(Ordering::Relaxed) >= 2);
}

/// A reload re-reads the CA files: a CA taken out of the same file is no longer trusted (the
/// buyer's open TLS connections are not kept), and put back, it is again.
#[test]
fn a_reload_reads_the_ca_files_again_even_under_the_same_paths() {
    const TOKEN: &str = "test-operator-token";
    let buyer = tls_buyer(6000);
    let other = tls_buyer(100);
    let fleet = Fleet::start(vec![plain("plain", 2000)]).unwrap();
    let toml = with_tls_buyer(&fleet, &buyer, true).replace(
        "max_in_flight = 1000",
        &format!(
            "max_in_flight = 1000\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"{TOKEN}\""
        ),
    );
    let ca_file = toml
        .lines()
        .find_map(|l| l.strip_prefix("ca_files = [\""))
        .and_then(|l| l.strip_suffix("\"]"))
        .unwrap()
        .to_string();
    let path = temp_dir("tls-reload").join("gavel.toml");
    std::fs::write(&path, &toml).unwrap();
    let ex = Exchange::start_file(&path);
    let admin = ex.handle.as_ref().and_then(|h| h.admin_addr()).unwrap();
    let reload = || {
        let mut c = Client::connect(admin);
        c.send_raw(
            format!(
                "POST /v1/admin/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = c.read_response().unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };
    let mut c = ex.client();
    let winner = |c: &mut Client| c.lead(LEAD).json()["sales"][0]["buyer"].clone();
    assert_eq!(winner(&mut c), "secure");

    // The same file, another CA in it: the buyer's certificate is no longer trusted.
    std::fs::write(&ca_file, &other.ca_pem).unwrap();
    let v = reload();
    assert_eq!(v["settings"], serde_json::json!(["tls.ca_files"]), "{v}");
    assert_eq!(winner(&mut c), "plain");

    // Its CA back in the file: trusted again.
    std::fs::write(&ca_file, format!("{}{}", other.ca_pem, buyer.ca_pem)).unwrap();
    reload();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut won = winner(&mut c);
    // A failed handshake backs the pool off for up to a second before the next try.
    while won != "secure" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        won = winner(&mut c);
    }
    assert_eq!(won, "secure");
}

/// An https buyer that takes the connection but never answers the TLS handshake: the exchange
/// gives up on the handshake after 3 s (a failed connect), instead of holding the warm
/// connection open for ever; leads go on to the other buyers meanwhile.
#[test]
fn a_buyer_that_never_finishes_the_handshake_is_given_up_on() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (c2, a2) = (closed.clone(), accepted.clone());
    std::thread::spawn(move || {
        for tcp in listener.incoming().take(64) {
            let Ok(mut tcp) = tcp else { return };
            a2.fetch_add(1, Ordering::SeqCst);
            let c2 = c2.clone();
            std::thread::spawn(move || {
                // Read the ClientHello and whatever follows; answer nothing.
                let mut b = [0u8; 4096];
                loop {
                    match tcp.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                c2.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let fleet = Fleet::start(vec![plain("plain", 2000)]).unwrap();
    let mut toml = config(&fleet, "", |_| String::new());
    toml.push_str(&format!(
        "\n[[buyers]]\nid = \"stall\"\ncampaigns = [\"auto\"]\nping_url = \"https://{addr}/ping\"\npost_url = \"https://{addr}/post\"\nmin_idle = 1\n"
    ));
    let ex = Exchange::start(&toml);
    let deadline = Instant::now() + Duration::from_secs(8);
    while closed.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        closed.load(Ordering::SeqCst) >= 1,
        "a stalled handshake was held open ({} accepted)",
        accepted.load(Ordering::SeqCst)
    );
    // Leads go on to the other buyer, answered by their deadline.
    let mut c = ex.client();
    for _ in 0..3 {
        let t = Instant::now();
        let v = c.lead(LEAD).json();
        assert_eq!(v["sales"][0]["buyer"], "plain", "{v}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
    }
}
