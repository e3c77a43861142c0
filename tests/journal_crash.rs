//! The journal as the book of record, with the real binary: `kill -9` in the middle of a lead
//! stream, then restart. Every answered lead is in the journal, the journal verifies, and caps
//! rebuilt from it hold across the crash.

mod common;

use common::*;
use gavel::sim::buyer::{BuyerSpec, Fleet, Kind, Reply};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn bidder(name: &str, cents: i64) -> BuyerSpec {
    BuyerSpec::new(name).with_responder(move |kind, _| match kind {
        Kind::Ping => Reply::bid(cents, None).after_ms(1),
        Kind::Post => Reply::accepted(),
    })
}

fn export(dir: &Path) -> Vec<Value> {
    let out = gavel()
        .args(["journal", "export", "--dir"])
        .arg(dir)
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("export line is not JSON ({}): {}", e, l))
        })
        .collect()
}

#[test]
fn kill_9_mid_stream_loses_no_answered_lead_and_caps_hold_after_restart() {
    let fleet = Fleet::start(vec![bidder("capped", 9000), bidder("other", 2000)]).unwrap();
    let dir = temp_dir("crash");
    let journal = dir.join("journal");
    let text = config(&fleet, "", |i| {
        if i == 0 {
            // Takes Texas leads only, at most 10 a day.
            "[buyers.filters]\nstates = [\"TX\"]\n[buyers.caps]\ndaily = 10".to_string()
        } else {
            String::new()
        }
    })
    .replace("workers = 1", "workers = 2");
    let text = set_journal_dir(&text, &journal);
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();

    let (mut child, addr) = serve(&cfg);
    let answered: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));

    // Six Texas leads: all six to the capped buyer.
    let mut c = Client::connect(addr);
    for _ in 0..6 {
        let v = c.lead(LEAD).json();
        assert_eq!(v["sales"][0]["buyer"], "capped", "{}", v);
        answered
            .lock()
            .unwrap()
            .push(v["lead_id"].as_str().unwrap().to_string());
    }

    // A stream of California leads (the capped buyer never sees them) from four threads,
    // killed with SIGKILL while leads are in flight.
    let ca = LEAD
        .replace("\"state\": \"TX\"", "\"state\": \"CA\"")
        .replace("\"zip\": \"77002\"", "\"zip\": \"90001\"");
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..4 {
        let (answered, stop, ca) = (answered.clone(), stop.clone(), ca.clone());
        threads.push(std::thread::spawn(move || {
            let Ok(mut c) = std::panic::catch_unwind(|| Client::connect(addr)) else {
                return;
            };
            while !stop.load(Ordering::Relaxed) {
                let bytes = Client::request("POST", "/v1/leads", Some(KEY), ca.as_bytes());
                if std::io::Write::write_all(&mut c.stream, &bytes).is_err() {
                    return;
                }
                let r =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.read_response()));
                match r {
                    Ok(Some(resp)) if resp.status == 200 => {
                        if let Ok(v) = serde_json::from_slice::<Value>(&resp.body) {
                            if let Some(id) = v["lead_id"].as_str() {
                                answered.lock().unwrap().push(id.to_string());
                            }
                        }
                    }
                    _ => return,
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(400));
    child.kill().expect("kill -9"); // SIGKILL
    let _ = child.wait();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() > 20,
        "the stream should have been answered many times: {}",
        answered.len()
    );

    // The journal verifies (a torn tail cut at the last whole record counts as intact).
    let v = gavel()
        .args(["journal", "verify", "--dir"])
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(
        v.status.code(),
        Some(0),
        "verify: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // Every lead whose answer reached a client has its final record.
    let records = export(&journal);
    let finals: HashSet<String> = records
        .iter()
        .filter(|r| r["type"] == "lead_answered")
        .filter_map(|r| r["lead_id"].as_str().map(str::to_string))
        .collect();
    for id in &answered {
        assert!(
            finals.contains(id),
            "answered lead {} is not in the journal",
            id
        );
    }
    for r in &records {
        assert!(r["ts"].as_str().is_some_and(|t| t.contains('T')), "{}", r);
        assert!(r["lead_id"].is_string());
    }
    let sales_to_capped = records
        .iter()
        .filter(|r| r["type"] == "sale" && r["buyer"] == "capped")
        .count();
    assert_eq!(sales_to_capped, 6);

    // `journal show` tells one lead's story.
    let show = gavel()
        .args(["journal", "show", &answered[0], "--dir"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(show.status.success());
    let story = String::from_utf8_lossy(&show.stdout);
    assert!(story.contains("capped"), "{}", story);
    // The id in lower case, as a seller's log may have it, is the same lead.
    let lower = gavel()
        .args(["journal", "show", &answered[0].to_lowercase(), "--dir"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(lower.status.success(), "{lower:?}");
    assert_eq!(lower.stdout, show.stdout);

    // Restart on the same journal: the capped buyer had 6 of its 10; it gets at most 4 more.
    let (mut child, addr) = serve(&cfg);
    let mut c = Client::connect(addr);
    let mut to_capped = 0;
    for _ in 0..10 {
        let v = c.lead(LEAD).json();
        assert_eq!(v["status"], "sold", "{}", v);
        if v["sales"][0]["buyer"] == "capped" {
            to_capped += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        to_capped, 4,
        "the daily cap of 10 must hold across the crash"
    );
    // A crash leaves at most a torn tail: recovery keeps no copy and moves nothing aside.
    let aside: Vec<String> = std::fs::read_dir(&journal)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".cut"))
        .collect();
    assert!(aside.is_empty(), "{:?}", aside);
}

/// Point the config's `[journal] dir` at the test's own directory.
fn set_journal_dir(text: &str, dir: &Path) -> String {
    let mut out = String::new();
    let mut in_journal = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_journal = line.trim() == "[journal]";
        }
        if in_journal && line.starts_with("dir = ") {
            out.push_str(&format!("dir = \"{}\"\n", dir.display()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn a_leads_journal_tells_its_story_in_the_order_it_happened() {
    // Listed slowest first: each ping's answer is journaled when it comes, not in list order.
    let fleet = Fleet::start(vec![
        BuyerSpec::new("late").with_responder(|kind, _| match kind {
            Kind::Ping => Reply::bid(9000, None).after_ms(2000),
            Kind::Post => Reply::accepted(),
        }),
        BuyerSpec::new("slow").with_responder(|kind, _| match kind {
            Kind::Ping => Reply::bid(3000, None).after_ms(120),
            Kind::Post => Reply::accepted(),
        }),
        bidder("fast", 2000),
    ])
    .unwrap();
    let dir = temp_dir("story");
    let journal = dir.join("journal");
    let text = set_journal_dir(&config(&fleet, "", |_| String::new()), &journal);
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();
    let (mut child, addr) = serve(&cfg);
    let v = Client::connect(addr).lead(LEAD).json();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(v["sales"][0]["buyer"], "slow", "{}", v);
    let lead_id = v["lead_id"].as_str().unwrap();

    let story: Vec<String> = export(&journal)
        .into_iter()
        .filter(|r| r["lead_id"] == lead_id)
        .map(|r| {
            let buyer = r["buyer"].as_str().unwrap_or("");
            let outcome = r["outcome"].as_str().unwrap_or("");
            format!(
                "{} {} {}",
                r["type"].as_str().unwrap_or("?"),
                buyer,
                outcome
            )
            .trim()
            .to_string()
        })
        .collect();
    let expected = [
        "lead_received",
        "ping_sent late",
        "ping_sent slow",
        "ping_sent fast",
        "ping_result fast bid",
        "ping_result slow bid",
        "ping_result late timeout",
        "auction_closed",
        "post_sent slow",
        "post_result slow",
        "sale slow",
        "lead_answered",
    ];
    assert_eq!(story, expected, "{:#?}", story);
}

/// A running `gavel serve`, killed when dropped (also when an assertion fails first).
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The frames of a segment file as (offset, record type code), read the way the format says.
fn frames(segment: &[u8]) -> Vec<(usize, u8)> {
    let word = |o: usize| u32::from_le_bytes(segment[o..o + 4].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut off = 64;
    while off + 24 <= segment.len() {
        let len = word(off);
        if len == 0 || len == u32::MAX as usize {
            break;
        }
        out.push((off, segment[off + 8]));
        off += len;
    }
    out
}

/// One byte goes bad in the middle of the journal while the exchange is down.
/// Recovery cuts there as before, but keeps the segment's bytes first and says so; and the sales
/// after the bad byte still count toward the buyer's cap, at this start and the next.
#[test]
fn a_corrupt_byte_mid_journal_is_copied_aside_and_the_sales_after_it_still_hold_caps() {
    const LEAD_ANSWERED: u8 = 9;
    const SALE: u8 = 8;
    let fleet = Fleet::start(vec![bidder("capped", 9000), bidder("other", 2000)]).unwrap();
    let dir = temp_dir("midcut");
    let journal = dir.join("journal");
    let text = config(&fleet, "", |i| {
        if i == 0 {
            "[buyers.caps]\ndaily = 8".to_string()
        } else {
            String::new()
        }
    })
    .replace("[journal]\n", "[journal]\nsegment_bytes = 1048576\n");
    let text = set_journal_dir(&text, &journal);
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();

    // Eight leads, all sold to the capped buyer: its daily cap is reached.
    let (child, addr) = serve(&cfg);
    let running = Serving(child);
    let mut c = Client::connect(addr);
    for _ in 0..8 {
        let v = c.lead(LEAD).json();
        assert_eq!(v["sales"][0]["buyer"], "capped", "{}", v);
    }
    drop(running);

    // One byte of the first lead's final record goes bad: seven leads' records follow it.
    let seg = journal.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let all = frames(&bytes);
    let (bad, _) = *all.iter().find(|f| f.1 == LEAD_ANSWERED).unwrap();
    let after: Vec<&(usize, u8)> = all.iter().filter(|f| f.0 > bad).collect();
    assert_eq!(after.iter().filter(|f| f.1 == SALE).count(), 7);
    bytes[bad + 30] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();

    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let log = log.join("\n");
    // stderr says what was cut, how many whole records followed, and where the copy is.
    let copy = std::fs::read_dir(&journal)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".seg.cut-"))
        .unwrap_or_else(|| panic!("no copy kept: {}", log));
    for want in [
        format!("cut at segment 0 offset {} (checksum mismatch)", bad),
        format!("{} whole record(s) after it", after.len()),
        format!("segment 0 zeroed from offset {} to its end", bad),
        format!("copied to {}", copy.display()),
        "warning: journal damage".to_string(),
        "8 sale(s) of the last 32 days replayed".to_string(),
        format!(
            "{} record(s) that recovery cut out of the journal",
            after.len()
        ),
        "(7 sale(s))".to_string(),
    ] {
        assert!(log.contains(&want), "{:?} not in:\n{}", want, log);
    }
    // The copy holds the segment exactly as it was found; the live one keeps what preceded
    // the bad record.
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    assert_eq!(std::fs::read(&seg).unwrap()[..bad], bytes[..bad]);
    // The cap of 8 holds: the seven sales after the bad byte were counted from the copy.
    let mut c = Client::connect(addr);
    for _ in 0..3 {
        let v = c.lead(LEAD).json();
        assert_eq!(v["sales"][0]["buyer"], "other", "{}", v);
    }
    drop(running);

    // The journal is whole again and does not include the copy's records; the copy stays.
    let v = gavel()
        .args(["journal", "verify", "--dir"])
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(0));
    let sales_to_capped = export(&journal)
        .iter()
        .filter(|r| r["type"] == "sale" && r["buyer"] == "capped")
        .count();
    assert_eq!(sales_to_capped, 1);

    // And at the next start the copy still counts: no new cut, the cap still holds.
    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let log = log.join("\n");
    assert!(!log.contains("cut at"), "{}", log);
    assert!(log.contains("(7 sale(s))"), "{}", log);
    let v = Client::connect(addr).lead(LEAD).json();
    drop(running);
    assert_eq!(v["sales"][0]["buyer"], "other", "{}", v);
    assert_eq!(std::fs::read(&copy).unwrap(), bytes);
}

/// A zeroed stretch of the journal takes a sold lead's post, sale and answer with it: the
/// start that cuts the damage cannot tell that lead from one a stop cut off before any post,
/// so it does not say it is safe to send again. It is reported `history_lost`, answered
/// `interrupted` with that code to a lookup, and still refused as a duplicate.
#[test]
fn a_lead_whose_records_were_lost_to_damage_is_never_called_safe_to_send_again() {
    const LEAD_RECEIVED: u8 = 1;
    let fleet = Fleet::start(vec![bidder("acme", 4200)]).unwrap();
    let dir = temp_dir("lostcut");
    let journal = dir.join("journal");
    let text = config(&fleet, "dedupe_days = 30", |_| String::new());
    let text = set_journal_dir(&text, &journal);
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();
    let (child, addr) = serve(&cfg);
    let running = Serving(child);
    let mut c = Client::connect(addr);
    let first = c.lead(LEAD).json();
    assert_eq!(first["status"], "sold", "{first}");
    let other = LEAD
        .replace("7135550147", "7135550111")
        .replace("ana@", "bea@");
    let second = c.lead(&other).json();
    assert_eq!(second["status"], "sold", "{second}");
    drop(running);

    // Everything the first lead wrote after its arrival is zeroed, and the second lead's
    // arrival with it.
    let seg = journal.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let all = frames(&bytes);
    let received: Vec<usize> = all
        .iter()
        .filter(|f| f.1 == LEAD_RECEIVED)
        .map(|f| f.0)
        .collect();
    assert_eq!(received.len(), 2);
    let from = all.iter().find(|f| f.0 > received[0]).unwrap().0;
    let to = all.iter().find(|f| f.0 > received[1]).unwrap().0;
    bytes[from..to].fill(0);
    std::fs::write(&seg, &bytes).unwrap();

    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let log = log.join("\n");
    let id = first["lead_id"].as_str().unwrap();
    assert!(log.contains("history_lost") && log.contains(id), "{log}");
    assert!(!log.contains("may send them again"), "{log}");
    let mut c = Client::connect(addr);
    c.send_raw(&Client::request(
        "GET",
        &format!("/v1/leads/{id}"),
        Some(KEY),
        b"",
    ));
    let v = c.read_response().expect("an answer").json();
    assert_eq!(v["status"], "interrupted", "{v}");
    assert_eq!(v["error"]["code"], "history_lost", "{v}");
    // The second lead's sale and answer are read from the copy recovery kept: sold, its
    // seller's though its arrival was lost.
    c.send_raw(&Client::request(
        "GET",
        &format!("/v1/leads/{}", second["lead_id"].as_str().unwrap()),
        Some(KEY),
        b"",
    ));
    let v = c.read_response().expect("an answer").json();
    assert_eq!(v["status"], "sold", "{v}");
    // Sent again, the first lead is a duplicate still: a buyer may have it.
    let r = c.lead(LEAD);
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["error"]["code"], "duplicate");
    drop(running);
    // Reported once: the next start says nothing of it.
    let (child, _, log) = serve_logged(&cfg);
    let running = Serving(child);
    assert!(!log.join("\n").contains("history_lost"), "{log:?}");
    drop(running);
    let recovered: Vec<serde_json::Value> = export(&journal)
        .into_iter()
        .filter(|r| r["type"] == "recovered")
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0]["unsettled"], "history_lost");
}

/// A config of `fleet` with `campaign` lines, its journal in a directory of its own: (the
/// config file, the journal directory).
fn config_in(fleet: &Fleet, what: &str, campaign: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(what);
    let journal = dir.join("journal");
    let cfg = dir.join("gavel.toml");
    let text = config(fleet, campaign, |_| String::new());
    std::fs::write(&cfg, set_journal_dir(&text, &journal)).unwrap();
    (cfg, journal)
}

/// Serve `cfg`, sell `LEAD` once and stop: its lead id.
fn sell_one_lead(cfg: &Path) -> String {
    let (child, addr) = serve(cfg);
    let running = Serving(child);
    let first = Client::connect(addr).lead(LEAD).json();
    drop(running);
    assert_eq!(first["status"], "sold", "{first}");
    first["lead_id"].as_str().unwrap().to_string()
}

/// Flip one byte inside the record that follows the first record of type `kind` in the
/// journal's first segment: every record after it is whole, so a start cuts it out into a copy.
fn damage_the_record_after(journal: &Path, kind: u8) {
    damage_a_record(journal, kind, true);
}

/// Flip one byte inside the first record of type `kind` in the journal's first segment, or
/// (`after`) inside the record that follows it.
fn damage_a_record(journal: &Path, kind: u8, after: bool) {
    let seg = journal.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let all = frames(&bytes);
    let first = all.iter().find(|f| f.1 == kind).unwrap().0;
    let bad = if after {
        all.iter().find(|f| f.0 > first).unwrap().0
    } else {
        first
    };
    bytes[bad + 30] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
}

/// The operator settles the copy recovery kept and renames it out of recovery's names.
fn settle_the_copy(journal: &Path) {
    let copy = std::fs::read_dir(journal)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(".seg.cut-"))
        .expect("the copy");
    std::fs::rename(&copy, copy.with_extension("bak")).unwrap();
}

/// A seller's `GET /v1/leads/{id}`.
fn look_up(addr: std::net::SocketAddr, id: &str) -> Value {
    let mut c = Client::connect(addr);
    c.send_raw(&Client::request(
        "GET",
        &format!("/v1/leads/{id}"),
        Some(KEY),
        b"",
    ));
    c.read_response().expect("an answer").json()
}

/// The kinds of the journal's `recovered` records, in order.
fn recovered_kinds(journal: &Path) -> Vec<Value> {
    export(journal)
        .into_iter()
        .filter(|r| r["type"] == "recovered")
        .map(|r| r["unsettled"].clone())
        .collect()
}

/// Damage right after a sold lead's arrival cuts its post, sale and answer out of the journal
/// into the copy recovery keeps. While the copy is there its lookup still says sold; the start
/// that cut records it `history_lost` all the same, so once the operator has settled the copy
/// and renamed it, the lead is not taken for one a stop cut off before any post: it is never
/// called safe to send again, and stays a duplicate.
#[test]
fn a_lead_whose_answer_only_the_copy_holds_stays_history_lost_once_the_copy_is_settled() {
    const LEAD_RECEIVED: u8 = 1;
    let fleet = Fleet::start(vec![bidder("acme", 4200)]).unwrap();
    let (cfg, journal) = config_in(&fleet, "asidecut", "dedupe_days = 30");
    let id = sell_one_lead(&cfg);

    // One byte of the record after the lead's arrival goes bad: its post, sale and answer
    // are whole records after the damage.
    damage_the_record_after(&journal, LEAD_RECEIVED);
    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let log = log.join("\n");
    assert!(log.contains("cut at segment 0"), "{log}");
    assert!(log.contains("history_lost") && log.contains(&id), "{log}");
    let v = look_up(addr, &id);
    assert_eq!(v["status"], "sold", "the copy still tells it: {v}");
    drop(running);

    settle_the_copy(&journal);
    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let log = log.join("\n");
    assert!(!log.contains("may send them again"), "{log}");
    let v = look_up(addr, &id);
    assert_eq!(v["status"], "interrupted", "{v}");
    assert_eq!(v["error"]["code"], "history_lost", "{v}");
    let r = Client::connect(addr).lead(LEAD);
    drop(running);
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "duplicate");
    assert_eq!(
        recovered_kinds(&journal),
        vec![serde_json::json!("history_lost")]
    );
}

/// Damage in a sold lead's arrival record, the only one that names its consumer: its post and
/// sale go on in the copy recovery keeps, but the dedupe index cannot know the consumer. Every
/// start while the copy is there tells the operator so, naming the lead.
#[test]
fn a_sold_lead_whose_arrival_was_lost_to_damage_is_named_to_the_operator() {
    const LEAD_RECEIVED: u8 = 1;
    let fleet = Fleet::start(vec![bidder("acme", 4200)]).unwrap();
    let (cfg, journal) = config_in(&fleet, "arrivallost", "dedupe_days = 30");
    let id = sell_one_lead(&cfg);
    damage_a_record(&journal, LEAD_RECEIVED, false);
    for start in ["the start that cuts", "the next"] {
        let (child, addr, log) = serve_logged(&cfg);
        let running = Serving(child);
        let v = look_up(addr, &id);
        drop(running);
        let log = log.join("\n");
        if start == "the start that cuts" {
            assert!(log.contains("cut at segment 0"), "{log}");
        }
        let told = log
            .lines()
            .find(|l| l.contains("lost their arrival record"))
            .unwrap_or_else(|| panic!("{start}: not told: {log}"));
        assert!(told.contains("1 lead(s)") && told.contains(&id), "{told}");
        assert_eq!(v["status"], "sold", "{start}: the copy still tells it: {v}");
    }
}

/// A test lead whose arrival record was lost to damage: its sale says it was a test lead's,
/// so it takes no cap or budget, its lookup still says `test`, and it is not named as a
/// consumer the dedupe index lost (test leads are never deduplicated).
#[test]
fn a_test_sale_whose_arrival_was_lost_stays_a_test_sale() {
    const LEAD_RECEIVED: u8 = 1;
    let fleet = Fleet::start(vec![bidder("acme", 4200)]).unwrap();
    let (cfg, journal) = config_in(&fleet, "testarrivallost", "dedupe_days = 30");
    let id = {
        let (child, addr) = serve(&cfg);
        let running = Serving(child);
        let test_lead = LEAD.replacen('{', r#"{"test": true, "#, 1);
        let v = Client::connect(addr).lead(&test_lead).json();
        drop(running);
        assert_eq!(
            (v["status"].as_str(), v["test"].as_bool()),
            (Some("sold"), Some(true)),
            "{v}"
        );
        v["lead_id"].as_str().unwrap_or("").to_string()
    };
    damage_a_record(&journal, LEAD_RECEIVED, false);
    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let v = look_up(addr, &id);
    drop(running);
    let log = log.join("\n");
    assert!(log.contains("cut at segment 0"), "{log}");
    assert!(!log.contains("lost their arrival record"), "{log}");
    let aside = log
        .lines()
        .find(|l| l.contains("read back from 1 file(s) set aside"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        aside.contains("(0 sale(s))"),
        "a test sale took a cap: {aside}"
    );
    assert_eq!(
        (v["status"].as_str(), v["test"].as_bool()),
        (Some("sold"), Some(true)),
        "{v}"
    );
}

/// Damage that zeroed a sold lead's post result and sale, its post and answer surviving on
/// either side: the buyer may have the consumer, so the post counts against its cap after
/// the start, and the next lead goes to another buyer.
#[test]
fn a_post_whose_result_and_sale_were_zeroed_still_counts_against_the_cap() {
    const POST_RESULT: u8 = 7;
    const SALE: u8 = 8;
    let fleet = Fleet::start(vec![bidder("capped", 9000), bidder("other", 2000)]).unwrap();
    let (cfg, journal) = first_buyer_capped(&fleet, "daily = 2", "zeroedsale");
    {
        let (child, addr) = serve(&cfg);
        let running = Serving(child);
        let mut c = Client::connect(addr);
        for n in 0..2 {
            let lead = LEAD.replace("7135550147", &format!("713555010{n}"));
            let v = c.lead(&lead).json();
            assert_eq!(v["sales"][0]["buyer"], "capped", "{v}");
        }
        drop(running);
    }
    // Zero the first lead's post result and sale, and nothing else.
    let seg = journal.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let all = frames(&bytes);
    let from = all.iter().find(|f| f.1 == POST_RESULT).unwrap().0;
    let sale = all.iter().position(|f| f.1 == SALE).unwrap();
    let to = all[sale + 1].0;
    assert!(all[sale + 1].1 != POST_RESULT && from < to);
    bytes[from..to].fill(0);
    std::fs::write(&seg, &bytes).unwrap();

    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let v = Client::connect(addr)
        .lead(&LEAD.replace("7135550147", "7135550109"))
        .json();
    drop(running);
    let log = log.join("\n");
    assert!(log.contains("cut at segment 0"), "{log}");
    assert_eq!(
        v["sales"][0]["buyer"], "other",
        "capped past its cap: {v}\n{log}"
    );
}

/// A start that cut damage and died before it recorded what it found (a `kill -9` between
/// the copy and the report) leaves the copy and a zeroed tail: the next start finds the lead
/// whose story the copy goes on with, and records it `history_lost` then.
#[test]
fn a_lead_the_cutting_start_died_before_reporting_is_reported_by_the_next() {
    const POST_SENT: u8 = 6;
    let fleet = Fleet::start(vec![bidder("acme", 4200)]).unwrap();
    let (cfg, journal) = config_in(&fleet, "asidekilled", "dedupe_days = 30");
    let id = sell_one_lead(&cfg);

    // What the cutting start leaves on disk before its report: the segment as found, copied
    // aside, and the live one zeroed from the damaged record (its `post_sent`) on.
    let seg = journal.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let bad = frames(&bytes).iter().find(|f| f.1 == POST_SENT).unwrap().0;
    bytes[bad + 30] ^= 0x04;
    std::fs::write(
        journal.join("00000000000000000000.seg.cut-1796400000"),
        &bytes,
    )
    .unwrap();
    bytes[bad..].fill(0);
    std::fs::write(&seg, &bytes).unwrap();

    let (child, _, log) = serve_logged(&cfg);
    drop(Serving(child));
    let log = log.join("\n");
    assert!(!log.contains("cut at"), "{log}");
    assert!(log.contains("history_lost") && log.contains(&id), "{log}");
    settle_the_copy(&journal);
    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    assert!(!log.join("\n").contains("may send them again"), "{log:?}");
    let v = look_up(addr, &id);
    let r = Client::connect(addr).lead(LEAD);
    drop(running);
    assert_eq!(v["error"]["code"], "history_lost", "{v}");
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        fleet.posts(0),
        1,
        "the buyer that paid is not sold the lead again"
    );
    assert_eq!(
        recovered_kinds(&journal),
        vec![serde_json::json!("history_lost")]
    );
}

/// The same for a seller's `/v1/ping` and its `/v1/post`: damage right after the ping's answer
/// cuts the whole post out into the copy. The ping is recorded `history_lost`, so once the copy
/// is renamed its held bids are not postable again (409, not a second sale to the buyer that
/// already paid), and its lookup says `history_lost`, not the offer.
#[test]
fn a_ping_whose_post_only_the_copy_holds_cannot_be_posted_again_once_the_copy_is_settled() {
    const PING_ANSWERED: u8 = 10;
    let fleet = Fleet::start(vec![bidder("acme", 4200)]).unwrap();
    let (cfg, journal) = config_in(&fleet, "asidepost", "hold_ms = 600000");
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let full: serde_json::Value = serde_json::from_str(LEAD).unwrap();
    let (child, addr) = serve(&cfg);
    let running = Serving(child);
    let mut c = Client::connect(addr);
    let offer = c.post("/v1/ping", Some(KEY), ping.as_bytes()).json();
    assert_eq!(offer["status"], "bid", "{offer}");
    let id = offer["ping_id"].as_str().unwrap().to_string();
    let post = serde_json::json!({"ping_id": id, "lead": full["lead"], "consent": full["consent"]})
        .to_string();
    let sold = c.post("/v1/post", Some(KEY), post.as_bytes()).json();
    assert_eq!(sold["status"], "sold", "{sold}");
    drop(running);
    assert_eq!(fleet.posts(0), 1);

    // One byte of the record after the ping's answer (the post's arrival) goes bad.
    damage_the_record_after(&journal, PING_ANSWERED);

    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let log = log.join("\n");
    assert!(log.contains("history_lost") && log.contains(&id), "{log}");
    let again = Client::connect(addr).post("/v1/post", Some(KEY), post.as_bytes());
    assert_eq!(
        again.status,
        409,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    drop(running);

    settle_the_copy(&journal);
    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let log = log.join("\n");
    assert!(!log.contains("may send them again"), "{log}");
    let again = Client::connect(addr).post("/v1/post", Some(KEY), post.as_bytes());
    let v = look_up(addr, &id);
    drop(running);
    assert_eq!(
        again.status,
        409,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(
        fleet.posts(0),
        1,
        "the buyer that paid is not sold the lead again"
    );
    assert_eq!(v["error"]["code"], "history_lost", "{v}");
    assert_eq!(
        recovered_kinds(&journal),
        vec![serde_json::json!("history_lost")]
    );
}

/// A shared lead whose first sale the journal keeps and whose second sale and answer only the
/// copy holds is reported once, `history_lost`, by the start that cut: not again as "sold,
/// seller never answered" once the copy is renamed, and its lookup does not tell the one sale
/// left as if it were all.
#[test]
fn a_shared_lead_cut_between_its_sales_is_reported_once_and_not_understated() {
    const SALE: u8 = 8;
    let fleet = Fleet::start(vec![
        bidder("first", 5000),
        BuyerSpec::new("second").with_responder(|kind, _| match kind {
            Kind::Ping => Reply::bid(4000, None),
            Kind::Post => Reply::accepted().after_ms(200),
        }),
    ])
    .unwrap();
    let (cfg, journal) = config_in(&fleet, "asideshared", "sale = \"shared\"\nmax_sales = 2");
    let (child, addr) = serve(&cfg);
    let running = Serving(child);
    let v = Client::connect(addr).lead(LEAD).json();
    drop(running);
    assert_eq!(v["sales"].as_array().map(Vec::len), Some(2), "{v}");
    let id = v["lead_id"].as_str().unwrap().to_string();

    damage_the_record_after(&journal, SALE);
    let (child, _, log) = serve_logged(&cfg);
    drop(Serving(child));
    assert!(log.join("\n").contains("history_lost"), "{log:?}");
    settle_the_copy(&journal);
    let (child, addr, log) = serve_logged(&cfg);
    let running = Serving(child);
    let log = log.join("\n");
    assert!(!log.contains("never answered"), "{log}");
    let v = look_up(addr, &id);
    drop(running);
    assert_eq!(v["error"]["code"], "history_lost", "{v}");
    assert_eq!(
        recovered_kinds(&journal),
        vec![serde_json::json!("history_lost")]
    );
}

/// Serve a config whose buyer `slow` (cap 2 a day) is still deciding on a post when the
/// exchange is killed with `kill -9`. Returns the fleet, the config file and the journal.
fn killed_with_a_post_unanswered(what: &str) -> (Fleet, std::path::PathBuf, std::path::PathBuf) {
    killed_with_a_post_unanswered_of(what, LEAD)
}

/// [`killed_with_a_post_unanswered`] for the lead `lead`.
fn killed_with_a_post_unanswered_of(
    what: &str,
    lead: &str,
) -> (Fleet, std::path::PathBuf, std::path::PathBuf) {
    let first_post = Arc::new(AtomicBool::new(true));
    let slow = {
        let first_post = first_post.clone();
        BuyerSpec::new("slow").with_responder(move |kind, _| match kind {
            Kind::Ping => Reply::bid(9000, None),
            // The first post is still being decided on when the exchange is killed.
            Kind::Post if first_post.swap(false, Ordering::SeqCst) => {
                Reply::accepted().after_ms(5000)
            }
            Kind::Post => Reply::accepted(),
        })
    };
    let fleet = Fleet::start(vec![slow, bidder("other", 2000)]).unwrap();
    let dir = temp_dir(what);
    let journal = dir.join("journal");
    let text = config(&fleet, "", |i| {
        if i == 0 {
            "[buyers.caps]\ndaily = 2".to_string()
        } else {
            String::new()
        }
    })
    .replace("post_timeout_ms = 500", "post_timeout_ms = 10000");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, set_journal_dir(&text, &journal)).unwrap();

    let until = || fleet.posts(0) > 0;
    send_and_kill_when(&cfg, "/v1/leads", lead, until, "the post reached the buyer");
    (fleet, cfg, journal)
}

/// Serve `cfg`, send one lead, and `kill -9` the exchange once `until` holds (within 10 s).
fn send_one_lead_and_kill_when(cfg: &Path, until: impl Fn() -> bool, what: &str) {
    send_and_kill_when(cfg, "/v1/leads", LEAD, until, what)
}

/// Serve `cfg`, send `body` to `path`, and `kill -9` the exchange once `until` holds (within
/// 10 s).
fn send_and_kill_when(cfg: &Path, path: &str, body: &str, until: impl Fn() -> bool, what: &str) {
    let (mut child, addr) = serve(cfg);
    let mut c = Client::connect(addr);
    c.send_raw(&Client::request("POST", path, Some(KEY), body.as_bytes()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !until() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("never true within 10 s: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
}

/// `GET /v1/leads/{lead_id}` as the seller: the answer's JSON.
fn looked_up(addr: std::net::SocketAddr, lead_id: &str) -> Value {
    let mut c = Client::connect(addr);
    c.send_raw(&Client::request(
        "GET",
        &format!("/v1/leads/{lead_id}"),
        Some(KEY),
        b"",
    ));
    c.read_response().expect("an answer").json()
}

/// Two fresh leads on `c`: the buyers they sold to.
fn two_leads(c: &mut Client) -> Vec<String> {
    (0..2)
        .map(|i| {
            let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
            let v = c.lead(&lead).json();
            v["sales"][0]["buyer"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

/// `kill -9` while a buyer is deciding on a post: the journal has the post but not its answer.
/// The buyer may well have taken the consumer, so after the restart that post counts against
/// its cap, and the operator is told which lead to settle.
#[test]
fn a_post_unanswered_at_a_crash_counts_against_the_buyers_cap() {
    let (_fleet, cfg, journal) = killed_with_a_post_unanswered("crash-post");
    let (mut child, addr, log) = serve_logged(&cfg);
    let warning = log
        .iter()
        .find(|l| l.contains("were waiting on a buyer's answer"))
        .unwrap_or_else(|| panic!("no warning about the unanswered post: {log:?}"));
    assert!(warning.contains("1 post(s)"), "{warning}");
    let lead_id = export(&journal)
        .into_iter()
        .find(|r| r["type"] == "post_sent")
        .and_then(|r| r["lead_id"].as_str().map(str::to_string))
        .expect("the post is in the journal");
    assert!(warning.contains(&lead_id), "{warning}");
    // The seller asking after the lead is told it was interrupted, for good: not pending.
    let v = looked_up(addr, &lead_id);
    assert_eq!(v["status"], "interrupted", "{v}");
    assert_eq!(v["error"]["code"], "post_unanswered", "{v}");

    // The cap is 2 a day and the unanswered post counts: one more sale to it, then the other.
    let buyers = two_leads(&mut Client::connect(addr));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(buyers, vec!["slow", "other"]);

    // The journal says the lead was found unsettled, so the next start does not warn again,
    // and the post still counts against the cap.
    let recovered: Vec<_> = export(&journal)
        .into_iter()
        .filter(|r| r["type"] == "recovered")
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0]["lead_id"], lead_id.as_str());
    assert_eq!(recovered[0]["unsettled"], "post_unanswered");
    let show = gavel()
        .args(["journal", "show", "--dir"])
        .arg(&journal)
        .arg(&lead_id)
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("settle it with the buyer"), "{show}");
    let (mut child, addr, log) = serve_logged(&cfg);
    assert!(
        !log.iter()
            .any(|l| l.contains("waiting on a buyer's answer")),
        "{log:?}"
    );
    let lead = LEAD.replace("ana@example.com", "ana9@example.com");
    let v = Client::connect(addr).lead(&lead).json();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(v["sales"][0]["buyer"], "other", "{v}");
}

/// The same after a reload that rebuilds the buyer's counters from the journal (its time zone
/// changed): the post the crash cut off still counts.
#[test]
fn a_post_unanswered_at_a_crash_still_counts_after_a_reload_rebuilds_the_caps() {
    let (_fleet, cfg, _journal) = killed_with_a_post_unanswered("crash-post-reload");
    let mut snap = gavel::config::load(&cfg).unwrap();
    snap.path = Some(cfg.clone());
    let handle = gavel::net::start(Arc::new(snap)).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "[buyers.caps]\ndaily = 2",
        "timezone = \"Europe/London\"\n[buyers.caps]\ndaily = 2",
    );
    std::fs::write(&cfg, text).unwrap();
    gavel::net::reload(handle.shared()).unwrap();
    assert_eq!(
        handle.shared().runtime().snap.buyers[0]
            .timezone
            .to_string(),
        "Europe/London"
    );
    let buyers = two_leads(&mut Client::connect(handle.local_addr()));
    assert_eq!(buyers, vec!["slow", "other"]);
}

/// `kill -9` while a shared lead's second post is out, after its first buyer bought it: the
/// sale is in the journal, the seller's answer is not. After the restart the campaign's P&L
/// counts the sale as the buyer's does, so revenue is what the buyers spent.
#[test]
fn a_sale_whose_answer_a_crash_cut_off_counts_in_the_campaigns_pnl() {
    let quick = BuyerSpec::new("quick").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(5000, None),
        Kind::Post => Reply::accepted(),
    });
    let slow = BuyerSpec::new("slow").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(3000, None),
        Kind::Post => Reply::accepted().after_ms(5000),
    });
    let fleet = Fleet::start(vec![quick, slow]).unwrap();
    let dir = temp_dir("crash-shared");
    let journal = dir.join("journal");
    let text = config(&fleet, "sale = \"shared\"\nmax_sales = 2", |_| {
        String::new()
    })
    .replace("post_timeout_ms = 500", "post_timeout_ms = 10000");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, set_journal_dir(&text, &journal)).unwrap();
    send_one_lead_and_kill_when(
        &cfg,
        || export(&journal).iter().any(|r| r["type"] == "sale"),
        "the first sale was journaled",
    );

    let ex = Exchange::start_file(&cfg);
    let st = ex.handle.as_ref().unwrap().stats();
    let spent: i64 = st.buyers().map(|(_, b)| b.spent_cents).sum();
    let campaign = st.campaigns.get("auto").cloned().unwrap_or_default();
    assert_eq!(spent, 5000);
    assert_eq!(campaign.revenue_cents, spent, "{campaign:?}");
    assert_eq!(
        campaign.payout_cents, 4000,
        "80 % of the sale: {campaign:?}"
    );
    assert_eq!((campaign.leads, campaign.sold), (1, 1), "{campaign:?}");
    drop(ex);

    // Reported once; later starts still count it in the P&L without reporting it again.
    let (mut child, _addr, log) = serve_logged(&cfg);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !log.iter()
            .any(|l| l.contains("sellers were never answered")),
        "{log:?}"
    );
    let recovered: Vec<_> = export(&journal)
        .into_iter()
        .filter(|r| r["type"] == "recovered")
        .map(|r| r["unsettled"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        recovered.contains(&"seller_unanswered".to_string()),
        "{recovered:?}"
    );
    let ex = Exchange::start_file(&cfg);
    // The seller asking after it hears it sold, to the buyer that bought it, and was cut off.
    let lead_id = export(&journal)
        .into_iter()
        .find(|r| r["type"] == "sale")
        .and_then(|r| r["lead_id"].as_str().map(str::to_string))
        .expect("the sale is in the journal");
    let v = looked_up(ex.addr, &lead_id);
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(
        (v["price"].clone(), v["payout"].clone()),
        (50.0.into(), 40.0.into()),
        "{v}"
    );
    assert_eq!(
        v["sales"],
        serde_json::json!([{"buyer": "quick", "price": 50.0}]),
        "{v}"
    );
    assert_eq!(v["reason"], "interrupted", "{v}");
    let st = ex.handle.as_ref().unwrap().stats();
    let campaign = st.campaigns.get("auto").cloned().unwrap_or_default();
    assert_eq!(
        (campaign.leads, campaign.sold, campaign.revenue_cents),
        (1, 1, 5000),
        "{campaign:?}"
    );
}

/// Every per-buyer counter the operator reads is rebuilt from the journal on start as it was
/// live: pings and their outcomes, bids and their average, posts, rejections, wins, spend.
#[test]
fn a_restart_rebuilds_every_buyer_counter() {
    let picky = BuyerSpec::new("picky").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(6000, Some("p")),
        Kind::Post => Reply::rejected("duplicate"),
    });
    let shy = BuyerSpec::new("shy").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::no_bid(),
        Kind::Post => Reply::accepted(),
    });
    let fleet = Fleet::start(vec![picky, bidder("steady", 2500), shy]).unwrap();
    let toml = config(&fleet, "", |_| String::new());
    let counters = |ex: &Exchange| {
        let st = ex.handle.as_ref().unwrap().stats();
        let mut v: Vec<_> = st
            .buyers()
            .map(|(id, b)| {
                (
                    id.to_string(),
                    [
                        b.pings, b.bids, b.no_bids, b.timeouts, b.errors, b.invalid, b.posts,
                    ]
                    .into_iter()
                    .chain([
                        b.wins,
                        b.post_rejects,
                        b.bid_sum_cents as u64,
                        b.spent_cents as u64,
                    ])
                    .collect::<Vec<u64>>(),
                    b.response_us.len(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let live = {
        let ex = Exchange::start(&toml);
        let mut c = ex.client();
        for i in 0..3 {
            let lead = LEAD.replace("ana@example.com", &format!("ana{i}@example.com"));
            assert_eq!(c.lead(&lead).json()["status"], "sold");
        }
        // The counters are taken before the seller has its answer.
        counters(&ex)
    };
    let picky_live = live.iter().find(|b| b.0 == "picky").unwrap();
    assert_eq!(picky_live.1[..9], [3, 3, 0, 0, 0, 0, 3, 0, 3], "{live:?}");
    let after = counters(&Exchange::start(&toml));
    assert_eq!(after, live);
}

/// A small ext4 file system on a loop device, unmounted on drop. `None` where the test cannot
/// make one (not root, no `mkfs.ext4`, no loop device).
struct LoopFs {
    dir: std::path::PathBuf,
    mnt: std::path::PathBuf,
}

impl LoopFs {
    fn mount(bytes: u64) -> Option<LoopFs> {
        // SAFETY: a plain system call.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let dir = temp_dir("loopfs");
        let img = dir.join("fs.img");
        std::fs::File::create(&img).ok()?.set_len(bytes).ok()?;
        let ok = |c: &mut std::process::Command| {
            c.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img))
        {
            return None;
        }
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).ok()?;
        if !ok(std::process::Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt))
        {
            return None;
        }
        Some(LoopFs { dir, mnt })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start `gavel serve` and read the seller and operator addresses it announces.
fn serve_with_admin(cfg: &Path) -> (Child, std::net::SocketAddr, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = gavel()
        .args(["serve", "--config"])
        .arg(cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut sellers, mut admin) = (None, None);
    let mut line = String::new();
    while admin.is_none() && stderr.read_line(&mut line).unwrap_or(0) > 0 {
        let addr = |marker: &str| {
            line.split(marker)
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|a| a.parse().ok())
        };
        sellers = sellers.or(addr("serving sellers on "));
        admin = admin.or(addr("operator API on "));
        line.clear();
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    match (sellers, admin) {
        (Some(s), Some(a)) => (child, s, a),
        _ => {
            let _ = child.kill();
            panic!("gavel serve did not announce both addresses");
        }
    }
}

/// When the journal's file system fills up, leads are refused 503 `journal_unavailable`, every
/// lead sold has its `sale` in the journal (the next segment is made ahead, so the leads
/// already running keep their room), `/v1/stats` says the journal takes no leads, and the
/// exchange lives on; restarted on the full disk it refuses leads or stops with an error, and
/// is never killed by a signal (a store to a segment page the disk has no block for is a
/// SIGBUS: segments get their blocks when they are made). Needs root for the loop mount; says
/// so and passes where it cannot make one.
#[test]
fn a_full_journal_disk_refuses_leads_and_never_kills_the_exchange() {
    let Some(fs) = LoopFs::mount(8 << 20) else {
        eprintln!("not run: needs root, mkfs.ext4 and a loop device");
        return;
    };
    let fleet = Fleet::start(vec![bidder("a", 2000)]).unwrap();
    let dir = temp_dir("full-disk");
    let text = set_journal_dir(
        &config(&fleet, "", |_| String::new()),
        &fs.mnt.join("journal"),
    )
    .replace("sync = \"os\"", "sync = \"os\"\nsegment_bytes = 1048576")
    .replace(
        "max_in_flight = 1000",
        "max_in_flight = 1000\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"t0ken-full-disk\"",
    );
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();
    // 40 KB of notes a lead: the 8 MiB disk fills within a few hundred leads.
    let notes = "n".repeat(40_000);
    let lead = move |i: usize| {
        LEAD.replace("7135550147", &format!("71355{:05}", i))
            .replace("ana@example.com", &format!("ana{i}@example.com"))
            .replace(
                "\"insured\": true",
                &format!("\"insured\": true, \"notes\": \"{notes}\""),
            )
    };
    let (mut child, addr, admin) = serve_with_admin(&cfg);
    // Six sellers at once, so leads are in their auctions when the disk fills.
    let lead = Arc::new(lead);
    let sellers: Vec<_> = (0..6)
        .map(|t| {
            let lead = lead.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut sold = Vec::new();
                for i in 0..400 {
                    let r = c.lead(&lead(t * 1000 + i));
                    if r.status == 503 {
                        return (sold, Some(r.json()));
                    }
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                    let v = r.json();
                    if v["status"] == "sold" {
                        sold.push(v["lead_id"].as_str().unwrap_or("").to_string());
                    }
                }
                (sold, None)
            })
        })
        .collect();
    let mut sold = Vec::new();
    let mut refused = None;
    for s in sellers {
        let (ids, r) = s.join().unwrap();
        sold.extend(ids);
        refused = refused.or(r);
    }
    let refused = refused.expect("the disk never filled");
    assert_eq!(refused["error"]["code"], "journal_unavailable", "{refused}");
    // Still alive, still answering, still refusing.
    let r = Client::connect(addr).lead(&lead(9000));
    assert_eq!(r.status, 503);
    // The operator sees why.
    let stats = {
        let mut c = Client::connect(admin);
        c.send_raw(
            b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken-full-disk\r\n\r\n",
        );
        c.read_response().expect("stats").json()
    };
    assert_eq!(stats["journal"]["accepting_leads"], false, "{stats}");
    assert_eq!(stats["journal"]["spare_segment_ready"], false, "{stats}");
    let mut c = Client::connect(admin);
    c.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let health = c.read_response().expect("healthz");
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "journal_unavailable");
    assert!(child.try_wait().unwrap().is_none(), "the exchange died");
    child.kill().unwrap();
    child.wait().unwrap();
    // Every lead sold has its post and its sale in the journal, the book buyers are billed
    // from: new leads were turned away while the leads already running still had room.
    let records = export(&fs.mnt.join("journal"));
    let of_type = |t: &str| -> HashSet<String> {
        records
            .iter()
            .filter(|r| r["type"] == t)
            .filter_map(|r| r["lead_id"].as_str().map(str::to_string))
            .collect()
    };
    let (posted, sales) = (of_type("post_sent"), of_type("sale"));
    assert!(!sold.is_empty());
    for id in &sold {
        assert!(
            posted.contains(id),
            "sold without its post in the journal: {id}"
        );
        assert!(
            sales.contains(id),
            "sold without its sale in the journal: {id}"
        );
    }

    // Restarted on the full disk: it refuses leads or stops with an error, never a signal.
    let mut child = gavel()
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut addr = None;
    while std::io::BufRead::read_line(&mut stderr, &mut line).unwrap_or(0) > 0 {
        if let Some(rest) = line.split("serving sellers on ").nth(1) {
            addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
            break;
        }
        line.clear();
    }
    match addr {
        Some(addr) => {
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            for i in 0..50 {
                let r = Client::connect(addr).lead(&lead(9100 + i));
                assert!(r.status == 200 || r.status == 503, "{}", r.status);
            }
            assert!(child.try_wait().unwrap().is_none(), "the exchange died");
            child.kill().unwrap();
            child.wait().unwrap();
        }
        None => {
            use std::os::unix::process::ExitStatusExt;
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), None, "killed by a signal: {status:?}");
            assert!(!status.success());
        }
    }
}

