//! `gavel-load`: open-loop load against the seller API, for capacity planning and benchmarks.
//! Sends leads at a fixed rate whatever the exchange does and reports latency from each lead's
//! due time (coordinated omission corrected), answers by status and the money they carried.

#[macro_use]
#[path = "common.rs"]
mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use clap::Parser;
use gavel::out_println;
use gavel::sim::load::{
    self, LeadTemplate, LoadSpec, TemplateError, MAX_CONNECTIONS, MAX_PIPELINE, MAX_RATE_PER_S,
};

/// The signal (SIGINT or SIGTERM) that stopped the run; 0 until one comes.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The run's stop flag, for the signal handler to set.
static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
    if let Some(stop) = STOP.get() {
        stop.store(true, Ordering::SeqCst);
    }
}

/// Open-loop lead load for a gavel exchange's seller API (POST /v1/leads).
/// SIGINT or SIGTERM stops sending and prints the report of what ran (exit 128 + signal).
#[derive(Parser, Debug)]
#[command(name = "gavel-load", version, allow_negative_numbers = true)]
struct Args {
    /// The exchange's seller listener, host:port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: String,
    /// The seller's API key.
    #[arg(long)]
    key: String,
    /// The campaign every lead is for.
    #[arg(long)]
    campaign: String,
    /// Leads per second.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=MAX_RATE_PER_S))]
    rate: u64,
    /// Measured seconds (after the warmup).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration_s: u64,
    /// Leads during this first stretch are sent but not measured.
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=MAX_CONNECTIONS as u64))]
    connections: u64,
    /// Leads in flight on each connection: above 1, requests are pipelined (answers come back
    /// in order), so connections × pipeline leads can be in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_PIPELINE as u64))]
    pipeline: u64,
    /// A lead body template file (JSON with ${name} placeholders); default: the contract's example.
    #[arg(long)]
    template: Option<String>,
    /// The consent vertical (default: the campaign id with - as _).
    #[arg(long)]
    vertical: Option<String>,
    /// Comma-separated buyer ids put in the consent's disclosed_buyers.
    #[arg(long)]
    disclosed_buyers: Option<String>,
    /// Send each lead with an Idempotency-Key of its own, as a seller that retries safely does.
    #[arg(long)]
    idempotency_keys: bool,
    /// A template variable as NAME=JSON (repeatable), e.g. --var 'source="fb-17"' for a
    /// template with ${source}; a name the template does not use is refused.
    #[arg(long = "var")]
    vars: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn fail(msg: impl std::fmt::Display, code: i32) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(code);
}

