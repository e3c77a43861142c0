//! `gavel journal export | show | tail | verify`: the operator's view of the journal.
//!
//! Every command only reads: recovery (cutting damage) is done by `Journal::open` alone, so
//! these are safe to run against the journal of a running exchange.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{Entry, Follower, Reader};
use super::record::{LeadFlow, PayoutTerms, PingOutcome, Record, Unsettled};
use super::{verify, DamageKind, JournalError};
use crate::money::{write_dollars, Cents};
use crate::text::shown;

/// Default journal directory, as in the example configuration.
pub const DEFAULT_DIR: &str = "data/journal";

/// How often `tail` looks for new records.
pub const TAIL_POLL: Duration = Duration::from_millis(100);

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for a damaged journal, a lead not found, or an I/O failure while reading.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code for usage errors and a missing journal directory.
pub const EXIT_USAGE: i32 = 2;

/// The `gavel journal` subcommands.
#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum JournalCmd {
    /// Print every record as one JSON object a line (lead_id, type, ts, and its fields).
    Export {
        /// Journal directory.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Print one lead's whole history, readable by a person.
    Show {
        /// The lead's id (a 26-character ULID).
        lead_id: String,
        /// Journal directory.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
    /// Follow new records as they are written (JSON lines, as `export`), after the last few.
    Tail {
        /// Journal directory.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
        /// Records from before the start to print first (from the newest segment).
        #[arg(short = 'n', long, default_value_t = 10)]
        lines: usize,
    },
    /// Check every segment: exit 0 when intact (a torn tail from a crash counts as intact),
    /// 1 with the segment and offset of the damage otherwise.
    Verify {
        /// Journal directory.
        #[arg(long, default_value = DEFAULT_DIR)]
        dir: PathBuf,
    },
}

/// Run a subcommand, printing to stdout/stderr; returns the process exit code.
pub fn run(cmd: JournalCmd) -> i32 {
    let stdout = io::stdout();
    let mut out = crate::out::Tracked::new(io::BufWriter::new(stdout.lock()));
    let code = run_to(cmd, &mut out, &mut io::stderr());
    crate::out::finish(code, out.finish(), &mut io::stderr())
}

/// Run a subcommand writing to the given streams (testable form of [`run`]).
pub fn run_to(cmd: JournalCmd, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let dir = match &cmd {
        JournalCmd::Export { dir }
        | JournalCmd::Show { dir, .. }
        | JournalCmd::Tail { dir, .. }
        | JournalCmd::Verify { dir } => dir.clone(),
    };
    if !dir.is_dir() {
        let why = if dir.exists() {
            "is not a directory"
        } else {
            "not found"
        };
        let _ = writeln!(err, "gavel: journal directory {} {why}", dir.display());
        return EXIT_USAGE;
    }
    if let JournalCmd::Show { lead_id, .. } = &cmd {
        if crate::net::lookup::canonical_lead_id(lead_id).is_none() {
            let _ = writeln!(
                err,
                "gavel: {:?} is not a lead id: a lead id is the 26-character ULID the exchange \
                 answered with, e.g. 01JD5V9XQ8Z7K3M2N4P6R8T0VW",
                lead_id
            );
            return EXIT_USAGE;
        }
    }
    if matches!(cmd, JournalCmd::Export { .. } | JournalCmd::Show { .. }) {
        // A journal always has a segment from its first start: a mistyped `--dir` is not a
        // journal with nothing in it. (`verify` says the same with its own report.)
        match super::segment::list_segments(&dir) {
            Ok(s) if s.is_empty() => {
                let _ = writeln!(
                    err,
                    "gavel: no journal in {}: no segment files",
                    dir.display()
                );
                return EXIT_FAILURE;
            }
            Ok(_) => {}
            Err(e) => return report_error(err, &e),
        }
    }
    match cmd {
        JournalCmd::Export { dir } => export(&dir, out, err),
        JournalCmd::Show { lead_id, dir } => show(&dir, &lead_id, out, err),
        JournalCmd::Tail { dir, lines } => tail(&dir, lines, out, err, None),
        JournalCmd::Verify { dir } => verify_cmd(&dir, out, err),
    }
}

fn report_error(err: &mut dyn Write, e: &JournalError) -> i32 {
    let _ = writeln!(err, "gavel: {e}");
    match e {
        JournalError::NotFound(_) => EXIT_USAGE,
        _ => EXIT_FAILURE,
    }
}

fn export(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut reader = match Reader::open(dir) {
        Ok(r) => r,
        Err(e) => return report_error(err, &e),
    };
    let mut line = Vec::with_capacity(1024);
    for item in reader.by_ref() {
        match item {
            Ok(entry) => {
                line.clear();
                entry_json(&entry, &mut line);
                line.push(b'\n');
                if out.write_all(&line).is_err() {
                    // The reader went away (a closed pipe) or the output cannot be written:
                    // nothing more to do, and `run` tells which.
                    return EXIT_OK;
                }
            }
            Err(e) => return report_error(err, &e),
        }
    }
    if reader.skipped_undecodable > 0 {
        let _ = writeln!(err, "gavel: {}", unreadable(reader.skipped_undecodable));
        return EXIT_FAILURE;
    }
    EXIT_OK
}

/// What a count of whole (checksummed) records whose content does not decode means.
fn unreadable(n: u64) -> String {
    format!(
        "{n} whole record(s) could not be read and are left out: their checksum holds but their \
         content is not a record of their type (written wrong, or written over)"
    )
}

fn verify_cmd(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match verify(dir) {
        Ok(report) if report.segments == 0 && report.damage.is_none() => {
            // A journal always has a segment from its first start: a mistyped `--dir`, or
            // a journal whose files are all gone, is not an intact one.
            let _ = writeln!(
                err,
                "gavel: no journal in {}: no segment files",
                dir.display()
            );
            EXIT_FAILURE
        }
        Ok(report) if report.intact() && report.undecodable == 0 => {
            let _ = writeln!(out, "ok: {report}");
            EXIT_OK
        }
        Ok(report) if report.intact() => {
            let _ = writeln!(out, "{report}");
            let _ = writeln!(err, "damaged: {}", unreadable(report.undecodable));
            EXIT_FAILURE
        }
        Ok(report) => {
            let _ = writeln!(out, "{report}");
            if let Some(d) = &report.damage {
                let lost = match d.kind {
                    DamageKind::MissingSegment(_)
                    | DamageKind::NewestMissing { .. }
                    | DamageKind::OldestMissing { .. } => {
                        "; the missing file's records are lost unless it is restored"
                    }
                    k if d.records_after == 0 && k.is_committed_record() => {
                        "; a committed record is lost (a power loss or a bad disk)"
                    }
                    _ => "",
                };
                let _ = writeln!(
                    err,
                    "damaged: segment {} offset {}: {} ({} whole record(s) after it){lost}",
                    d.at.segment, d.at.offset, d.kind, d.records_after
                );
            }
            EXIT_FAILURE
        }
        Err(e) => report_error(err, &e),
    }
}

/// Follow the journal; `max_polls` bounds the loop for tests (`None`: until interrupted).
pub fn tail(
    dir: &Path,
    lines: usize,
    out: &mut dyn Write,
    err: &mut dyn Write,
    max_polls: Option<u64>,
) -> i32 {
    match super::segment::list_segments(dir) {
        Ok(s) if s.is_empty() => {
            // An exchange about to start for the first time: its records are followed once
            // its first segment is made.
            let _ = writeln!(
                err,
                "gavel: no journal in {} yet: waiting for its first segment",
                dir.display()
            );
        }
        Ok(_) => {}
        Err(e) => return report_error(err, &e),
    }
    let (mut follower, backlog) = match Follower::from_end(dir, lines) {
        Ok(x) => x,
        Err(e) => return report_error(err, &e),
    };
    let mut line = Vec::with_capacity(1024);
    let mut write_entry = |e: &Entry, out: &mut dyn Write| -> bool {
        line.clear();
        entry_json(e, &mut line);
        line.push(b'\n');
        out.write_all(&line).is_ok()
    };
    for e in &backlog {
        if !write_entry(e, out) {
            return EXIT_OK;
        }
    }
    let _ = out.flush();
    let mut polls = 0u64;
    loop {
        if max_polls.is_some_and(|m| polls >= m) {
            return EXIT_OK;
        }
        polls += 1;
        let mut closed = false;
        let res = follower.poll(&mut |e| {
            if !closed && !write_entry(&e, out) {
                closed = true;
            }
        });
        if closed || out.flush().is_err() {
            return EXIT_OK;
        }
        if let Err(e) = res {
            return report_error(err, &e);
        }
        std::thread::sleep(TAIL_POLL);
    }
}

fn show(dir: &Path, lead_id: &str, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    // A lead id in either case, as a seller's log may have it: ids are written upper case.
    let canonical = crate::net::lookup::canonical_lead_id(lead_id);
    let lead_id = canonical.as_deref().unwrap_or(lead_id);
    // Damage (segments missing from the front, a segment cut short or corrupt) takes its
    // own records, not the later ones': the lead's history in what is left is shown, with
    // the first damage as a warning.
    let mut reader = match Reader::open(dir) {
        Ok(r) => r.only_lead(lead_id).past_damage(),
        Err(e) => return report_error(err, &e),
    };
    let mut entries = Vec::new();
    let mut damage = None;
    for item in reader.by_ref() {
        match item {
            Ok(e) if e.record.lead_id() == lead_id => entries.push(e),
            Ok(_) => {}
            Err(e) => {
                damage.get_or_insert(e);
            }
        }
    }
    // Whole records of this lead that do not decode are damage, as `export` and `verify`
    // have them; torn records (appends a crash caught before their commit) are not, but one
    // may have been this lead's.
    let undecodable = reader.skipped_undecodable;
    let torn = reader.skipped_torn;
    let note_torn = |err: &mut dyn Write| {
        if torn > 0 {
            let _ = writeln!(
                err,
                "note: {torn} torn record(s) skipped: appends a crash caught before they were \
                 committed, never part of the journal; one may have been this lead's"
            );
        }
    };
    if entries.is_empty() {
        let _ = writeln!(err, "gavel: lead {lead_id} not found in {}", dir.display());
        if let Some(e) = damage {
            let _ = writeln!(err, "gavel: {e}");
        }
        if undecodable > 0 {
            let _ = writeln!(err, "gavel: {}", unreadable(undecodable));
        }
        note_torn(err);
        return EXIT_FAILURE;
    }
    let first = entries.iter().map(|e| e.ts_us).min().unwrap_or(0);
    let _ = writeln!(
        out,
        "lead {}, first record at {}",
        printable(lead_id),
        rfc3339_us(first)
    );
    for e in &entries {
        let _ = writeln!(
            out,
            "{:>12}  {:<15} {}",
            relative_ms(e.ts_us as i64 - first as i64),
            e.record.record_type().name(),
            printable(&describe(&e.record))
        );
    }
    note_torn(err);
    let mut failed = false;
    if let Some(e) = damage {
        let _ = writeln!(err, "warning: {e}; the history may be incomplete");
        failed = true;
    }
    if undecodable > 0 {
        let _ = writeln!(
            err,
            "warning: {undecodable} whole record(s) that may be this lead's could not be read \
             and are left out: their checksum holds but their content is not a record of their \
             type (written wrong, or written over); the history may be incomplete"
        );
        failed = true;
    }
    if failed {
        EXIT_FAILURE
    } else {
        EXIT_OK
    }
}

/// `+1234.567 ms` from a difference in microseconds.
fn relative_ms(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "+" };
    let a = us.unsigned_abs();
    format!("{sign}{}.{:03} ms", a / 1000, a % 1000)
}