/// `kill -9` while a lead waits on its bids: no buyer got its consumer and its seller heard
/// nothing, so after the restart the seller's retry is a new lead, not a duplicate (the start
/// says so); a lead answered before the crash is still one.
#[test]
fn a_lead_a_crash_cut_off_before_any_post_may_be_sent_again() {
    let fleet = Fleet::start(vec![BuyerSpec::new("slow").with_responder(
        |kind, _| match kind {
            Kind::Ping => Reply::bid(9000, None).after_ms(5000),
            Kind::Post => Reply::accepted(),
        },
    )])
    .unwrap();
    let dir = temp_dir("crash-mid-auction");
    let journal = dir.join("journal");
    let text = config(&fleet, "dedupe_days = 30", |_| String::new())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 8000");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, set_journal_dir(&text, &journal)).unwrap();
    send_one_lead_and_kill_when(&cfg, || fleet.pings(0) > 0, "the lead was pinged");

    let text = text.replace("ping_timeout_ms = 8000", "ping_timeout_ms = 300");
    std::fs::write(&cfg, set_journal_dir(&text, &journal)).unwrap();
    let (mut child, addr, log) = serve_logged(&cfg);
    assert!(
        log.iter()
            .any(|l| l.contains("1 lead(s) were in their auction")),
        "{log:?}"
    );
    let mut c = Client::connect(addr);
    let r = c.lead(LEAD);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Answered now: the next one is a duplicate.
    let r = c.lead(LEAD);
    assert_eq!(r.json()["error"]["code"], "duplicate");
    let _ = child.kill();
    let _ = child.wait();
}

