//! The binary as an operator runs it: real processes, real files, exit codes.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn gavel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gavel"))
}

/// `gavel CMD --config PATH` run to its end: exit code, stdout and stderr.
fn with_config(cmd: &str, path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = gavel().args([cmd, "--config"]).arg(path).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_contract_example_config_passes_check_unchanged() {
    // The repository's copy, and the contract itself when it sits beside the checkout.
    let mut paths = vec![std::path::PathBuf::from("config/exchange.example.toml")];
    let contract = std::path::Path::new("../shared/contract/exchange.toml");
    if contract.exists() {
        let a = std::fs::read(contract).unwrap();
        let b = std::fs::read(&paths[0]).unwrap();
        assert_eq!(
            a, b,
            "config/exchange.example.toml must be the contract's file, unchanged"
        );
        paths.push(contract.to_path_buf());
    }
    for p in paths {
        let (code, out, err) = with_config("check", &p);
        assert_eq!(code, Some(0), "{}: {err}", p.display());
        assert!(out.contains("ok"));
    }
    for p in ["config/gavel.toml", "config/demo.toml"] {
        let out = gavel().args(["check", "--config", p]).output().unwrap();
        if p.ends_with("gavel.toml") {
            assert!(
                out.status.success(),
                "{}: {}",
                p,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn check_names_the_key_and_the_line_of_a_bad_value() {
    let dir = temp_dir("check");
    let text = std::fs::read_to_string("config/exchange.example.toml")
        .unwrap()
        .replace("ping_timeout_ms = 1200", "ping_timeout_ms = 0");
    let line = text
        .lines()
        .position(|l| l == "ping_timeout_ms = 0")
        .unwrap()
        + 1;
    let path = dir.join("bad.toml");
    std::fs::write(&path, &text).unwrap();
    let (code, _, err) = with_config("check", &path);
    assert_eq!(code, Some(1));
    assert!(err.contains("campaigns[1].ping_timeout_ms"), "{}", err);
    assert!(err.contains(&format!("line {}", line)), "{}", err);
}

/// A file with several problems gets them all in one `check`: a wrong type, an unknown key
/// and a bad value, one line each, in the file's order.
#[test]
fn check_reports_every_problem_at_once() {
    let dir = temp_dir("check-all");
    let text = std::fs::read_to_string("config/exchange.example.toml")
        .unwrap()
        .replace("workers = 0 ", "workers = \"four\" ")
        .replace("max_connections = 32", "max_connections = 32\nretries = 3")
        .replace("ping_timeout_ms = 1200", "ping_timeout_ms = 0");
    let line = |prefix: &str| text.lines().position(|l| l.starts_with(prefix)).unwrap() + 1;
    let path = dir.join("bad.toml");
    std::fs::write(&path, &text).unwrap();
    let (code, _, err) = with_config("check", &path);
    assert_eq!(code, Some(1), "{err}");
    let lines: Vec<&str> = err.trim().lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    for (said, want) in lines.iter().zip([
        format!("line {}: server.workers: invalid type", line("workers")),
        format!(
            "line {}: campaigns[1].ping_timeout_ms:",
            line("ping_timeout_ms = 0")
        ),
        format!(
            "line {}: buyers[1].retries: unknown field `retries`",
            line("retries")
        ),
    ]) {
        assert!(said.contains(&want), "wanted {want}; got {err}");
    }
}

#[test]
fn check_names_the_key_at_fault_in_shape_and_syntax_errors() {
    let dir = temp_dir("check-keys");
    let example = std::fs::read_to_string("config/exchange.example.toml").unwrap();
    let line_of = |text: &str, prefix: &str| text.lines().position(|l| l.starts_with(prefix));
    let without = |prefix: &str| {
        let mut lines: Vec<&str> = example.lines().collect();
        let at = line_of(&example, prefix).unwrap();
        lines.remove(at);
        lines.join("\n") + "\n"
    };
    // (config text, the line and key `check` must name, part of the message)
    let cases = [
        (
            without("api_key = \"sk-blue"),
            line_of(&example, "id = \"blue-leads\"").unwrap(),
            "sellers[1].api_key",
            "missing field",
        ),
        (
            without("vertical = \"solar\""),
            line_of(&example, "id = \"solar\"").unwrap(),
            "campaigns[1].vertical",
            "missing field",
        ),
        (
            without("id = \"fallback-ins\""),
            line_of(&example, "id = \"fallback-ins\"").unwrap(),
            "buyers[2].id",
            "missing field",
        ),
        (
            format!("{example}\n[bogus]\n"),
            example.lines().count() + 2,
            "bogus",
            "unknown field `bogus`",
        ),
        (
            example.replace("[admin]", "[admin"),
            line_of(&example, "[admin]").unwrap() + 1,
            "admin",
            "invalid table header",
        ),
    ];
    for (n, (text, line, key, message)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad-{n}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = with_config("check", &path);
        assert_eq!(code, Some(1), "{key}");
        assert_eq!(err.trim().lines().count(), 1, "{key}: {err}");
        assert!(
            err.contains(&format!("line {line}: {key}: {message}")),
            "wanted line {line}: {key}: {message}; got {err}"
        );
    }
    // A byte that is not UTF-8 (a file saved in Latin-1) names its line too.
    let at = line_of(&example, "[admin]").unwrap();
    let mut bytes = example.into_bytes();
    let pos = bytes
        .split(|&b| b == b'\n')
        .take(at)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    bytes.splice(pos..pos, b"# caf\xe9\n".iter().copied());
    let path = dir.join("latin-1.toml");
    std::fs::write(&path, bytes).unwrap();
    let (code, _, err) = with_config("check", &path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("line {}: the file is not UTF-8 text", at + 1)),
        "{err}"
    );
}

#[test]
fn wrong_flags_and_missing_files_give_one_line_and_exit_2() {
    for args in [
        vec!["check", "--config", "/nonexistent/gavel.toml"],
        vec!["check", "--nope"],
        vec!["serve", "--config", "/nonexistent/gavel.toml"],
        vec!["frobnicate"],
        vec!["demo", "--seconds", "many"],
        vec![],
        vec!["journal"],
    ] {
        let out = gavel().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{:?}", args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{:?}: {}", args, err);
    }
}

#[test]
fn a_config_naming_a_file_that_is_not_there_gives_exit_1_from_every_command() {
    // The config itself is there; a file it names is not. That is a config that does not pass
    // `check` (exit 1, the key and the line), not a missing command-line file (exit 2).
    let dir = temp_dir("missing-ca");
    let missing = dir.join("gone.pem");
    let text = std::fs::read_to_string("config/exchange.example.toml")
        .unwrap()
        .replace(
            "ca_files = []",
            &format!("ca_files = [{:?}]", missing.display().to_string()),
        );
    let path = dir.join("gavel.toml");
    std::fs::write(&path, &text).unwrap();
    let (code, _, expected) = with_config("check", &path);
    assert_eq!(code, Some(1), "{expected}");
    assert!(expected.contains("tls.ca_files[0]"), "{expected}");
    for args in [
        vec!["serve", "--config"],
        vec![
            "buyer-check",
            "--url",
            "http://127.0.0.1:1/ping",
            "--config",
        ],
    ] {
        let out = gavel().args(&args).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err, expected, "{args:?}");
    }
}

#[test]
fn every_command_answers_help() {
    for args in [
        vec!["--help"],
        vec!["-h"],
        vec!["serve", "--help"],
        vec!["check", "--help"],
        vec!["demo", "--help"],
        vec!["journal", "--help"],
        vec!["journal", "export", "--help"],
        vec!["journal", "show", "--help"],
        vec!["journal", "tail", "--help"],
        vec!["journal", "verify", "--help"],
        vec!["buyer-check", "--help"],
        vec!["help"],
        vec!["help", "--help"],
        vec!["help", "serve"],
        vec!["journal", "help", "-h"],
    ] {
        let out = gavel().args(&args).output().unwrap();
        assert!(out.status.success(), "{:?}", args);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{:?}",
            args
        );
    }
}

#[test]
fn serve_runs_the_exchange_from_a_config_file() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let dir = temp_dir("serve");
    let path = dir.join("gavel.toml");
    std::fs::write(
        &path,
        config(&fleet, "", |_| String::new()).replace("workers = 1", "workers = 2"),
    )
    .unwrap();
    let mut child = gavel()
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut addr = None;
    for _ in 0..20 {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.split("serving sellers on ").nth(1) {
            addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            break;
        }
    }
    let addr: std::net::SocketAddr = match addr {
        Some(a) => a,
        None => {
            let _ = child.kill();
            panic!("serve did not announce its address: {}", line);
        }
    };
    let mut c = Client::connect(addr);
    let v = c.lead(LEAD).json();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(v["status"], "sold");
    assert_eq!(v["price"], 42.5);
    assert_eq!(v["payout"], 34.0);
}

