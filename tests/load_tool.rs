//! The `gavel-load` binary from the outside: its usage errors and its word when the target is
//! not there.

use std::net::SocketAddr;
use std::process::Command;

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
    let out = load(&target, &["--var", "source=fb-17"])
        .output()
        .expect("run gavel-load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("--var source"), "{err}");
    assert!(out.stdout.is_empty());

    // Quoted, the same value is JSON: the run goes on to the target, which is not there.
    let out = load(&target, &["--var", "source=\"fb-17\""])
        .output()
        .expect("run gavel-load");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot connect to {target}")),
        "the target is named: {err}"
    );
}