/// The same for a seller-side ping (`/v1/ping`) cut off in its auction: once the start has
/// reported it, a lookup says `interrupted` / `never_posted` for good (it said `pending`).
#[test]
fn a_ping_a_crash_cut_off_in_its_auction_is_reported_and_answered_for_good() {
    let fleet = Fleet::start(vec![BuyerSpec::new("slow").with_responder(
        |kind, _| match kind {
            Kind::Ping => Reply::bid(9000, None).after_ms(5000),
            Kind::Post => Reply::accepted(),
        },
    )])
    .unwrap();
    let dir = temp_dir("crash-mid-ping");
    let journal = dir.join("journal");
    let text = config(&fleet, "hold_ms = 30000", |_| String::new())
        .replace("ping_timeout_ms = 300", "ping_timeout_ms = 8000");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, set_journal_dir(&text, &journal)).unwrap();
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    send_and_kill_when(
        &cfg,
        "/v1/ping",
        ping,
        || fleet.pings(0) > 0,
        "the ping reached the buyer",
    );
    let lead_id = export(&journal)
        .into_iter()
        .find(|r| r["type"] == "lead_received")
        .and_then(|r| r["lead_id"].as_str().map(str::to_string))
        .expect("the ping is in the journal");

    let (mut child, addr, log) = serve_logged(&cfg);
    let v = looked_up(addr, &lead_id);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        log.iter()
            .any(|l| l.contains("1 lead(s) were in their auction")),
        "{log:?}"
    );
    assert_eq!(v["status"], "interrupted", "{v}");
    assert_eq!(v["error"]["code"], "never_posted", "{v}");
    let recovered: Vec<_> = export(&journal)
        .into_iter()
        .filter(|r| r["type"] == "recovered")
        .collect();
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    assert_eq!(recovered[0]["unsettled"], "never_posted");
}

