//! The `gavel-load` binary from the outside: its usage errors, its word when the target is
//! not there, and the report it prints when a signal stops it.

mod common;

use common::finish_within;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A seller-API stand-in on loopback: every lead is answered unsold at once.
fn unsold_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

fn serve(stream: TcpStream) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer =
            r#"{"lead_id":"01J","status":"unsold","price":0.0,"payout":0.0,"elapsed_ms":1}"#;
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// A port bound but not listening: connections to it are refused while the socket lives.
fn dead_port() -> (socket2::Socket, SocketAddr) {
    let holder =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    holder.bind(&any.into()).expect("bind");
    let dead = holder
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet");
    (holder, dead)
}

fn load(target: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gavel-load"));
    cmd.args(["--target", target, "--key", "k", "--campaign", "c"])
        .args(["--warmup-ms", "0", "--connections", "2"])
        .args(extra);
    cmd
}

#[test]
fn a_var_that_is_not_json_is_a_usage_error_naming_it() {
    let (_holder, dead) = dead_port();
    let target = dead.to_string();
    // `vertical` is a variable of the default lead.
    let out = load(&target, &["--var", "vertical=auto_insurance"])
        .output()
        .expect("run gavel-load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("--var vertical"), "{err}");
    assert!(out.stdout.is_empty());

    // Quoted, the same value is JSON: the run goes on to the target, which is not there.
    let out = load(&target, &["--var", "vertical=\"auto_insurance\""])
        .output()
        .expect("run gavel-load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot connect to {target}")),
        "the target is named: {err}"
    );
}

/// Start a long run at a live target, signal it once it has answered leads, and collect it.
fn stopped_run(target: SocketAddr, signal: libc::c_int, extra: &[&str]) -> (Output, Duration) {
    let addr = target.to_string();
    let child = load(&addr, &["--rate", "200", "--duration-s", "60"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gavel-load");
    std::thread::sleep(Duration::from_millis(800));
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let t0 = Instant::now();
    // SAFETY: kill(2) on the child this test started and still owns.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let out = child.wait_with_output().expect("wait for gavel-load");
    (out, t0.elapsed())
}

#[test]
fn sigterm_stops_the_run_and_prints_what_it_measured() {
    let (out, took) = stopped_run(unsold_server(), libc::SIGTERM, &["--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["stopped_early"], true, "{report}");
    let answered = report["answered"].as_u64().expect("answered");
    assert!(answered > 0, "{report}");
    assert_eq!(report["scheduled"], report["sent"], "{report}");
    assert!(
        report["duration_ms"].as_u64().expect("ms") < 5_000,
        "{report}"
    );
}

/// A seller-API stand-in that reads every request and answers none: a stalled exchange.
fn stalled_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            if let Ok(mut reader) = stream.try_clone() {
                std::thread::spawn(move || {
                    let mut sink = [0u8; 4096];
                    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                });
            }
            held.push(stream);
        }
    });
    addr
}

/// A run stopped while the target is stalled: the leads that were due and waiting for a
/// connection are in the report, as scheduled and unsent, not left out of it.
#[test]
fn leads_due_when_a_stalled_run_is_stopped_count_as_unsent() {
    let (out, _) = stopped_run(stalled_server(), libc::SIGTERM, &["--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let n = |k: &str| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {report}"))
    };
    // Two connections, one lead each, never answered: the rest waited.
    assert_eq!(n("sent"), 2, "{report}");
    assert_eq!(n("scheduled"), n("sent") + n("unsent"), "{report}");
    // About 0.8 s at 200 a second were due (the stop's own timing is the machine's).
    assert!(n("unsent") >= 100, "{report}");
    assert!(
        n("scheduled") <= 200 * (n("duration_ms") + 1_000) / 1_000,
        "{report}"
    );
    assert_eq!(report["stopped_early"], true, "{report}");
}

