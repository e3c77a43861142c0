//! The command line: `gavel serve | check | demo | journal | buyer-check`.
//! A wrong flag or a missing file gives a one-line error and exit code 2.

/// `println!` that does not panic when stdout cannot be written (see [`crate::out`]).
macro_rules! println {
    ($($arg:tt)*) => { $crate::out_println!($($arg)*) };
}

/// A line to stderr. `std`'s `eprintln!` panics when stderr is a closed pipe or a full disk;
/// the exchange must go on (and still take its signals) when whoever reads its log goes away.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use crate::config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "gavel", version, about = "Gavel: a ping-post lead exchange")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the exchange: the seller API, the buyer pools and the operator API.
    Serve {
        /// The config file.
        #[arg(long, default_value = "config/gavel.toml")]
        config: PathBuf,
    },
    /// Validate a config file; errors name the key and the line.
    Check {
        /// The config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// The embedded default: the exchange, a simulated buyer fleet and a lead stream in one
    /// process, on a bundled config. Prints throughput, sold rate, revenue, P&L and latency.
    #[command(allow_negative_numbers = true)]
    Demo(crate::demo::DemoArgs),
    /// Read the journal: export, show one lead, follow, verify.
    #[command(subcommand)]
    Journal(crate::journal::cli::JournalCmd),
    /// Send test pings to a buyer endpoint and report protocol conformance and response-time
    /// percentiles (for onboarding buyers). Exit 0 conformant, 1 not (or unreachable).
    #[command(allow_negative_numbers = true)]
    BuyerCheck(crate::buyer_check::BuyerCheckArgs),
}

/// `gavel help --help` (and `gavel journal help -h`): clap's `help` subcommand takes no flags
/// and would refuse them; every command answers `--help`, so the flag is dropped and `help`
/// prints the help it prints anyway.
fn help_help(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let help_at = match args.get(1).and_then(|a| a.to_str()) {
        Some("help") => Some(1),
        Some("journal") if args.get(2).and_then(|a| a.to_str()) == Some("help") => Some(2),
        _ => None,
    };
    if let Some(at) = help_at {
        let mut i = at + 1;
        while i < args.len() {
            if matches!(args[i].to_str(), Some("--help" | "-h")) {
                args.remove(i);
            } else {
                i += 1;
            }
        }
    }
    args
}

/// The one-line error for a command given without its subcommand: the command as typed
/// (`gavel journal`) and the subcommands it takes.
fn missing_command(args: &[std::ffi::OsString]) -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = vec!["gavel".to_string()];
    for arg in args.iter().skip(1) {
        let Some(arg) = arg.to_str() else { break };
        match cmd.find_subcommand(arg) {
            Some(sub) => {
                path.push(arg.to_string());
                cmd = sub.clone();
            }
            None => break,
        }
    }
    let subs: Vec<&str> = cmd
        .get_subcommands()
        .map(|c| c.get_name())
        .filter(|n| *n != "help")
        .collect();
    let path = path.join(" ");
    format!(
        "`{path}` needs a command: {} (see `{path} --help`)",
        subs.join(", ")
    )
}

/// Run the command line; returns the process exit code.
pub fn main() -> i32 {
    let args = help_help(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(args.iter()) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    0
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    // A command with no subcommand (`gavel`, `gavel journal`): one line
                    // naming the subcommands, as every other wrong invocation gets.
                    eprintln!("gavel: {}", missing_command(&args));
                    2
                }
                _ => {
                    // The message up to the blank line before clap's usage and tips, on one
                    // line (a missing argument's name sits on the line after the message).
                    let text = e.to_string();
                    let message = text
                        .lines()
                        .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(" ");
                    let message = message.trim_start_matches("error: ");
                    eprintln!(
                        "gavel: {}",
                        if message.is_empty() {
                            "invalid arguments"
                        } else {
                            message
                        }
                    );
                    2
                }
            };
        }
    };
    let code = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Check { config } => check(&config),
        Command::Demo(args) => crate::demo::run(&args),
        Command::Journal(cmd) => crate::journal::cli::run(cmd),
        Command::BuyerCheck(args) => crate::buyer_check::run(&args),
    };
    crate::out::finish(code, crate::out::take_error(), &mut std::io::stderr())
}

pub(crate) fn load(path: &std::path::Path) -> Result<config::Snapshot, i32> {
    match config::load(path) {
        Ok(s) => Ok(s),
        Err(config::ConfigError::Io { path, error }) => {
            eprintln!("gavel: cannot read {}: {}", path.display(), error);
            Err(2)
        }
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("{}: {}", path.display(), line);
            }
            Err(1)
        }
    }
}