/// A test lead whose post a crash left unanswered is reported like any other (its lookup said
/// `pending` for ever), and its post takes none of the buyer's cap.
#[test]
fn a_test_leads_post_unanswered_at_a_crash_is_reported_and_takes_no_cap() {
    let test_lead = LEAD.replacen('{', r#"{"test": true, "#, 1);
    let (_fleet, cfg, journal) = killed_with_a_post_unanswered_of("crash-test-post", &test_lead);
    let lead_id = export(&journal)
        .into_iter()
        .find(|r| r["type"] == "post_sent")
        .and_then(|r| r["lead_id"].as_str().map(str::to_string))
        .expect("the post is in the journal");
    let (mut child, addr, log) = serve_logged(&cfg);
    let v = looked_up(addr, &lead_id);
    // The cap is 2 a day and the test lead's post takes none of it.
    let buyers = two_leads(&mut Client::connect(addr));
    let _ = child.kill();
    let _ = child.wait();
    let warning = log
        .iter()
        .find(|l| l.contains("were waiting on a buyer's answer"))
        .unwrap_or_else(|| panic!("no warning about the unanswered post: {log:?}"));
    assert!(warning.contains(&lead_id), "{warning}");
    assert_eq!(v["status"], "interrupted", "{v}");
    assert_eq!(v["error"]["code"], "post_unanswered", "{v}");
    assert_eq!(v["test"], true, "{v}");
    assert_eq!(buyers, vec!["slow", "slow"]);
}

/// A post still waiting for a free connection to the buyer when a crash comes was never sent:
/// the start does not take it for a post the buyer has (no cap taken, no settling asked for),
/// and its lead is `never_posted`, free to be sent again.
#[test]
fn a_post_waiting_for_a_connection_at_a_crash_was_never_sent() {
    let fleet = Fleet::start(vec![BuyerSpec::new("one").with_responder(
        |kind, _| match kind {
            Kind::Ping => Reply::bid(9000, None),
            Kind::Post => Reply::accepted().after_ms(5000),
        },
    )])
    .unwrap();
    let dir = temp_dir("crash-post-queued");
    let journal = dir.join("journal");
    let text = config(&fleet, "hold_ms = 60000", |_| {
        "max_connections = 1".to_string()
    })
    .replace("post_timeout_ms = 500", "post_timeout_ms = 10000");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, set_journal_dir(&text, &journal)).unwrap();
    let (mut child, addr) = serve(&cfg);
    // Two bids held, then two posts: the first takes the one connection, the second waits.
    let ping = r#"{"campaign": "auto", "lead": {"state": "TX", "zip": "77002", "lead_type": "auto", "age": 34, "insured": true}}"#;
    let full: Value = serde_json::from_str(LEAD).unwrap();
    let mut c = Client::connect(addr);
    let ids: Vec<String> = (0..2)
        .map(|_| {
            let v = c.post("/v1/ping", Some(KEY), ping.as_bytes()).json();
            v["ping_id"].as_str().unwrap_or("").to_string()
        })
        .collect();
    let post_of = |id: &str| {
        serde_json::to_vec(&serde_json::json!({
            "ping_id": id, "lead": full["lead"], "consent": full["consent"]
        }))
        .unwrap()
    };
    let mut clients = Vec::new();
    for id in &ids {
        let mut c = Client::connect(addr);
        c.send_raw(&Client::request(
            "POST",
            "/v1/post",
            Some(KEY),
            &post_of(id),
        ));
        clients.push(c);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while fleet.posts(0) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("kill -9");
    let _ = child.wait();
    let records = export(&journal);
    let sent: Vec<String> = records
        .iter()
        .filter(|r| r["type"] == "post_sent")
        .filter_map(|r| r["lead_id"].as_str().map(str::to_string))
        .collect();
    let (mut child, addr, log) = serve_logged(&cfg);
    let queued = ids.iter().find(|l| !sent.contains(l)).cloned();
    let v = queued.as_deref().map(|id| looked_up(addr, id));
    // Its ping is postable again.
    let again = queued.as_deref().map(|id| {
        Client::connect(addr)
            .post("/v1/post", Some(KEY), &post_of(id))
            .json()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ids.len(), 2);
    assert_eq!(
        sent.len(),
        1,
        "only the post written is journaled sent: {records:?}"
    );
    let warning = log
        .iter()
        .find(|l| l.contains("were waiting on a buyer's answer"))
        .unwrap_or_else(|| panic!("no warning about the unanswered post: {log:?}"));
    assert!(warning.contains("1 post(s)"), "{warning}");
    let v = v.expect("the queued lead");
    assert_eq!(v["status"], "interrupted", "{v}");
    assert_eq!(v["error"]["code"], "never_posted", "{v}");
    let again = again.expect("posted again");
    assert_ne!(again["error"]["code"], "already_posted", "{again}");
}

/// A sale whose post went out in the last hour and whose answer came in this one counts, after
/// a restart, in the hour of its post, as it did live (the room is taken when the post is
/// sent): a buyer capped at one an hour buys again this hour.
/// A config file for `fleet` whose first buyer has `[buyers.caps] cap` (`daily = 1`), with
/// its journal in a fresh directory named for `what`: (config file, journal directory).
fn first_buyer_capped(fleet: &Fleet, cap: &str, what: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(what);
    let journal = dir.join("journal");
    let text = config(fleet, "", |i| {
        if i == 0 {
            format!("[buyers.caps]\n{cap}")
        } else {
            String::new()
        }
    });
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, set_journal_dir(&text, &journal)).unwrap();
    (cfg, journal)
}

/// A plain lead's arrival from `seller-1` on `auto`.
fn lead_received(id: &str) -> gavel::journal::RecordRef<'_> {
    gavel::journal::RecordRef::LeadReceived {
        lead_id: id,
        seller: "seller-1",
        campaign: "auto",
        source: None,
        test: false,
        lead_json: b"{}",
        flow: Some(gavel::journal::LeadFlow::Lead),
        idempotency_key: None,
    }
}

