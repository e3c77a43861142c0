//! `gavel-relay`: the fan-out floor. Takes `POST /v1/leads`, pings every buyer, posts to the
//! highest bid and answers, with none of the exchange's work in between, and reports its own
//! overhead in the exchange's terms (`GET /v1/stats`). Run it where the exchange would run, with
//! the same buyers and load, to see what the machine alone costs a lead (`tools/bench.py
//! --relay`).

#[path = "common.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use gavel::sim::relay::{
    Endpoint, Relay, RelayBuyer, RelayOptions, MAX_BUYERS, MAX_CONNECTIONS_PER_BUYER,
};

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The exchange's I/O without its engine: a floor for its overhead.
#[derive(Parser, Debug)]
#[command(name = "gavel-relay", version, allow_negative_numbers = true)]
struct Args {
    /// Seller listener (also serves GET /healthz, GET /v1/stats, POST /v1/admin/stats/reset).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A buyer as PING_URL,POST_URL (http:// only); repeat for each buyer.
    #[arg(long = "buyer", required = true)]
    buyers: Vec<String>,
    /// From a lead's arrival to the close of its bidding, in milliseconds.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    ping_timeout_ms: u64,
    /// From a post's send to giving up on it, in milliseconds.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    post_timeout_ms: u64,
    /// Keep-alive connections per buyer address.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=MAX_CONNECTIONS_PER_BUYER as u64))]
    max_connections: u64,
    /// Lowest bid taken, in dollars.
    #[arg(long, default_value = "5")]
    reserve: String,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("gavel-relay: {msg}");
    std::process::exit(2);
}

fn main() {
    let args: Args = common::parse_args();
    if args.buyers.len() > MAX_BUYERS {
        fail(format!("at most {MAX_BUYERS} buyers"));
    }
    let buyers: Vec<RelayBuyer> = args
        .buyers
        .iter()
        .map(|b| {
            let (ping, post) = b
                .split_once(',')
                .unwrap_or_else(|| fail(format!("`{b}`: expected PING_URL,POST_URL")));
            RelayBuyer {
                ping: Endpoint::parse(ping).unwrap_or_else(|e| fail(e)),
                post: Endpoint::parse(post).unwrap_or_else(|e| fail(e)),
            }
        })
        .collect();
    let reserve_cents = match gavel::money::parse_cents(&args.reserve) {
        Some(c) if c >= 0 => c,
        _ => fail(format!("`{}` is not a dollar amount", args.reserve)),
    };
    let opts = RelayOptions {
        listen: args.listen,
        buyers,
        ping_timeout: Duration::from_millis(args.ping_timeout_ms),
        post_timeout: Duration::from_millis(args.post_timeout_ms),
        max_connections_per_buyer: args.max_connections as usize,
        reserve_cents,
    };
    let mut relay = match Relay::start(opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gavel-relay: cannot start: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let handler: extern "C" fn(libc::c_int) = on_signal;
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    // Output goes through `gavel::out`, which never panics. A reader that has gone away after
    // reading the address does not stop the relay; any other write failure loses the address
    // the operator needs: stop at once, exit 1.
    gavel::out_println!("listening {}", relay.addr());
    if let Some(e) = gavel::out::take_error() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            relay.stop();
            std::process::exit(gavel::out::finish_as(
                "gavel-relay",
                0,
                Some(e),
                &mut std::io::stderr(),
            ));
        }
    }
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    relay.stop();
}