fn check(path: &std::path::Path) -> i32 {
    match load(path) {
        Ok(s) => {
            println!(
                "{}: ok ({} sellers, {} campaigns, {} buyers, {} workers)",
                path.display(),
                s.sellers.len(),
                s.campaigns.len(),
                s.buyers.len(),
                s.server.workers
            );
            for w in config::warnings(&s) {
                println!("warning: {}", w);
            }
            for w in crate::net::unresolved_endpoints(&s) {
                println!("warning: {}", w);
            }
            0
        }
        Err(code) => code,
    }
}

fn serve(path: &std::path::Path) -> i32 {
    // SIGHUP reloads the config; SIGTERM and SIGINT stop taking leads, answer the ones in flight
    // and exit (a second one exits at once). Blocked first thing, before the config is read and
    // before any other thread starts (threads inherit the mask), so a SIGHUP sent right after a
    // restart is a reload and not the default action's death; taken by `sigwait` on a thread of
    // its own: no code runs in a signal handler.
    let signals = block_signals(&[libc::SIGHUP, libc::SIGTERM, libc::SIGINT]);
    let snap = match load(path) {
        Ok(s) => Arc::new(s),
        Err(code) => return code,
    };
    for w in config::warnings(&snap) {
        eprintln!("gavel: warning: {}", w);
    }
    let handle = match crate::net::start(snap.clone()) {
        Ok(h) => h,
        Err(e) => {
            // The error names what failed: a listener and its address, or the journal.
            eprintln!("gavel: cannot start: {e}");
            return 1;
        }
    };
    let (recovery, replayed) = handle.recovery();
    eprintln!("gavel: {}", recovery);
    if let Some(cut) = recovery.cut.as_ref().filter(|c| !c.torn_tail) {
        let kept = match &cut.copied_to {
            Some(p) => format!("the segment as it was is kept in {}", p.display()),
            None => "the segment was moved aside whole".to_string(),
        };
        if cut.records_skipped > 0 {
            eprintln!(
                "gavel: warning: journal damage at {} cut {} whole record(s) out of the journal; {kept}",
                cut.at, cut.records_skipped,
            );
        } else {
            eprintln!(
                "gavel: warning: journal damage at {} ({}): what was there is not in the journal \
                 (sales, caps and budgets in it are not replayed); {kept}",
                cut.at, cut.kind,
            );
        }
    }
    eprintln!(
        "gavel: {} sale(s) of the last 32 days replayed into caps and budgets",
        replayed.sales
    );
    if replayed.unresolved_posts > 0 {
        eprintln!(
            "gavel: warning: {} post(s) were waiting on a buyer's answer when the exchange last \
             stopped; counted against those buyers' caps and budgets as sales (a test lead's take \
             none), no money booked; \
             settle them with the buyers (leads, by when their post was sent, at most {} listed): {}",
            replayed.unresolved_posts,
            crate::net::MAX_UNRESOLVED_LISTED,
            replayed.unresolved_leads.join(", ")
        );
    }
    if replayed.unanswered_sold > 0 {
        eprintln!(
            "gavel: warning: {} lead(s) were sold when the exchange last stopped but their \
             sellers were never answered; counted as sold in the P&L; settle them with the \
             sellers (leads, oldest first, at most {} listed): {}",
            replayed.unanswered_sold,
            crate::net::MAX_UNRESOLVED_LISTED,
            replayed.unanswered_leads.join(", ")
        );
    }
    if replayed.cut_off_unposted > 0 {
        eprintln!(
            "gavel: {} lead(s) were in their auction, never posted to a buyer nor answered, when \
             the exchange last stopped: their sellers may send them again (not duplicates)",
            replayed.cut_off_unposted
        );
    }
    if replayed.history_lost > 0 {
        eprintln!(
            "gavel: warning: {} lead(s) have no answer in the journal this start cut: their \
             posts, sales or answers may have been in what was lost, so whether a buyer has them \
             is not known; posts among them are counted against the buyers' caps, and a lookup \
             answers them from what is left (`interrupted`, `history_lost`, unless the files set \
             aside still tell their sale or answer); settle them with the buyers and \
             sellers (oldest first, at most {} listed): {}",
            replayed.history_lost,
            crate::net::MAX_UNRESOLVED_LISTED,
            replayed.history_lost_leads.join(", ")
        );
    }
    if replayed.arrival_lost > 0 {
        eprintln!(
            "gavel: warning: {} lead(s) posted to buyers lost their arrival record to the damage \
             the journal was cut at: their consumers are not known to the dedupe index, so the \
             same consumer sent again is not refused as a duplicate; check what sellers send \
             again against them (oldest first, at most {} listed): {}",
            replayed.arrival_lost,
            crate::net::MAX_UNRESOLVED_LISTED,
            replayed.arrival_lost_leads.join(", ")
        );
    }
    if replayed.pings_held > 0 {
        eprintln!(
            "gavel: {} ping(s) whose bids were held at the last stop are held again until they \
             expire",
            replayed.pings_held
        );
    }
    let aside = &replayed.set_aside;
    if aside.records > 0 {
        eprintln!(
            "gavel: {} record(s) that recovery cut out of the journal read back from {} file(s) \
             set aside; {} of them, in the open windows, counted toward caps, dedupe and P&L \
             ({} sale(s))",
            aside.records, aside.files, aside.replayed, replayed.set_aside_sales
        );
    }
    eprintln!(
        "gavel: serving sellers on {} with {} workers",
        handle.local_addr(),
        snap.server.workers
    );
    if let Some(a) = handle.admin_addr() {
        eprintln!("gavel: operator API on {}", a);
    }
    if let Some(set) = signals {
        let shared = handle.shared().clone();
        let spawned = std::thread::Builder::new()
            .name("gavel-signals".into())
            .spawn(move || on_signals(set, &shared));
        if spawned.is_err() {
            // Nobody would take them: let SIGTERM and SIGINT end the process as by default.
            unblock_signals(&set);
            eprintln!(
                "gavel: warning: cannot start the signal thread: reload with POST /v1/admin/reload"
            );
        }
    }
    let shared = handle.shared().clone();
    handle.join();
    if let Err(e) = shared.journal.flush() {
        eprintln!("gavel: journal flush at exit failed: {}", e);
        return 1;
    }
    // A second signal, or the drain limit, leaves leads unanswered: a supervisor must be able
    // to tell that from a clean stop.
    let unanswered = shared.in_flight.load(std::sync::atomic::Ordering::Acquire);
    if unanswered > 0 {
        eprintln!("gavel: stopped with {unanswered} lead(s) in flight unanswered");
        return 1;
    }
    // Records lost are money or caps unaccounted for: not a clean stop either.
    let refused = shared.journal.refused();
    let (dir_lost, segment_lost) = (shared.journal.dir_lost(), shared.journal.segment_lost());
    if refused > 0 || dir_lost || segment_lost {
        let (_, last) = shared.journal.background_errors();
        eprintln!(
            "gavel: stopped; the journal refused {refused} record(s) while serving{}{}",
            if dir_lost {
                " and its directory was removed or replaced"
            } else if segment_lost {
                " and the segment it was writing was deleted, replaced or cut short"
            } else {
                ""
            },
            last.map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        );
        return 1;
    }
    eprintln!("gavel: stopped");
    0
}