/// `recs` appended to the journal at `journal` as if written in the last 10 ms, in order.
fn journal_just_now(journal: &Path, recs: &[gavel::journal::RecordRef<'_>]) {
    let now_us = chrono::Utc::now().timestamp_micros() as u64;
    let j = open_journal(journal.to_path_buf());
    for (i, r) in recs.iter().enumerate() {
        j.append(now_us - 10_000 + i as u64, r).unwrap();
    }
}

#[test]
fn a_sale_counts_in_its_posts_cap_window_after_a_restart() {
    use gavel::journal::{LeadStatus, RecordRef};
    let fleet = Fleet::start(vec![bidder("hourly", 9000), bidder("other", 2000)]).unwrap();
    let (cfg, journal) = first_buyer_capped(&fleet, "hourly = 1", "post-window");
    let now_us = chrono::Utc::now().timestamp_micros() as u64;
    let hour_us = 3_600_000_000;
    let this_hour = now_us - now_us % hour_us;
    let (posted, sold) = (this_hour - 2_000_000, this_hour);
    {
        let j = open_journal(journal.clone());
        let id = "01JDQ6X8W2ABCDEFGHJKMNPQRS";
        let recs = [
            (posted - 1000, lead_received(id)),
            (
                posted,
                RecordRef::PostSent {
                    lead_id: id,
                    buyer: "hourly",
                    price_cents: 9000,
                },
            ),
            (
                sold,
                RecordRef::PostResult {
                    lead_id: id,
                    buyer: "hourly",
                    accepted: true,
                    reason: None,
                    response_us: 2_000_000,
                    price_cents: 9000,
                    buyer_lead_id: None,
                },
            ),
            (
                sold,
                RecordRef::Sale {
                    lead_id: id,
                    campaign: "auto",
                    seller: "seller-1",
                    buyer: "hourly",
                    price_cents: 9000,
                    payout_cents: 7200,
                    test: false,
                },
            ),
            (
                sold,
                RecordRef::LeadAnswered {
                    lead_id: id,
                    campaign: "auto",
                    seller: "seller-1",
                    status: LeadStatus::Sold,
                    price_cents: 9000,
                    payout_cents: 7200,
                    elapsed_us: 2_001_000,
                    bids: Some(2),
                    reason: None,
                },
            ),
        ];
        for (ts, r) in &recs {
            j.append(*ts, r).unwrap();
        }
    }
    let ex = Exchange::start_file(&cfg);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "hourly", "{v}");
}