/// A buyer host that does not resolve is said on stderr at the start, naming the buyer and
/// its URL key, rather than found only in its `error` pings.
#[test]
fn serve_warns_of_a_buyer_host_that_does_not_resolve() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let dir = temp_dir("unresolved");
    let path = dir.join("gavel.toml");
    let mut text = config(&fleet, "", |_| String::new());
    text.push_str(
        "\n[[buyers]]\nid = \"ghost\"\ncampaigns = [\"auto\"]\nping_url = \"http://no-such-host.invalid:9/ping\"\npost_url = \"http://no-such-host.invalid:9/post\"\n",
    );
    std::fs::write(&path, &text).unwrap();
    let (child, addr, log) = serve_logged(&path);
    let mut child = child;
    let v = Client::connect(addr).lead(LEAD).json();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(v["status"], "sold", "{v}");
    let log = log.join("\n");
    assert!(
        log.contains("buyer ghost: ping_url host \"no-such-host.invalid\" does not resolve"),
        "{log}"
    );
    assert!(log.contains("buyer ghost: post_url host"), "{log}");
    assert!(!log.contains("buyer acme"), "{log}");
}

/// `check` says the same of a host that does not resolve, as a warning: the file is valid,
/// and the operator learns before the start that the buyer would get no request.
#[test]
fn check_warns_of_a_buyer_host_that_does_not_resolve() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let dir = temp_dir("check-unresolved");
    let path = dir.join("gavel.toml");
    let mut text = config(&fleet, "", |_| String::new());
    text.push_str(
        "\n[[buyers]]\nid = \"ghost\"\ncampaigns = [\"auto\"]\nping_url = \"http://no-such-host.invalid:9/ping\"\npost_url = \"http://127.0.0.1:9/post\"\n",
    );
    std::fs::write(&path, &text).unwrap();
    let (code, out, err) = with_config("check", &path);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(": ok ("), "{out}");
    assert!(
        out.contains(
            "warning: buyer ghost: ping_url host \"no-such-host.invalid\" does not resolve"
        ),
        "{out}"
    );
    assert!(!out.contains("post_url"), "{out}");
    assert!(!out.contains("buyer acme"), "{out}");
}

