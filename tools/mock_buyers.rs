//! `gavel-mock-buyers`: a fleet of mock buyer endpoints on loopback, for demos, capacity
//! planning and benchmarks. Prints each buyer's ping and post URLs, serves until killed (or for
//! `--duration-s`), then prints what each buyer saw.

#[macro_use]
#[path = "common.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use gavel::out_println;
use gavel::sim::buyer::{BuyerSpec, Fleet, FleetOptions, MAX_ENDPOINTS, MAX_THREADS};
use gavel::sim::dist::{BidDist, Dist};

/// Set by SIGINT/SIGTERM so the fleet stops and reports instead of dying mid-line.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Mock buyer endpoints speaking the gavel buyer protocol (ping and post) on loopback.
#[derive(Parser, Debug)]
#[command(name = "gavel-mock-buyers", version, allow_negative_numbers = true)]
struct Args {
    /// Number of buyer endpoints.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_ENDPOINTS as u64))]
    count: u64,
    /// Buyer i listens on BASE_PORT + i (default: free ports chosen by the OS).
    #[arg(long)]
    base_port: Option<u16>,
    /// Typical ping response time in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Ping response time varies uniformly by up to this much either side of --latency-ms.
    #[arg(long, default_value_t = 0)]
    latency_jitter_ms: u64,
    /// Instead of jitter: a log-normal response time with median --latency-ms and this p99.
    #[arg(long)]
    latency_p99_ms: Option<f64>,
    /// Post response time in milliseconds.
    #[arg(long, default_value_t = 0)]
    post_latency_ms: u64,
    /// Lowest bid, in dollars.
    #[arg(long, default_value = "5", value_parser = dollars)]
    bid_min: i64,
    /// Highest bid, in dollars.
    #[arg(long, default_value = "80", value_parser = dollars)]
    bid_max: i64,
    /// Fraction of pings answered with no bid.
    #[arg(long, default_value = "0.2", value_parser = fraction)]
    no_bid_rate: f64,
    /// Fraction of posts rejected as duplicates.
    #[arg(long, default_value = "0.05", value_parser = fraction)]
    reject_rate: f64,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Event-loop threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_THREADS as u64))]
    threads: u64,
    /// Seed for every random choice, to repeat a run exactly.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the final counters as one JSON array instead of text.
    #[arg(long)]
    json: bool,
}

/// A dollar amount from the command line, straight into cents. An amount with a fraction of a
/// cent (`7.999`) is refused, as the config loader refuses one: bids are whole cents, and
/// rounding a bound either way would let bids fall outside the range the flags give.
pub fn dollars(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let cents = match gavel::money::parse_cents(t) {
        Some(c) if c >= 0 && !t.starts_with('-') => c,
        _ => return Err(format!("`{text}` is not a dollar amount")),
    };
    // parse_cents rounds down: towards zero for an amount, away from it for the same amount
    // negated. The two meet at the same cent only when no fraction of a cent was cut off.
    if gavel::money::parse_cents(&format!("-{t}")) != Some(-cents) {
        return Err(format!(
            "`{text}` has a fraction of a cent: give whole cents, at most two decimals"
        ));
    }
    Ok(cents)
}

/// A fraction in [0, 1].
pub fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("`{text}` is not a fraction between 0 and 1")),
    }
}

