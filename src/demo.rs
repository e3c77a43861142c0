//! `gavel demo`: the exchange, a simulated buyer fleet and a lead stream in one process.
//!
//! The exchange runs on the bundled `config/demo.toml` with every buyer pointed at a simulated
//! buyer on a loopback port; two seller streams (an exclusive auto-insurance campaign and a
//! shared solar campaign) run for a few seconds; then it prints throughput, sold rate, revenue,
//! P&L per campaign and buyer, and the engine's internal-overhead histogram.

/// `println!`/`print!` that do not panic when stdout cannot be written (see [`crate::out`]).
macro_rules! println {
    ($($arg:tt)*) => { $crate::out_println!($($arg)*) };
}
macro_rules! print {
    ($($arg:tt)*) => { $crate::out_print!($($arg)*) };
}

/// A line to stderr. `std`'s `eprintln!` panics when stderr is a closed pipe or a full disk;
/// the exchange must go on (and still take its signals) when whoever reads its log goes away.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use crate::money::usd;
use crate::net;
use crate::sim::buyer::{BuyerSpec, Fleet, FleetOptions};
use crate::sim::dist::{BidDist, Dist};
use crate::sim::load::{self, LoadReport, LoadSpec};
use crate::stats::{render_histogram, Percentiles};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bundled config; `@BUYER:name@` and `@JOURNAL@` are filled in at start.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
/// The longest demo run, so a typo cannot tie up a machine.
pub const MAX_DEMO_SECONDS: u64 = 600;
/// Leads sent before the measured run, so that pools and buyer connections are warm; they are
/// left out of every count the demo prints.
pub const WARMUP: Duration = Duration::from_millis(500);
/// Longest wait for the exchange to record the leads it has answered.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Seconds of lead traffic.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Auto-insurance leads per second (the solar stream runs at a fifth of it, at least 1).
    #[arg(long, default_value_t = 400)]
    pub rate: u64,
}

fn buyer(name: &str, bid: BidDist, latency: Dist) -> BuyerSpec {
    BuyerSpec {
        bid,
        latency,
        post_latency: Dist::LogNormal {
            median: 8.0,
            p99: 40.0,
        },
        ..BuyerSpec::new(name)
    }
}

/// The simulated fleet: varied bids and latencies, a slow one, a rejecting one, a stingy one.
fn fleet_specs() -> Vec<BuyerSpec> {
    vec![
        buyer(
            "acme-ins",
            BidDist::Uniform(2000, 8000),
            Dist::LogNormal {
                median: 15.0,
                p99: 60.0,
            },
        ),
        buyer(
            "blue-ins",
            BidDist::Uniform(3000, 12000),
            Dist::LogNormal {
                median: 40.0,
                p99: 150.0,
            },
        ),
        BuyerSpec {
            no_bid_rate: 0.3,
            ..buyer(
                "crest-auto",
                BidDist::Uniform(1000, 5000),
                Dist::Uniform(5, 20),
            )
        },
        BuyerSpec {
            reject_rate: 0.4,
            ..buyer(
                "delta-leads",
                BidDist::Uniform(5000, 15000),
                Dist::LogNormal {
                    median: 60.0,
                    p99: 300.0,
                },
            )
        },
        buyer(
            "echo-direct",
            BidDist::Uniform(10000, 20000),
            Dist::LogNormal {
                median: 500.0,
                p99: 2500.0,
            },
        ),
        BuyerSpec {
            no_bid_rate: 0.7,
            ..buyer("fox-insure", BidDist::Uniform(500, 4000), Dist::Fixed(2))
        },
        buyer(
            "sun-power",
            BidDist::Uniform(2000, 9000),
            Dist::LogNormal {
                median: 30.0,
                p99: 120.0,
            },
        ),
        buyer(
            "bright-solar",
            BidDist::Uniform(1500, 7000),
            Dist::LogNormal {
                median: 20.0,
                p99: 90.0,
            },
        ),
        BuyerSpec {
            no_bid_rate: 0.25,
            ..buyer(
                "ray-energy",
                BidDist::Uniform(1000, 6000),
                Dist::Uniform(10, 60),
            )
        },
        BuyerSpec {
            reject_rate: 0.2,
            ..buyer(
                "volt-homes",
                BidDist::Uniform(2500, 8000),
                Dist::LogNormal {
                    median: 50.0,
                    p99: 400.0,
                },
            )
        },
    ]
}

/// The demo config with buyer addresses and the journal directory filled in.
pub fn demo_config(fleet: &Fleet, journal_dir: &str) -> String {
    let mut text = DEMO_CONFIG.replace("@JOURNAL@", journal_dir);
    for i in 0..fleet.len() {
        text = text.replace(
            &format!("@BUYER:{}@", fleet.name(i)),
            &fleet.addr(i).to_string(),
        );
    }
    text
}