/// A buyer's acceptance whose `sale` record is gone (damage cut it, or a stop came between
/// the two records): the buyer took the consumer, so the post counts against its cap at the
/// next start as the sale would have.
#[test]
fn an_accepted_post_whose_sale_record_is_gone_still_counts_against_the_cap() {
    use gavel::journal::{LeadStatus, RecordRef};
    let fleet = Fleet::start(vec![bidder("daily", 9000), bidder("other", 2000)]).unwrap();
    let (cfg, journal) = first_buyer_capped(&fleet, "daily = 1", "sale-gone");
    let id = "01JDQ6X8W2ABCDEFGHJKMNPQRT";
    let recs = [
        lead_received(id),
        RecordRef::PostSent {
            lead_id: id,
            buyer: "daily",
            price_cents: 9000,
        },
        RecordRef::PostResult {
            lead_id: id,
            buyer: "daily",
            accepted: true,
            reason: None,
            response_us: 20_000,
            price_cents: 9000,
            buyer_lead_id: None,
        },
        // No `sale` record here.
        RecordRef::LeadAnswered {
            lead_id: id,
            campaign: "auto",
            seller: "seller-1",
            status: LeadStatus::Sold,
            price_cents: 9000,
            payout_cents: 7200,
            elapsed_us: 21_000,
            bids: Some(2),
            reason: None,
        },
    ];
    journal_just_now(&journal, &recs);
    let ex = Exchange::start_file(&cfg);
    let v = ex.client().lead(LEAD).json();
    assert_eq!(v["status"], "sold", "{v}");
    assert_eq!(
        v["sales"][0]["buyer"], "other",
        "daily's one lead is taken: {v}"
    );
}