/// The names of the `${name}` placeholders in template text that parsed, in order.
fn placeholders(text: &str) -> impl Iterator<Item = &str> {
    text.split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn main() {
    let args: Args = common::parse_args();
    // Each flag is within its own range; together they must fit the longest run too.
    let duration = Duration::from_secs(args.duration_s);
    let warmup = Duration::from_millis(args.warmup_ms);
    if duration + warmup > load::MAX_RUN {
        fail(
            format!(
                "--duration-s {} with --warmup-ms {} is past the longest run, {} s in all",
                args.duration_s,
                args.warmup_ms,
                load::MAX_RUN.as_secs()
            ),
            2,
        );
    }
    let target: SocketAddr = match args.target.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => a,
        _ => fail(
            format!("--target `{}` is not a reachable host:port", args.target),
            2,
        ),
    };
    let (mut template, text) = match &args.template {
        None => (LeadTemplate::default(), None),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => match LeadTemplate::parse(&text) {
                Ok(t) => (t, Some((path, text))),
                Err(e) => fail(format!("{path}: {e}"), 2),
            },
            Err(e) => fail(format!("{path}: {e}"), 2),
        },
    };
    let source = match &text {
        Some((path, _)) => path.to_string(),
        None => "the default lead".to_string(),
    };
    let mut given: Vec<String> = Vec::new();
    // A value for a variable the template does not use would go nowhere: a typo in a name, or
    // a template other than the one meant. Refused, as a wrong flag is.
    let mut set = |flag: &str, name: &str, value: &str| {
        if let Err(e) = template.set(name, value) {
            fail(e, 2);
        }
        if !template.uses(name) {
            fail(
                format!("{flag}: {source} has no ${{{name}}}, so the value would go nowhere"),
                2,
            );
        }
        given.push(name.to_string());
    };
    if let Some(v) = &args.vertical {
        set("--vertical", "vertical", &json_string(v));
    }
    if let Some(list) = &args.disclosed_buyers {
        let ids: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(json_string)
            .collect();
        set(
            "--disclosed-buyers",
            "disclosed_buyers",
            &format!("[{}]", ids.join(",")),
        );
    }
    for var in &args.vars {
        match var.split_once('=') {
            Some((name, value)) => {
                let name = name.trim();
                // The value goes into every lead verbatim: text that is not JSON would make
                // every lead a 400, so it is refused here, before anything is sent.
                if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(value) {
                    fail(
                        format!(
                            "--var {name}: `{value}` is not JSON ({e}); a string needs its quotes: --var '{name}=\"{value}\"'"
                        ),
                        2,
                    );
                }
                set(&format!("--var {name}"), name, value)
            }
            None => fail(format!("--var `{var}` is not NAME=JSON"), 2),
        }
    }
    // A custom variable left without a value is a usage error: refuse it before connecting,
    // not as a failed run. `vertical` (the campaign id) and `disclosed_buyers` (`[]`) have
    // defaults; every other needs --var.
    if let Some((path, text)) = &text {
        if let Some(name) = placeholders(text).find(|n| {
            template.uses(n)
                && !matches!(*n, "vertical" | "disclosed_buyers")
                && !given.iter().any(|g| g == n)
        }) {
            let e = TemplateError::Unset(name.to_string());
            fail(format!("{path}: {e}; give it with --var {name}=JSON"), 2);
        }
    }
    // Filled in, every lead must be JSON, or each would be refused (400) and the run measure
    // nothing but refusals: found now, before anything is sent.
    if let Err(e) = template.check_json(&args.campaign) {
        fail(format!("{source}: {e}"), 2);
    }
    let spec = LoadSpec {
        target,
        api_key: args.key.clone(),
        campaign: args.campaign.clone(),
        rate_per_s: args.rate,
        duration,
        connections: args.connections as usize,
        pipeline: args.pipeline as usize,
        lead_template: template,
        warmup,
        stop: Some(stop_flag()),
        idempotency_keys: args.idempotency_keys,
    };
    let report = match load::run(&spec) {
        Ok(r) => r,
        // Named as the operator wrote it, which may be a host name.
        Err(e) => match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<load::CannotConnect>())
        {
            Some(c) => fail(format!("cannot connect to {}: {}", args.target, c.cause), 1),
            // A spec the run refuses before it starts (such as a key with control characters)
            // came from the flags.
            None if e.kind() == std::io::ErrorKind::InvalidInput => fail(e, 2),
            None => fail(e, 1),
        },
    };
    // Printed through `gavel::out`: a reader that went away (`| head`) is not a failure, a
    // report that could not be written (a full disk) is, and neither panics.
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => out_println!("{s}"),
            Err(e) => fail(e, 1),
        }
    } else {
        out_println!("{report}");
    }
    // Stopped by a signal: the report is out, and the exit says how the run ended.
    let sig = SIGNAL.load(Ordering::SeqCst);
    let code = if sig != 0 { 128 + sig } else { 0 };
    let error = gavel::out::take_error();
    std::process::exit(gavel::out::finish_as(
        "error",
        code,
        error,
        &mut std::io::stderr(),
    ));
}

/// The stop flag of the run, set by SIGINT or SIGTERM once the handlers are installed.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::clone(STOP.get_or_init(|| Arc::new(AtomicBool::new(false))));
    // SAFETY: the handler only stores to atomics, which is async-signal-safe.
    let handler: extern "C" fn(libc::c_int) = on_signal;
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
    stop
}