/// `$42.50` for a person.
fn dollars_text(cents: Cents) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let a = cents.unsigned_abs();
    format!("{sign}${}.{:02}", a / 100, a % 100)
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

/// An optional id as [`shown`]; `-` when there is none.
fn opt_shown(s: &Option<String>) -> std::borrow::Cow<'_, str> {
    s.as_deref().map_or(std::borrow::Cow::Borrowed("-"), shown)
}

/// `s` with its control characters escaped (`\n`, `\u{1b}`): what sellers and buyers sent
/// (a source, a reason, a bid id) can neither break a record's line nor reach the terminal.
fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    // Besides control characters: line and paragraph separators (a terminal may break the
    // line at them) and the bidirectional controls (they reorder what follows on screen).
    let hidden = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    };
    if !s.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if hidden(c) {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// One line describing a record for `show`.
/// `journal show`'s line for a record, for the fuzz targets in `fuzz/`.
#[cfg(fuzzing)]
pub fn describe_record(r: &Record) -> String {
    describe(r)
}

fn describe(r: &Record) -> String {
    match r {
        Record::Recovered {
            kind: Unsettled::PostUnanswered,
            ..
        } => "found at a start: a post was out when the exchange stopped, its answer never \
              recorded; counted against the buyer's caps and budget (not a test lead's), no \
              money booked; settle it \
              with the buyer"
            .to_string(),
        Record::Recovered {
            kind: Unsettled::SellerUnanswered,
            ..
        } => "found at a start: sold, but the seller was never answered; counted as sold; \
              settle it with the seller"
            .to_string(),
        Record::Recovered {
            kind: Unsettled::HistoryLost,
            ..
        } => "found at a start that cut damage out of the journal: the lead has no answer in \
              what is left, and its posts, sales or answer may have been in what was lost; \
              whether a buyer has it is not known: settle it with the buyers and the seller"
            .to_string(),
        Record::Recovered {
            kind: Unsettled::NeverPosted,
            ..
        } => "found at a start: the exchange stopped while the lead was in its auction, before \
              any post; no buyer has it, and its seller may send it again"
            .to_string(),
        Record::LeadReceived {
            seller,
            campaign,
            source,
            test,
            lead_json,
            flow,
            idempotency_key,
            ..
        } => format!(
            "{}from {} for {}, source {}, {}{} bytes of lead and consent{}",
            match flow {
                Some(LeadFlow::Ping) => "ping ",
                Some(LeadFlow::Post) => "post ",
                _ => "",
            },
            shown(seller),
            shown(campaign),
            opt_shown(source),
            if *test { "TEST, " } else { "" },
            lead_json.len(),
            match idempotency_key {
                Some(k) => format!(", Idempotency-Key {k:?}"),
                None => String::new(),
            }
        ),
        Record::Rejected {
            seller,
            campaign,
            http_status,
            code,
            field,
            message,
            ..
        } => {
            format!(
                "{http_status} {code} (field {}) from {} for {}{}",
                opt(field),
                shown(seller),
                shown(campaign),
                match message {
                    Some(m) => format!(": {m}"),
                    None => String::new(),
                }
            )
        }
        Record::PingSent { buyer, .. } => format!("to {}", shown(buyer)),
        Record::PingResult {
            buyer,
            outcome,
            reason,
            response_us,
            ..
        } => {
            let what = match outcome {
                PingOutcome::Bid { cents, bid_id } => {
                    format!(
                        "bid {} (bid id {})",
                        dollars_text(*cents),
                        opt_shown(bid_id)
                    )
                }
                other => other.name().replace('_', " "),
            };
            let why = reason
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default();
            let answered = matches!(outcome, PingOutcome::Bid { .. } | PingOutcome::NoBid);
            let buyer = shown(buyer);
            if *response_us == 0 && !answered {
                // Timed from the ping's first byte: none was written (no connection to the
                // buyer in time), so there is no time to tell.
                format!("{buyer}: {what}{why}, the ping never sent")
            } else {
                format!(
                    "{buyer}: {what}{why} in {}",
                    relative_ms(*response_us as i64).trim_start_matches('+')
                )
            }
        }
        Record::AuctionClosed { bids, ranked, .. } => {
            let list: Vec<String> = ranked
                .iter()
                .map(|(b, c)| format!("{} {}", shown(b), dollars_text(*c)))
                .collect();
            format!(
                "{bids} bid(s); ranked: {}",
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(", ")
                }
            )
        }
        Record::PostSent {
            buyer, price_cents, ..
        } => format!("to {} at {}", shown(buyer), dollars_text(*price_cents)),
        Record::PostResult {
            buyer,
            accepted,
            reason,
            response_us,
            price_cents,
            buyer_lead_id,
            ..
        } => format!(
            "{} {} at {}{}{} in {}",
            shown(buyer),
            match (accepted, reason.as_deref()) {
                (true, _) => "accepted",
                // Capped, paused, no connection: the buyer never had the post to reject.
                (false, Some(r)) if r.starts_with("not sent:") => "not posted",
                (false, _) => "rejected",
            },
            dollars_text(*price_cents),
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            buyer_lead_id
                .as_deref()
                .map(|r| format!(", buyer lead id {}", shown(r)))
                .unwrap_or_default(),
            relative_ms(*response_us as i64).trim_start_matches('+')
        ),
        Record::Sale {
            buyer,
            price_cents,
            payout_cents,
            seller,
            test: false,
            ..
        } => format!(
            "{} pays {}, {} earns {}",
            shown(buyer),
            dollars_text(*price_cents),
            shown(seller),
            dollars_text(*payout_cents)
        ),
        Record::Sale {
            buyer,
            price_cents,
            payout_cents,
            seller,
            test: true,
            ..
        } => format!(
            "TEST: {} would pay {}, {} would earn {} (a test lead moves no money)",
            shown(buyer),
            dollars_text(*price_cents),
            shown(seller),
            dollars_text(*payout_cents)
        ),
        Record::LeadAnswered {
            status,
            price_cents,
            payout_cents,
            elapsed_us,
            reason,
            ..
        } => format!(
            "{}{} for {}, payout {}, answered after {}",
            status.name(),
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            dollars_text(*price_cents),
            dollars_text(*payout_cents),
            relative_ms(*elapsed_us as i64).trim_start_matches('+')
        ),
        Record::PingAnswered {
            payout_cents,
            hold_ms,
            held,
            terms,
            ..
        } => {
            if held.is_empty() {
                "no bid".to_string()
            } else {
                let list: Vec<String> = held
                    .iter()
                    .map(|(b, c, _)| format!("{} {}", shown(b), dollars_text(*c)))
                    .collect();
                let rule = match terms {
                    Some(PayoutTerms::ShareBp(bp)) => format!(" ({}% share)", share_text(*bp, 2)),
                    Some(PayoutTerms::Fixed(c)) => format!(" (fixed {})", dollars_text(*c)),
                    None => String::new(),
                };
                format!(
                    "bid: payout {}{rule} offered for {hold_ms} ms; held: {}",
                    dollars_text(*payout_cents),
                    list.join(", ")
                )
            }
        }
    }
}