#[test]
fn serve_says_which_listener_or_journal_stops_it_from_starting() {
    let fleet = Fleet::start(vec![BuyerSpec::new("acme")]).unwrap();
    let dir = temp_dir("serve-fails");
    // The operator port is taken by someone else.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let path = dir.join("admin-taken.toml");
    std::fs::write(
        &path,
        config(&fleet, "", |_| String::new()).replace(
            "workers = 1",
            &format!("workers = 1\nadmin_listen = \"{taken_addr}\""),
        ),
    )
    .unwrap();
    let (code, _, err) = with_config("serve", &path);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {taken_addr} (operator API)")),
        "{err}"
    );

    // The journal is held by a running exchange: the second one names the journal, not a port.
    let path = dir.join("shared-journal.toml");
    std::fs::write(&path, config(&fleet, "", |_| String::new())).unwrap();
    let (mut first, _) = serve(&path);
    let (code, _, err) = with_config("serve", &path);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("open for writing by another process"), "{err}");
    assert!(!err.contains("cannot listen"), "{err}");
}

/// Output that cannot be written (a full disk) is an error with exit 1, not a panic and not
/// a silent success: a cut `journal export` must not pass for the whole billing feed. A
/// reader closing the pipe early is not an error.
#[test]
fn output_that_cannot_be_written_fails_the_command() {
    use gavel::journal::{LeadFlow, RecordRef};
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full");
    if full().is_err() {
        return;
    }
    let dir = temp_dir("stdout-full");
    let journal = dir.join("journal");
    {
        let j = open_journal(journal.clone());
        for i in 0..2000u64 {
            let id = format!("01JDQ6X8W2ABCDEFGHJK{i:06}");
            j.append(
                1_700_000_000_000_000 + i,
                &RecordRef::LeadReceived {
                    lead_id: &id,
                    seller: "seller-1",
                    campaign: "auto",
                    source: None,
                    test: false,
                    lead_json: b"{\"state\":\"TX\"}",
                    flow: Some(LeadFlow::Lead),
                    idempotency_key: None,
                },
            )
            .unwrap();
        }
    }
    let dir_arg = journal.to_str().unwrap();
    let runs: [&[&str]; 3] = [
        &["check", "--config", "config/gavel.toml"],
        &["journal", "export", "--dir", dir_arg],
        &["journal", "verify", "--dir", dir_arg],
    ];
    for args in runs {
        let out = gavel().args(args).stdout(full().unwrap()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot write the output"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // `export | head -1`: the reader had enough.
    let mut child = gavel()
        .args(["journal", "export", "--dir", dir_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("lead_received"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A directory with no journal in it does not verify.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = gavel()
        .args(["journal", "verify", "--dir", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no journal"));
}