/// A ping a crash cut off before its result (its `ping_sent` alone in the journal) is still a
/// ping in the buyer's rebuilt counters, as the live counter had it before the crash.
#[test]
fn a_ping_a_crash_cut_off_before_its_result_still_counts_as_a_ping() {
    use gavel::journal::{PingOutcome, RecordRef};
    let fleet = Fleet::start(vec![bidder("slow", 9000), bidder("quick", 2000)]).unwrap();
    let (cfg, journal) = first_buyer_capped(&fleet, "daily = 100", "ping-cut-off");
    let id = "01JDQ6X8W2ABCDEFGHJKMNPQRV";
    let recs = [
        lead_received(id),
        RecordRef::PingSent {
            lead_id: id,
            buyer: "slow",
        },
        RecordRef::PingSent {
            lead_id: id,
            buyer: "quick",
        },
        RecordRef::PingResult {
            lead_id: id,
            buyer: "quick",
            outcome: PingOutcome::NoBid,
            reason: None,
            response_us: 3_000,
        },
        // The process died here, slow's answer still out.
    ];
    journal_just_now(&journal, &recs);
    let ex = Exchange::start_file(&cfg);
    let st = ex.handle.as_ref().unwrap().stats();
    let pings = |who: &str| {
        st.buyers()
            .find(|(id, _)| *id == who)
            .map(|(_, b)| (b.pings, b.no_bids, b.timeouts))
    };
    assert_eq!(pings("slow"), Some((1, 0, 0)), "pings, no bids, timeouts");
    assert_eq!(pings("quick"), Some((1, 1, 0)), "pings, no bids, timeouts");
}