pub fn run(args: &DemoArgs) -> i32 {
    if args.seconds == 0 || args.seconds > MAX_DEMO_SECONDS || args.rate == 0 || args.rate > 50_000
    {
        eprintln!(
            "gavel demo: --seconds must be 1..={} and --rate 1..=50000",
            MAX_DEMO_SECONDS
        );
        return 2;
    }
    // The exchange's journal goes to a directory of this run's own, removed at the end however
    // the run ends: a second stop signal removes it too before it exits.
    let journal_dir = std::env::temp_dir().join(format!("gavel-demo-{}", std::process::id()));
    // Made here, and only it: a `TMPDIR` that does not exist is said, not made (and left
    // behind).
    match std::fs::create_dir(&journal_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            eprintln!(
                "gavel demo: cannot make its journal directory {}: {} (TMPDIR must be an \
                 existing directory)",
                journal_dir.display(),
                e
            );
            return 1;
        }
    }
    // SIGINT and SIGTERM end the lead streams early, and the summary covers what ran; a second
    // one exits at once. Blocked before any thread starts, so every thread inherits the mask.
    let stop = Arc::new(AtomicBool::new(false));
    watch_stop_signals(&stop, journal_dir.clone());
    let fleet = match Fleet::start_with(
        fleet_specs(),
        FleetOptions {
            threads: 2,
            ..FleetOptions::default()
        },
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gavel demo: cannot start the simulated buyers: {}", e);
            return 1;
        }
    };
    let text = demo_config(&fleet, &journal_dir.to_string_lossy());
    let snap = match crate::config::parse(&text) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("gavel demo: bundled config is invalid: {}", e);
            return 1;
        }
    };
    let server = match net::start(snap.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gavel demo: cannot start the exchange: {}", e);
            let _ = std::fs::remove_dir_all(&journal_dir);
            return 1;
        }
    };
    let addr = server.local_addr();
    println!(
        "gavel demo: exchange on {} ({} workers), {} simulated buyers on loopback, {} s of leads",
        addr,
        snap.server.workers,
        fleet.len(),
        args.seconds
    );
    let api_key = snap.sellers[0].api_key.clone();
    // The warm-up is a run of its own, answered in full, after which the exchange's statistics
    // are zeroed: the streams' counts and the exchange's P&L then cover the same leads.
    let streams = |duration: Duration| run_streams(addr, &api_key, args.rate, duration, &stop);
    let measured = streams(WARMUP).and_then(|warm| {
        if stop.load(Ordering::Acquire) {
            return Err(std::io::Error::other(
                "stopped during the warm-up: nothing measured",
            ));
        }
        settle(&server, &[&warm.0, &warm.1]);
        for s in &server.shared().stats {
            s.lock().reset();
        }
        let (auto, solar) = streams(Duration::from_secs(args.seconds))?;
        settle(&server, &[&auto, &solar]);
        Ok((warm.0.answered + warm.1.answered, auto, solar))
    });
    let stats = server.stats();
    server.shutdown();
    let _ = std::fs::remove_dir_all(&journal_dir);

    let (warm, auto_report, solar_report) = match measured {
        Ok(r) => r,
        // Asked for: not a failure, though there is nothing to sum up.
        Err(_) if stop.load(Ordering::Acquire) => {
            println!(
                "gavel demo: stopped by a signal during the warm-up, before anything was measured"
            );
            return 0;
        }
        Err(e) => {
            eprintln!("gavel demo: the lead stream failed: {}", e);
            return 1;
        }
    };
    if auto_report.stopped_early || solar_report.stopped_early {
        println!(
            "gavel demo: stopped by a signal after {:.1} s of the planned {} s; the summary covers the leads sent until then",
            auto_report.duration_ms as f64 / 1000.0,
            args.seconds
        );
    }
    print_report(
        &[("auto-insurance", &auto_report), ("solar", &solar_report)],
        warm,
        &stats,
    );
    let answered = auto_report.answered + solar_report.answered;
    if answered == 0 {
        eprintln!("gavel demo: no lead was answered");
        return 1;
    }
    0
}