/// RFC 3339 in UTC with microseconds: `2026-11-25T17:59:01.123456Z`.
pub fn rfc3339_us(ts_us: u64) -> String {
    match chrono::DateTime::from_timestamp_micros(ts_us.min(i64::MAX as u64) as i64) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => format!("@{ts_us}us"),
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b',');
    json_str(out, k);
    out.push(b':');
}

fn field_str(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, k);
    json_str(out, v);
}

fn field_opt(out: &mut Vec<u8>, k: &str, v: &Option<String>) {
    key(out, k);
    match v {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn field_money(out: &mut Vec<u8>, k: &str, cents: Cents) {
    key(out, k);
    write_dollars(out, cents);
}

/// Basis points divided by 10^`digits`, with no trailing zeros: 4 gives the fraction
/// (`0.805`), 2 the percentage (`80.5`).
fn share_text(bp: u32, digits: u32) -> String {
    let den = 10u32.pow(digits);
    let (whole, frac) = (bp / den, bp % den);
    if frac == 0 {
        return whole.to_string();
    }
    let f = format!("{frac:0width$}", width = digits as usize);
    format!("{whole}.{}", f.trim_end_matches('0'))
}

fn field_num(out: &mut Vec<u8>, k: &str, v: u64) {
    key(out, k);
    out.extend_from_slice(v.to_string().as_bytes());
}

fn field_bool(out: &mut Vec<u8>, k: &str, v: bool) {
    key(out, k);
    out.extend_from_slice(if v { b"true" } else { b"false" });
}

/// The lead as received, embedded as JSON when it is JSON (line breaks, which valid JSON can
/// only hold as whitespace, become spaces so the record stays on one line), else as a string.
fn field_lead(out: &mut Vec<u8>, k: &str, raw: &[u8]) {
    key(out, k);
    if serde_json::from_slice::<serde::de::IgnoredAny>(raw).is_ok() {
        out.extend(
            raw.iter()
                .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
        );
    } else {
        json_str(out, &String::from_utf8_lossy(raw));
    }
}

/// One record as a JSON object (no trailing newline): `lead_id`, `type`, `ts` (RFC 3339, UTC,
/// microseconds), then the record's fields. Money is in dollars as JSON numbers.
pub fn entry_json(e: &Entry, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"lead_id\":");
    json_str(out, e.record.lead_id());
    field_str(out, "type", e.record.record_type().name());
    field_str(out, "ts", &rfc3339_us(e.ts_us));
    match &e.record {
        Record::Recovered { kind, .. } => field_str(out, "unsettled", kind.name()),
        Record::LeadReceived {
            seller,
            campaign,
            source,
            test,
            lead_json,
            flow,
            idempotency_key,
            ..
        } => {
            field_str(out, "seller", seller);
            field_str(out, "campaign", campaign);
            field_opt(out, "source", source);
            field_bool(out, "test", *test);
            if let Some(flow) = flow {
                field_str(out, "flow", flow.name());
            }
            if let Some(key) = idempotency_key {
                field_str(out, "idempotency_key", key);
            }
            field_lead(out, "lead", lead_json);
        }
        Record::Rejected {
            seller,
            campaign,
            http_status,
            code,
            field,
            message,
            ..
        } => {
            field_str(out, "seller", seller);
            field_str(out, "campaign", campaign);
            field_num(out, "http_status", *http_status as u64);
            field_str(out, "code", code);
            field_opt(out, "field", field);
            field_opt(out, "message", message);
        }
        Record::PingSent { buyer, .. } => field_str(out, "buyer", buyer),
        Record::PingResult {
            buyer,
            outcome,
            reason,
            response_us,
            ..
        } => {
            field_str(out, "buyer", buyer);
            field_str(out, "outcome", outcome.name());
            if let PingOutcome::Bid { cents, bid_id } = outcome {
                field_money(out, "bid", *cents);
                field_opt(out, "bid_id", bid_id);
            }
            // A ping that brought no answer says why in the contract's words (`timeout`,
            // `error`, `invalid`); what the exchange saw (`status 500`, `negative bid`) is
            // its `detail`.
            let failed = matches!(
                outcome,
                PingOutcome::Timeout | PingOutcome::Error | PingOutcome::Invalid
            );
            key(out, "reason");
            if failed {
                json_str(out, outcome.name());
            } else {
                out.extend_from_slice(b"null");
            }
            field_opt(out, "detail", reason);
            field_num(out, "response_us", *response_us);
        }
        Record::AuctionClosed { bids, ranked, .. } => {
            field_num(out, "bids", *bids as u64);
            key(out, "ranked");
            out.push(b'[');
            for (i, (buyer, cents)) in ranked.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"buyer\":");
                json_str(out, buyer);
                field_money(out, "price", *cents);
                out.push(b'}');
            }
            out.push(b']');
        }
        Record::PostSent {
            buyer, price_cents, ..
        } => {
            field_str(out, "buyer", buyer);
            field_money(out, "price", *price_cents);
        }
        Record::PostResult {
            buyer,
            accepted,
            reason,
            response_us,
            price_cents,
            buyer_lead_id,
            ..
        } => {
            field_str(out, "buyer", buyer);
            field_bool(out, "accepted", *accepted);
            field_opt(out, "reason", reason);
            field_num(out, "response_us", *response_us);
            field_money(out, "price", *price_cents);
            field_opt(out, "buyer_lead_id", buyer_lead_id);
        }
        Record::Sale {
            campaign,
            seller,
            buyer,
            price_cents,
            payout_cents,
            test,
            ..
        } => {
            field_str(out, "campaign", campaign);
            field_str(out, "seller", seller);
            field_str(out, "buyer", buyer);
            field_money(out, "price", *price_cents);
            field_money(out, "payout", *payout_cents);
            // A reader summing sales for billing leaves test leads out by this flag.
            field_bool(out, "test", *test);
        }
        Record::LeadAnswered {
            campaign,
            seller,
            status,
            price_cents,
            payout_cents,
            elapsed_us,
            bids,
            reason,
            ..
        } => {
            field_str(out, "campaign", campaign);
            field_str(out, "seller", seller);
            field_str(out, "status", status.name());
            field_money(out, "price", *price_cents);
            field_money(out, "payout", *payout_cents);
            field_num(out, "elapsed_us", *elapsed_us);
            if let Some(bids) = bids {
                field_num(out, "bids", u64::from(*bids));
            }
            field_opt(out, "reason", reason);
        }
        Record::PingAnswered {
            campaign,
            seller,
            payout_cents,
            hold_ms,
            held,
            terms,
            ..
        } => {
            field_str(out, "campaign", campaign);
            field_str(out, "seller", seller);
            field_str(
                out,
                "status",
                if held.is_empty() { "no_bid" } else { "bid" },
            );
            field_money(out, "payout", *payout_cents);
            field_num(out, "expires_in_ms", *hold_ms);
            match terms {
                Some(PayoutTerms::ShareBp(bp)) => {
                    key(out, "payout_share");
                    out.extend_from_slice(share_text(*bp, 4).as_bytes());
                }
                Some(PayoutTerms::Fixed(c)) => field_money(out, "payout_fixed", *c),
                None => {}
            }
            key(out, "held");
            out.push(b'[');
            for (i, (buyer, cents, bid_id)) in held.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"buyer\":");
                json_str(out, buyer);
                field_money(out, "price", *cents);
                field_opt(out, "bid_id", bid_id);
                out.push(b'}');
            }
            out.push(b']');
        }
    }
    out.push(b'}');
}
