//! `gavel demo` as a person runs it: the counts it prints describe the same leads, and money
//! reads as dollars with two decimals.

use std::collections::BTreeMap;
use std::process::Command;

/// The whole-number columns of the table row that starts with `name`, and its dollar columns
/// in cents.
fn row(out: &str, name: &str) -> (Vec<u64>, Vec<i64>) {
    let line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name}:\n{out}"));
    let mut counts = Vec::new();
    let mut money = Vec::new();
    for w in line.split_whitespace().skip(1) {
        if w.contains('$') {
            money.push(cents(w));
        } else if let Ok(n) = w.parse() {
            counts.push(n);
        }
    }
    (counts, money)
}

/// `$8604.60` or `-$3.50` in cents; anything else (`$8604.6`, `$0.0`) fails the test.
fn cents(w: &str) -> i64 {
    let w = w.trim_end_matches([',', '.']);
    let (neg, digits) = match w.strip_prefix("-$") {
        Some(d) => (true, d),
        None => (false, w.strip_prefix('$').unwrap_or_else(|| panic!("{w}"))),
    };
    let (d, c) = digits.split_once('.').unwrap_or_else(|| panic!("{w}"));
    assert_eq!(c.len(), 2, "not two decimals: {w}");
    let v = d.parse::<i64>().unwrap() * 100 + c.parse::<i64>().unwrap();
    if neg {
        -v
    } else {
        v
    }
}

/// The section of the output from the line starting with `start` to the next blank line.
fn section<'a>(out: &'a str, start: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| !l.starts_with(start))
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn the_streams_and_the_books_count_the_same_leads() {
    let out = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["demo", "--seconds", "1", "--rate", "50"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("note:"), "{text}");

    let mut streams_leads = 0;
    let mut streams_revenue = 0;
    for campaign in ["auto-insurance", "solar"] {
        // The stream's row (its first one) and the campaign's P&L row.
        let (s, s_money) = row(&text, campaign);
        let pnl_line = section(&text, "campaigns (P&L")
            .into_iter()
            .find(|l| l.split_whitespace().next() == Some(campaign))
            .unwrap_or_else(|| panic!("no P&L row {campaign}:\n{text}"));
        let (p, p_money) = row(pnl_line, campaign);
        // Stream: answered, sold, unsold, rejected (rates and milliseconds have decimals).
        let [answered, sold, unsold, rejected] = s[..] else {
            panic!("stream row {campaign}: {s:?}\n{text}");
        };
        // P&L: leads, sold, unsold, rejected.
        assert_eq!(p.len(), 4, "{pnl_line}");
        assert!(answered > 0, "{text}");
        assert_eq!(
            sold + unsold + rejected,
            answered,
            "{campaign}: every answer was an auction's\n{text}"
        );
        assert_eq!(
            p,
            vec![answered, sold, unsold, rejected],
            "{campaign}: the P&L counts the stream's leads, no more\n{text}"
        );
        // Revenue as the seller's answers carried it and as the exchange booked it.
        assert_eq!(s_money[0], p_money[0], "{campaign} revenue\n{text}");
        // Profit is revenue less payout.
        assert_eq!(p_money[2], p_money[0] - p_money[1], "{campaign}\n{text}");
        streams_leads += answered;
        streams_revenue += s_money[0];
    }

    // The total line and the overhead histogram cover the same leads.
    let total = text
        .lines()
        .find(|l| l.starts_with("total: "))
        .unwrap_or_else(|| panic!("{text}"));
    let n: u64 = total["total: ".len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{total}"));
    assert_eq!(n, streams_leads, "{text}");
    let money: Vec<i64> = total
        .split_whitespace()
        .filter(|w| w.contains('$'))
        .map(cents)
        .collect();
    assert_eq!(money[0], streams_revenue, "{total}");
    let overhead = text
        .lines()
        .find(|l| l.starts_with("internal overhead per lead"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        overhead.ends_with(&format!(", {n} leads:")),
        "{overhead}\n{text}"
    );

    // What buyers spent is what the campaigns earned.
    let mut spent = BTreeMap::new();
    for line in section(&text, "buyers") {
        let (_, m) = row(line, line.split_whitespace().next().unwrap_or(""));
        spent.insert(
            line.split_whitespace().next().unwrap_or("").to_string(),
            m[1],
        );
    }
    assert_eq!(spent.len(), 10, "{text}");
    assert_eq!(spent.values().sum::<i64>(), streams_revenue, "{text}");

    // Every amount printed is dollars with two decimals.
    for w in text.split_whitespace().filter(|w| w.contains('$')) {
        cents(w);
    }
}

/// A long demo, `signal` sent to it `after` its first line (the streams begin then); its exit
/// status, stdout and stderr once it has ended (within 30 s of the signal).
fn demo_stopped(
    signal: libc::c_int,
    after: std::time::Duration,
) -> (std::process::ExitStatus, String, String) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["demo", "--seconds", "120", "--rate", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("gavel demo: exchange on"), "{first}");
    std::thread::sleep(after);
    // SAFETY: kill(2) with a pid this test started and a plain signal number.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gavel demo still running 30 s after signal {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = first;
    stdout.read_to_string(&mut text).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, text, err)
}