/// Pings waiting for a buyer's only connection when the process dies are not counted as
/// pings: a buyer's `pings` counts a ping when its `ping_sent` (or, never written, its result)
/// is journaled, so a `kill -9` and a restart never take its count down.
#[test]
fn a_buyers_pings_never_go_down_across_a_kill_9() {
    let slow = BuyerSpec::new("slow").with_responder(|kind, _| match kind {
        Kind::Ping => Reply::bid(3000, None).after_ms(2_000),
        Kind::Post => Reply::accepted(),
    });
    let fleet = Fleet::start(vec![slow]).unwrap();
    let dir = temp_dir("pings-kill");
    let text = set_journal_dir(
        &config(&fleet, "", |_| "max_connections = 1".to_string()),
        &dir.join("journal"),
    )
    .replace("ping_timeout_ms = 300", "ping_timeout_ms = 5000")
    .replace(
        "max_in_flight = 1000",
        "max_in_flight = 1000\nadmin_listen = \"127.0.0.1:0\"\n\n[admin]\ntoken = \"t0ken-pings-kill\"",
    );
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();
    let pings = |admin: std::net::SocketAddr| -> u64 {
        let mut c = Client::connect(admin);
        c.send_raw(
            b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken-pings-kill\r\n\r\n",
        );
        let v = c.read_response().expect("stats").json();
        v["buyers"]["slow"]["pings"].as_u64().unwrap_or(0)
    };
    let (mut child, addr, admin) = serve_with_admin(&cfg);
    // Four leads at once: one ping on the buyer's one connection, three waiting for it.
    let _sellers = send_leads_at_once(addr, 4);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while fleet.pings(0) < 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let before = pings(admin);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(fleet.pings(0), 1, "one ping on the wire, three waiting");
    let (mut child, _, admin) = serve_with_admin(&cfg);
    let after = pings(admin);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        (before, after),
        (1, 1),
        "pings before the kill and after the restart"
    );
}

/// The newest segment deleted while the exchange is down: the exchange will not start on a
/// journal that forgot its latest sales (and with them caps and budgets), says which file is
/// missing and what to do, and `journal verify` fails; with the file back it starts.
#[test]
fn a_deleted_newest_segment_stops_the_exchange_from_starting() {
    let fleet = Fleet::start(vec![bidder("only", 9000)]).unwrap();
    let dir = temp_dir("newest-gone");
    let journal = dir.join("journal");
    let text = config(&fleet, "", |_| String::new())
        .replace("[journal]\n", "[journal]\nsegment_bytes = 1048576\n");
    let text = set_journal_dir(&text, &journal);
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();

    let newest = journal.join("00000000000000000001.seg");
    let head = journal.join("HEAD");
    let (child, addr) = serve(&cfg);
    let running = Serving(child);
    let mut c = Client::connect(addr);
    let mut sold = 0;
    while !std::fs::read_to_string(&head).is_ok_and(|h| h.contains("segment 1")) {
        let v = c.lead(LEAD).json();
        assert_eq!(v["sales"][0]["buyer"], "only", "{}", v);
        sold += 1;
        assert!(sold < 20_000, "the journal never reached a second segment");
    }
    drop(running);

    let kept = dir.join("kept.seg");
    std::fs::rename(&newest, &kept).unwrap();
    let out = gavel()
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started without its newest segment: {}",
        err
    );
    assert!(
        err.contains("segment 1 is missing") && err.contains(&head.display().to_string()),
        "{}",
        err
    );
    let v = gavel()
        .args(["journal", "verify", "--dir"])
        .arg(&journal)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&v.stdout).to_string() + &String::from_utf8_lossy(&v.stderr);
    assert_ne!(v.status.code(), Some(0), "{}", said);
    assert!(said.contains("DAMAGED"), "{}", said);

    std::fs::rename(&kept, &newest).unwrap();
    let (child, addr) = serve(&cfg);
    let running = Serving(child);
    let v = Client::connect(addr).lead(LEAD).json();
    assert_eq!(v["sales"][0]["buyer"], "only", "{}", v);
    drop(running);
    let sales = export(&journal)
        .iter()
        .filter(|r| r["type"] == "sale")
        .count();
    assert_eq!(sales, sold + 1);
}

/// A journal whose next segment cannot be made (a full disk; here its name is taken by a
/// directory) says so on stderr when it starts, and again when the segment can be made and
/// leads are taken: an operator sees why leads are turned away, not only a 503.
#[test]
fn a_next_segment_that_cannot_be_made_is_said_on_stderr_and_so_is_its_end() {
    let fleet = Fleet::start(vec![bidder("a", 1000)]).unwrap();
    let dir = temp_dir("nospare");
    let journal = dir.join("journal");
    let blocker = journal.join("next.spare");
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let text = set_journal_dir(&config(&fleet, "", |_| String::new()), &journal);
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();
    let mut child = spawn_serve_piped(&cfg);
    let rx = stderr_lines(&mut child);
    let running = Serving(child);
    let wait_for = |needle: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} on stderr: {seen:#?}");
    };
    let line = wait_for("the next segment cannot be made");
    assert!(line.contains("next.spare"), "{line}");
    assert!(line.contains("503 journal_unavailable"), "{line}");
    std::fs::remove_dir_all(&blocker).unwrap();
    let line = wait_for("new leads are taken");
    assert!(
        line.starts_with("gavel: journal: the next segment is made"),
        "{line}"
    );
    drop(running);
}

/// The segment being written, cut short by something else while the exchange serves (its
/// pages past the cut would raise SIGBUS at the next store): the exchange lives on, says so on
/// stderr, refuses new leads `503 journal_unavailable`, and its stop exits 1 naming the cut.
#[test]
fn the_segment_being_written_cut_short_kills_nothing_and_stops_new_leads() {
    let fleet = Fleet::start(vec![bidder("a", 1000)]).unwrap();
    let dir = temp_dir("seg-cut");
    let journal = dir.join("journal");
    let text = set_journal_dir(&config(&fleet, "", |_| String::new()), &journal)
        .replace("sync = \"os\"", "sync = \"os\"\nsegment_bytes = 1048576");
    let cfg = dir.join("gavel.toml");
    std::fs::write(&cfg, &text).unwrap();
    let mut child = spawn_serve_piped(&cfg);
    let rx = stderr_lines(&mut child);
    let running = Serving(child);
    let mut seen = Vec::new();
    let addr: std::net::SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("never served: {seen:#?}"));
        if let Some(a) = line
            .split("serving sellers on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            break a;
        }
        seen.push(line);
    };
    let lead = |i: usize| {
        LEAD.replace("7135550147", &format!("71355{:05}", i))
            .replace("ana@example.com", &format!("ana{i}@example.com"))
    };
    let mut c = Client::connect(addr);
    for i in 0..3 {
        assert_eq!(c.lead(&lead(i)).json()["status"], "sold");
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(journal.join("00000000000000000000.seg"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut refused = None;
    for i in 3..400 {
        let r = Client::connect(addr).lead(&lead(i));
        if r.status == 503 {
            refused = Some(r.json());
            break;
        }
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        std::thread::sleep(Duration::from_millis(25));
    }
    let refused = refused.expect("new leads were never refused");
    assert_eq!(refused["error"]["code"], "journal_unavailable", "{refused}");
    let mut running = running;
    assert!(running.0.try_wait().unwrap().is_none(), "the exchange died");
    // SAFETY: a signal to the child this test spawned.
    assert_eq!(
        unsafe { libc::kill(running.0.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "never stopped");
        std::thread::sleep(Duration::from_millis(20));
    };
    seen.extend(rx.iter());
    let said = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{status:?}: {said}");
    assert!(
        said.contains("journal segment cut short while in use") && said.contains("until a restart"),
        "{said}"
    );
    assert!(
        seen.last().is_some_and(|l| l.contains("cut short")),
        "the stop names the cut: {said}"
    );
}