/// Block `signals` in the calling thread (and so in every thread it starts); the set to wait
/// on with `sigwait`.
pub(crate) fn block_signals(signals: &[libc::c_int]) -> Option<libc::sigset_t> {
    // SAFETY: plain libc calls on a zeroed, then initialised, signal set owned by this frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        if libc::sigemptyset(&mut set) != 0 {
            return None;
        }
        for &sig in signals {
            if libc::sigaddset(&mut set, sig) != 0 {
                return None;
            }
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return None;
        }
        Some(set)
    }
}

pub(crate) fn unblock_signals(set: &libc::sigset_t) {
    // SAFETY: `set` is an initialised signal set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_UNBLOCK, set, std::ptr::null_mut());
    }
}

/// Reload the config on every SIGHUP; drain on the first SIGTERM or SIGINT, stop at once on the
/// second. Outcomes are reported on stderr.
fn on_signals(set: libc::sigset_t, shared: &crate::net::Shared) {
    let mut stopping = false;
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is an initialised signal set; `sig` is a valid out pointer.
        let r = unsafe { libc::sigwait(&set, &mut sig) };
        if r != 0 {
            return;
        }
        if sig == libc::SIGTERM || sig == libc::SIGINT {
            if stopping {
                eprintln!("gavel: second stop signal: exiting now, leads in flight unanswered");
                shared.stop_now();
            } else {
                stopping = true;
                eprintln!(
                    "gavel: stop signal: taking no new leads, answering the {} in flight, then \
                     exiting (at most {} s; signal again to exit at once)",
                    shared.in_flight.load(std::sync::atomic::Ordering::Acquire),
                    crate::net::DRAIN_LIMIT.as_secs()
                );
                shared.drain();
            }
            continue;
        }
        if sig != libc::SIGHUP {
            continue;
        }
        match crate::net::reload(shared) {
            Ok(report) => eprintln!(
                "gavel: SIGHUP: config reloaded, generation {}",
                report.generation
            ),
            Err(e) => {
                for line in e.to_string().lines() {
                    eprintln!("gavel: SIGHUP: reload refused: {}", line);
                }
            }
        }
    }
}