fn main() {
    let args: Args = common::parse_args();
    if args.bid_min > args.bid_max {
        eprintln!("error: --bid-min is above --bid-max");
        std::process::exit(2);
    }
    // Buyer i listens on base + i: a pair running past the last port is refused before any bind.
    if let Some(base) = args.base_port {
        if u64::from(base) + (args.count - 1) > u64::from(u16::MAX) {
            eprintln!(
                "error: --base-port {base} with --count {} runs past port {}",
                args.count,
                u16::MAX
            );
            std::process::exit(2);
        }
    }
    // A delay the flags describe but the fleet would not apply is refused, not ignored.
    if let Some(p99) = args.latency_p99_ms {
        let median = args.latency_ms as f64;
        let why = if args.latency_jitter_ms > 0 {
            Some("--latency-p99-ms replaces --latency-jitter-ms; give one of them".to_string())
        } else if args.latency_ms == 0 {
            Some("--latency-p99-ms needs a --latency-ms (the median) above 0".to_string())
        } else if !p99.is_finite() {
            Some(format!(
                "--latency-p99-ms `{p99}` is not a number of milliseconds"
            ))
        } else if p99 < median {
            Some(format!(
                "--latency-p99-ms {p99} is below the median --latency-ms {}",
                args.latency_ms
            ))
        } else {
            None
        };
        if let Some(why) = why {
            eprintln!("error: {why}");
            std::process::exit(2);
        }
    }
    // Delays are uniform in latency ± jitter: a jitter above the latency would need negative ones.
    if args.latency_jitter_ms > args.latency_ms {
        eprintln!(
            "error: --latency-jitter-ms {} is above --latency-ms {}: delays cannot go below 0",
            args.latency_jitter_ms, args.latency_ms
        );
        std::process::exit(2);
    }
    let latency = match args.latency_p99_ms {
        Some(p99) => Dist::LogNormal {
            median: args.latency_ms as f64,
            p99,
        },
        None if args.latency_jitter_ms == 0 => Dist::Fixed(args.latency_ms),
        None => Dist::Uniform(
            args.latency_ms.saturating_sub(args.latency_jitter_ms),
            args.latency_ms.saturating_add(args.latency_jitter_ms),
        ),
    };
    let specs: Vec<BuyerSpec> = (0..args.count)
        .map(|i| BuyerSpec {
            name: format!("buyer-{i}"),
            latency: latency.clone(),
            bid: BidDist::Uniform(args.bid_min, args.bid_max),
            no_bid_rate: args.no_bid_rate,
            reject_rate: args.reject_rate,
            post_latency: Dist::Fixed(args.post_latency_ms),
            responder: None,
        })
        .collect();
    let opts = FleetOptions {
        base_port: args.base_port,
        threads: args.threads as usize,
        seed: args.seed,
        // A long-running fleet must not grow: keep no bodies.
        body_log_limit: 0,
        ..FleetOptions::default()
    };
    let mut fleet = match Fleet::start_with(specs, opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot start the buyers: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    let handler: extern "C" fn(libc::c_int) = on_signal;
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    // Output goes through `gavel::out`, which never panics. A reader that has gone away
    // (`| head -3`, or a parent that read the URLs it needed and closed its end) does not stop
    // the fleet: it serves on until a signal or --duration-s and prints nothing more. Any other
    // write failure (a full disk) loses the listing the operator needs: stop at once, exit 1.
    for i in 0..fleet.len() {
        out_println!(
            "{} {} {}",
            fleet.name(i),
            fleet.ping_url(i),
            fleet.post_url(i)
        );
    }
    if let Some(e) = gavel::out::take_error() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            fleet.stop();
            exit(Some(e));
        }
    }
    let deadline = args
        .duration_s
        .map(|s| Instant::now() + Duration::from_secs(s));
    while !STOP.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    fleet.stop();
    let stats: Vec<_> = (0..fleet.len()).filter_map(|i| fleet.stats(i)).collect();
    if args.json {
        match serde_json::to_string(&stats) {
            Ok(s) => out_println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        exit(gavel::out::take_error());
    }
    // The text names each value as its JSON field does (`a.b` for a field of a field).
    for s in stats {
        out_println!(
            "{} {} accepted_connections={} refused_connections={} pings={} bids={} no_bids={} posts={} accepted_posts={} rejected_posts={} bad_requests={} ping_reply_us.p50={} ping_reply_us.p99={} ping_reply_us.max={} post_reply_us.p50={} post_reply_us.p99={} post_reply_us.max={}",
            s.name,
            s.addr,
            s.accepted_connections,
            s.refused_connections,
            s.pings,
            s.bids,
            s.no_bids,
            s.posts,
            s.accepted_posts,
            s.rejected_posts,
            s.bad_requests,
            s.ping_reply_us.p50,
            s.ping_reply_us.p99,
            s.ping_reply_us.max,
            s.post_reply_us.p50,
            s.post_reply_us.p99,
            s.post_reply_us.max
        );
    }
    exit(gavel::out::take_error());
}

/// Exit 0, or 1 with one line on stderr when `error` is a failure to write stdout other than a
/// closed pipe.
fn exit(error: Option<std::io::Error>) -> ! {
    std::process::exit(gavel::out::finish_as(
        "error",
        0,
        error,
        &mut std::io::stderr(),
    ))
}