#[test]
fn sigint_stops_the_run_and_the_text_report_says_so() {
    let (out, took) = stopped_run(unsold_server(), libc::SIGINT, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\nstopped   early"), "{text}");
    assert!(text.contains("latency   us from due time"), "{text}");
}

#[test]
fn a_reader_gone_is_a_quiet_end_and_a_full_disk_an_error() {
    let addr = unsold_server().to_string();
    // `gavel-load ... | head -1`: the reader has gone by the time the report is written.
    let mut child = load(&addr, &["--rate", "20", "--duration-s", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gavel-load");
    drop(child.stdout.take());
    let (code, err) = finish_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");

    // A report that cannot be written is a failed run, told in one line.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let child = load(&addr, &["--rate", "20", "--duration-s", "1", "--json"])
        .stdout(full)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gavel-load");
    let (code, err) = finish_within(child, Duration::from_secs(30));
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: cannot write the output: "), "{err}");
}

#[test]
fn flags_the_run_cannot_take_are_usage_errors() {
    let (_holder, dead) = dead_port();
    let target = dead.to_string();
    for extra in [
        &["--duration-s", "86400", "--warmup-ms", "1000"][..],
        &["--warmup-ms", "4000000000000"],
        &["--key", "sk-\u{1}-0123456789"],
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gavel-load"));
        cmd.args(["--target", &target, "--campaign", "c"]);
        if !extra.contains(&"--key") {
            cmd.args(["--key", "k"]);
        }
        let out = cmd.args(extra).output().expect("run gavel-load");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(out.stdout.is_empty(), "{extra:?}");
    }
    // At the limit the run goes on to the target, which is not there.
    let out = Command::new(env!("CARGO_BIN_EXE_gavel-load"))
        .args(["--target", &target, "--key", "k", "--campaign", "c"])
        .args(["--duration-s", "86399", "--warmup-ms", "1000"])
        .output()
        .expect("run gavel-load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot connect to"), "{err}");
}

/// A lead template file of the test's own; removed when dropped.
struct TemplateFile(std::path::PathBuf);

impl TemplateFile {
    fn new(name: &str, text: &str) -> TemplateFile {
        let dir = std::env::temp_dir().join(format!("gavel-load-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("lead.json");
        std::fs::write(&path, text).expect("write the template");
        TemplateFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 path")
    }
}

impl Drop for TemplateFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// gavel-load at a target that is not there with `extra`: its exit code, stderr and stdout.
fn refused(extra: &[&str]) -> (Option<i32>, String, Vec<u8>) {
    let (_holder, dead) = dead_port();
    let out = load(&dead.to_string(), extra)
        .output()
        .expect("run gavel-load");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, out.stdout)
}

#[test]
fn a_template_that_does_not_make_json_is_refused_before_anything_is_sent() {
    // Each variable's value is JSON, but the lead they make is not (a trailing comma).
    let t = TemplateFile::new("not-json", r#"{"campaign":"${campaign}","src":${src},}"#);
    let (code, err, stdout) = refused(&["--template", t.path(), "--var", "src=1"]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains(t.path()) && err.contains("not JSON"), "{err}");
    assert!(stdout.is_empty());

    // Fixed, the run goes on to the target, which is not there.
    let t = TemplateFile::new("json", r#"{"campaign":"${campaign}","src":${src}}"#);
    let (code, err, _) = refused(&["--template", t.path(), "--var", "src=1"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot connect to"), "{err}");
}

/// `${vertical}` and `${disclosed_buyers}` in a template are filled as in the default lead
/// (the campaign's vertical, no buyer disclosed) without a flag; quoted, `"${vertical}"` is
/// refused with the reason.
#[test]
fn a_templates_vertical_and_disclosed_buyers_are_filled_and_a_quoted_vertical_is_named() {
    let t = TemplateFile::new(
        "consent",
        r#"{"campaign":"${campaign}","consent":{"vertical":${vertical},"disclosed_buyers":${disclosed_buyers}}}"#,
    );
    // Filled without a flag: the run goes on to the target, which is not there.
    let (code, err, _) = refused(&["--template", t.path()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot connect to"), "{err}");

    // Quoted, each would be sent wrong (its quotes doubled, or the list as text): refused
    // with the name, with or without the flag that gives it.
    for (name, member, flag) in [
        ("vertical", "vertical", ["--vertical", "auto_insurance"]),
        (
            "disclosed_buyers",
            "disclosed_buyers",
            ["--disclosed-buyers", "acme,blue"],
        ),
    ] {
        let t = TemplateFile::new(
            &format!("quoted-{name}"),
            &format!(r#"{{"campaign":"${{campaign}}","consent":{{"{member}":"${{{name}}}"}}}}"#),
        );
        for extra in [&[][..], &flag[..]] {
            let mut args = vec!["--template", t.path()];
            args.extend_from_slice(extra);
            let (code, err, stdout) = refused(&args);
            assert_eq!(code, Some(2), "{err}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(
                err.contains(&format!("`${{{name}}}` is written inside quotes")),
                "{err}"
            );
            assert!(stdout.is_empty());
        }
    }
}

#[test]
fn a_value_for_a_variable_the_template_does_not_use_is_refused() {
    let t = TemplateFile::new("unused", r#"{"campaign":"${campaign}","src":${src}}"#);
    for (extra, flag) in [
        (
            vec!["--template", t.path(), "--var", "src=1", "--var", "extra=1"],
            "--var extra",
        ),
        // The default lead has no ${extra} either.
        (vec!["--var", "extra=1"], "--var extra"),
        // Nor does this template have the consent's ${vertical}.
        (
            vec![
                "--template",
                t.path(),
                "--var",
                "src=1",
                "--vertical",
                "auto",
            ],
            "--vertical",
        ),
    ] {
        let (code, err, stdout) = refused(&extra);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(flag) && err.contains("${"), "{extra:?}: {err}");
        assert!(stdout.is_empty());
    }
}