/// Both seller streams at once for `duration`, unmeasured warm-up included in nothing.
fn run_streams(
    addr: SocketAddr,
    api_key: &str,
    rate: u64,
    duration: Duration,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<(LoadReport, LoadReport)> {
    let spec = |campaign: &str, rate: u64, connections: usize| LoadSpec {
        rate_per_s: rate,
        duration,
        connections,
        warmup: Duration::ZERO,
        stop: Some(Arc::clone(stop)),
        ..LoadSpec::new(addr, api_key, campaign)
    };
    let auto = spec("auto-insurance", rate, 1024);
    let solar = spec("solar", (rate / 5).max(1), 512);
    let solar_thread = std::thread::spawn(move || load::run(&solar));
    let auto_report = load::run(&auto);
    let solar_report = solar_thread
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("load thread failed")));
    Ok((auto_report?, solar_report?))
}

/// Block SIGINT and SIGTERM and take them on a thread of their own: the first sets `stop`,
/// the second removes `journal_dir` and exits at once. Without the thread they are unblocked
/// again and end the process as by default.
/// Times a second stop signal tries to remove the run's journal directory before it exits.
const SECOND_SIGNAL_REMOVE_ATTEMPTS: usize = 5;

fn watch_stop_signals(stop: &Arc<AtomicBool>, journal_dir: std::path::PathBuf) {
    let Some(set) = crate::cli::block_signals(&[libc::SIGINT, libc::SIGTERM]) else {
        return;
    };
    let stop = Arc::clone(stop);
    let spawned = std::thread::Builder::new()
        .name("gavel-demo-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised signal set; `sig` is a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                return;
            }
            if stop.swap(true, Ordering::AcqRel) {
                eprintln!("gavel demo: second stop signal: exiting now");
                // The run's temporary journal (a whole segment of it) must not outlive it. The
                // exchange may still be writing to its mapped files: removing them ends nothing
                // but their names, and the process exits at once after. Its background thread
                // may make a file meanwhile (the spare segment), which fails the directory's
                // removal: tried again, a few times.
                for _ in 0..SECOND_SIGNAL_REMOVE_ATTEMPTS {
                    if std::fs::remove_dir_all(&journal_dir).is_ok() || !journal_dir.exists() {
                        break;
                    }
                }
                std::process::exit(128 + sig);
            }
            eprintln!(
                "gavel demo: stop signal: sending no more leads, answering those in flight, then \
                 the summary (signal again to exit at once)"
            );
        });
    if spawned.is_err() {
        crate::cli::unblock_signals(&set);
    }
}

/// Leads a stream got an answer about from the exchange's auction (sold, unsold or refused for
/// its content), which the exchange counts in its P&L; 429, 503 and lost leads it does not.
fn leads_answered(r: &LoadReport) -> u64 {
    r.sold + r.unsold + r.rejected
}

/// Wait (at most `SETTLE`) until the exchange has recorded every lead the streams were answered
/// about: a worker writes the answer, then records the lead's counters and its overhead.
fn settle(server: &net::ServerHandle, reports: &[&LoadReport]) {
    let answered: u64 = reports.iter().map(|r| leads_answered(r)).sum();
    let deadline = Instant::now() + SETTLE;
    loop {
        let (mut leads, mut done) = (0, 0);
        for s in &server.shared().stats {
            let s = s.lock();
            for c in s.campaigns.values() {
                leads += c.leads;
                done += c.rejected;
            }
            done += s.overhead_us.len();
        }
        if (leads >= answered && done >= leads) || Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The report's last line: every campaign together, the average price to the nearest cent
/// as in the campaign rows.
fn total_line(
    leads: u64,
    sold: u64,
    revenue: crate::money::Cents,
    payout: crate::money::Cents,
) -> String {
    format!(
        "total: {} leads, sold {:.1}%, revenue {}, payout {}, profit {}, average price {}",
        leads,
        pct(sold, leads),
        usd(revenue),
        usd(payout),
        usd(revenue - payout),
        usd(crate::money::average_cents(revenue, sold)),
    )
}

fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 * 100.0 / d as f64
    }
}