/// SIGTERM (or Ctrl-C) part-way through a long demo ends the lead streams, answers what is in
/// flight and still prints the summary, whose counts agree as in a full run.
#[test]
fn a_stopped_demo_still_prints_its_summary() {
    // Past the warm-up, into the measured run.
    let (status, text, err) = demo_stopped(libc::SIGTERM, std::time::Duration::from_secs(2));
    assert!(status.success(), "{status:?}\n{text}\n{err}");
    assert!(text.contains("stopped by a signal after"), "{text}");
    for campaign in ["auto-insurance", "solar"] {
        let (s, _) = row(&text, campaign);
        let pnl_line = section(&text, "campaigns (P&L")
            .into_iter()
            .find(|l| l.split_whitespace().next() == Some(campaign))
            .unwrap_or_else(|| panic!("no P&L row {campaign}:\n{text}"));
        let (p, _) = row(pnl_line, campaign);
        let [answered, sold, unsold, rejected] = s[..] else {
            panic!("stream row {campaign}: {s:?}\n{text}");
        };
        assert!(answered > 0, "{text}");
        assert_eq!(
            p,
            vec![answered, sold, unsold, rejected],
            "{campaign}\n{text}"
        );
    }
}

/// A stop during the warm-up is what was asked for: exit 0, saying nothing was measured yet.
#[test]
fn a_demo_stopped_in_its_warm_up_exits_cleanly() {
    // The 500 ms warm-up has just begun.
    let (status, text, err) = demo_stopped(libc::SIGINT, std::time::Duration::ZERO);
    assert!(status.success(), "{status:?}\n{text}\n{err}");
    // Unless this machine was too slow to signal within the warm-up, when the summary of
    // the stretch that ran is printed instead.
    assert!(
        text.contains("during the warm-up, before anything was measured")
            || text.contains("stopped by a signal after"),
        "{text}\n{err}"
    );
    assert!(!err.contains("failed"), "{err}");
}

/// A second stop signal exits at once (128 + the signal) and takes the run's temporary
/// journal with it, as a full run and a single signal do.
#[test]
fn a_second_stop_signal_exits_at_once_and_leaves_no_journal_behind() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    // A temporary directory of the test's own, so that what the demo leaves is all that is in it.
    let tmp = std::env::temp_dir().join(format!("gavel-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["demo", "--seconds", "120", "--rate", "50"])
        .env("TMPDIR", &tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("gavel demo: exchange on"), "{first}");
    let journal = tmp.join(format!("gavel-demo-{}", child.id()));
    assert!(
        journal.is_dir(),
        "the demo journals to {}",
        journal.display()
    );
    let pid = child.id() as libc::pid_t;
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    // SAFETY: kill(2) with a pid this test started and a plain signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    // The second only once the first is taken: two pending signals of one kind are one.
    let mut line = String::new();
    while !line.contains("stop signal") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "no word of the signal"
        );
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&tmp);
            panic!("gavel demo still running 10 s after a second SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A `TMPDIR` that does not exist is said to be so, not made and left behind.
#[test]
fn a_missing_tmpdir_is_said_and_not_made() {
    let parent = std::env::temp_dir().join(format!("gavel-demo-notmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    let missing = parent.join("sub");
    let out = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["demo", "--seconds", "1", "--rate", "5"])
        .env("TMPDIR", &missing)
        .output()
        .unwrap();
    let made = parent.exists();
    let _ = std::fs::remove_dir_all(&parent);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot make its journal directory"), "{err}");
    assert!(err.contains("TMPDIR"), "{err}");
    assert!(!made, "the demo made {}", parent.display());
}