fn print_report(streams: &[(&str, &LoadReport)], warm: u64, stats: &crate::stats::WorkerStats) {
    println!();
    println!(
        "seller streams: leads answered after a {:.1} s warm-up ({} leads, left out of every count below);",
        WARMUP.as_secs_f64(),
        warm
    );
    println!("latency from each lead's due time (coordinated omission corrected)");
    println!(
        "  {:<15} {:>8} {:>8} {:>7} {:>7} {:>8} {:>12} {:>8} {:>8} {:>8}",
        "stream",
        "sent/s",
        "answered",
        "sold",
        "unsold",
        "rejected",
        "revenue",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    let ms = |us: u64| us as f64 / 1000.0;
    for (name, r) in streams {
        println!(
            "  {:<15} {:>8.1} {:>8} {:>7} {:>7} {:>8} {:>12} {:>8.1} {:>8.1} {:>8.1}",
            name,
            // The rate the stream sent at; the answers of its last leads come up to a ping
            // timeout later, so answered over elapsed time would read as a lower rate.
            if r.duration_ms > 0 {
                r.sent as f64 * 1000.0 / r.duration_ms as f64
            } else {
                0.0
            },
            r.answered,
            r.sold,
            r.unsold,
            r.rejected,
            usd(r.revenue_cents),
            ms(r.latency_us.p50),
            ms(r.latency_us.p99),
            ms(r.latency_us.max)
        );
        if r.errors + r.timeouts + r.overloaded + r.throttled + r.other > 0 {
            println!(
                "  {:<15} not auctioned: errors {} timeouts {} 503 {} 429 {} other {}",
                "", r.errors, r.timeouts, r.overloaded, r.throttled, r.other
            );
        }
    }
    println!();
    println!("campaigns (P&L of the same leads)");
    println!(
        "  {:<15} {:>7} {:>7} {:>7} {:>8} {:>12} {:>12} {:>12} {:>9}",
        "campaign",
        "leads",
        "sold",
        "unsold",
        "rejected",
        "revenue",
        "payout",
        "profit",
        "avg price"
    );
    for (id, c) in &stats.campaigns {
        let avg = crate::money::average_cents(c.revenue_cents, c.sold);
        println!(
            "  {:<15} {:>7} {:>7} {:>7} {:>8} {:>12} {:>12} {:>12} {:>9}",
            id,
            c.leads,
            c.sold,
            c.unsold,
            c.rejected,
            usd(c.revenue_cents),
            usd(c.payout_cents),
            usd(c.revenue_cents - c.payout_cents),
            usd(avg),
        );
    }
    println!();
    println!("buyers");
    println!(
        "  {:<13} {:>7} {:>6} {:>7} {:>8} {:>6} {:>6} {:>6} {:>8} {:>11} {:>9}",
        "buyer",
        "pings",
        "bids",
        "no-bid",
        "timeout",
        "error",
        "wins",
        "rej",
        "avg bid",
        "spent",
        "p99 ms"
    );
    for (id, b) in stats.buyers() {
        let avg_bid = crate::money::average_cents(b.bid_sum_cents, b.bids);
        let p = Percentiles::of(&b.response_us);
        println!(
            "  {:<13} {:>7} {:>6} {:>7} {:>8} {:>6} {:>6} {:>6} {:>8} {:>11} {:>9.1}",
            id,
            b.pings,
            b.bids,
            b.no_bids,
            b.timeouts,
            b.errors + b.invalid,
            b.wins,
            b.post_rejects,
            usd(avg_bid),
            usd(b.spent_cents),
            ms(p.p99)
        );
    }
    let total_revenue: i64 = stats.campaigns.values().map(|c| c.revenue_cents).sum();
    let total_payout: i64 = stats.campaigns.values().map(|c| c.payout_cents).sum();
    let sold: u64 = stats.campaigns.values().map(|c| c.sold).sum();
    let leads: u64 = stats.campaigns.values().map(|c| c.leads).sum();
    println!();
    println!("{}", total_line(leads, sold, total_revenue, total_payout));
    // The streams' answers and the exchange's books describe the same leads; say so if not.
    for (name, r) in streams {
        let (n, revenue) = stats
            .campaigns
            .get(*name)
            .map_or((0, 0), |c| (c.leads, c.revenue_cents));
        if n != leads_answered(r) || revenue != r.revenue_cents {
            println!(
                "note: {} got {} answers worth {} but the exchange counted {} leads worth {}",
                name,
                leads_answered(r),
                usd(r.revenue_cents),
                n,
                usd(revenue)
            );
        }
    }
    let o = Percentiles::of(&stats.overhead_us);
    println!();
    println!(
        "internal overhead per lead (engine time: elapsed minus time waiting on buyers), {} leads:",
        o.count
    );
    print!("{}", render_histogram(&stats.overhead_us, "us"));
    let e = Percentiles::of(&stats.elapsed_us);
    println!(
        "seller-observed time in the exchange: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(e.p50),
        ms(e.p99),
        ms(e.max)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The total's average price is rounded to the cent, as each campaign's is.
    #[test]
    fn the_total_line_rounds_the_average_price() {
        // $245,319.52 over 2,400 sales is $102.2165.
        let line = total_line(2400, 2400, 24_531_952, 19_625_561);
        assert!(line.ends_with("average price $102.22"), "{line}");
        assert!(line.contains("profit $49063.91"), "{line}");
        assert!(total_line(5, 0, 0, 0).ends_with("average price $0.00"));
    }
}
