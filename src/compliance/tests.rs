use super::*;
use serde_json::json;
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Barrier};

const DAY_US: u64 = 86_400 * 1_000_000;
const T0: u64 = 1_764_000_000 * 1_000_000; // late 2025, unix µs

fn parse(text: &str) -> Result<Suppression, SuppressionError> {
    Suppression::from_reader(Path::new("dnc.txt"), text.as_bytes())
}

fn lead(v: serde_json::Value) -> Fields {
    match v {
        serde_json::Value::Object(m) => Fields::from_map(&m),
        other => panic!("not an object: {other}"),
    }
}

fn keys_of(campaign: &str, v: serde_json::Value) -> Vec<u64> {
    let mut out = Vec::new();
    dedupe_keys(campaign, &lead(v), &mut out);
    out
}

// ---- suppression -------------------------------------------------------------------------

#[test]
fn suppression_reads_common_phone_formats_and_skips_comments() {
    let s = parse(
        "\u{feff}# do not call, exported 2026-11-01\n\
         7135550147\n\
         (713) 555-0148\n\
         +1 713 555 0149\n\
         1-713-555-0150   # asked twice\n\
         \n   \t\n\
         713.555.0151\r\n\
         7135550147\n",
    )
    .unwrap();
    assert_eq!(s.len(), 5, "the repeated phone counts once");
    for p in [
        "7135550147",
        "7135550148",
        "7135550149",
        "7135550150",
        "7135550151",
    ] {
        assert!(s.contains(p), "{p} should be suppressed");
    }
    assert!(!s.contains("7135550152"));
}

#[test]
fn suppression_lookup_takes_only_ten_digits() {
    let s = parse("7135550147\n").unwrap();
    assert!(!s.contains("17135550147"));
    assert!(!s.contains("(713) 555-0147"));
    assert!(!s.contains("713555014"));
    assert!(!s.contains(""));
    assert!(!s.contains("713555014x"));
}

#[test]
fn suppression_bad_line_names_file_and_line() {
    let err = parse("# header\n7135550147\n\nnot a phone\n7135550148\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("dnc.txt:4:"), "{msg}");
    assert!(msg.contains("not a phone"), "{msg}");

    // Too few digits, too many, and an 11-digit number not starting with 1.
    for (text, line) in [
        ("713555014\n", 1),
        ("7135550147\n71355501477\n", 2),
        ("\n\n27135550147\n", 3),
    ] {
        match parse(text) {
            Err(SuppressionError::BadPhone { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
            other => panic!("{text:?}: expected a bad phone, got {other:?}"),
        }
    }
}

#[test]
fn suppression_refuses_overlong_and_binary_lines() {
    let long = format!(
        "7135550147\n{}\n",
        "1".repeat(MAX_SUPPRESSION_LINE_BYTES + 1)
    );
    match parse(&long) {
        Err(SuppressionError::BadLine { line: 2, .. }) => {}
        other => panic!("expected line 2 too long, got {other:?}"),
    }
    let mut bytes = b"7135550147\n".to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
    match Suppression::from_reader(Path::new("x"), &bytes[..]) {
        Err(SuppressionError::BadLine { line: 2, .. }) => {}
        other => panic!("expected line 2 not UTF-8, got {other:?}"),
    }
}

#[test]
fn suppression_load_from_file_and_missing_file() {
    let dir = std::env::temp_dir().join(format!("gavel-compliance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dnc.txt");
    std::fs::write(&path, "(713) 555-0147\n# end\n").unwrap();
    let s = Suppression::load(&path).unwrap();
    assert!(s.contains("7135550147"));
    assert_eq!(s.len(), 1);

    let missing = dir.join("nope.txt");
    let msg = Suppression::load(&missing).unwrap_err().to_string();
    assert!(msg.contains("nope.txt"), "{msg}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn comment_only_list_is_empty() {
    let s = parse("# nothing yet\n\n").unwrap();
    assert!(s.is_empty());
    assert!(!s.contains("7135550147"));
}

// ---- keys ----------------------------------------------------------------------------------

#[test]
fn keys_normalise_phone_and_email() {
    let a = keys_of(
        "auto",
        json!({"phone": "(713) 555-0147", "email": "Ana@Example.com"}),
    );
    let b = keys_of(
        "auto",
        json!({"phone": "+1 713 555 0147", "email": "  ana@example.COM "}),
    );
    assert_eq!(a.len(), 2);
    assert_eq!(a, b);
}

#[test]
fn keys_skip_missing_or_unusable_fields() {
    assert!(keys_of("auto", json!({"first_name": "Ana"})).is_empty());
    assert_eq!(keys_of("auto", json!({"phone": "7135550147"})).len(), 1);
    assert_eq!(
        keys_of("auto", json!({"email": "a@b.c", "phone": "12"})).len(),
        1
    );
    assert!(keys_of("auto", json!({"email": "  ", "phone": null})).is_empty());
}

#[test]
fn keys_reuse_the_buffer() {
    let mut out = vec![1, 2, 3, 4];
    dedupe_keys("auto", &lead(json!({"phone": "7135550147"})), &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn keys_differ_by_campaign_and_by_kind() {
    let auto = keys_of("auto", json!({"phone": "7135550147", "email": "a@b.c"}));
    let solar = keys_of("solar", json!({"phone": "7135550147", "email": "a@b.c"}));
    assert!(auto.iter().all(|k| !solar.contains(k)));
    // A phone and an email with the same text are different keys.
    let p = key_hash("auto", b'p', "7135550147".chars());
    let e = key_hash("auto", b'e', "7135550147".chars());
    assert_ne!(p, e);
    // The campaign's boundary is part of the key.
    assert_ne!(
        key_hash("ab", b'p', "c".chars()),
        key_hash("a", b'p', "bc".chars())
    );
}

#[test]
fn keys_are_stable_across_builds() {
    // The index is rebuilt from the journal after an upgrade: these values must never change.
    // They were computed outside Rust from the definition in `key_hash` (FNV-1a, then fmix64).
    assert_eq!(
        keys_of(
            "auto-insurance",
            json!({"phone": "7135550147", "email": "ana@example.com"})
        ),
        vec![0x465b_bb82_9957_c7c6_u64, 0x5e0c_74b8_1a2c_07e7_u64]
    );
}

// ---- dedupe ------------------------------------------------------------------------------

#[test]
fn duplicate_within_window_refused_and_passes_after() {
    let idx = DedupeIndex::new(10_000);
    let keys = keys_of(
        "auto",
        json!({"phone": "7135550147", "email": "ana@example.com"}),
    );
    let window = 30 * DAY_US;
    assert!(idx.check_and_insert(&keys, T0, window));
    assert!(!idx.check_and_insert(&keys, T0 + 1, window));
    assert!(
        !idx.check_and_insert(&keys, T0 + window, window),
        "the window's edge is inside"
    );
    assert!(idx.check_and_insert(&keys, T0 + window + 1, window));
    // The new acceptance starts a new window.
    assert!(!idx.check_and_insert(&keys, T0 + window + 2, window));
}

#[test]
fn same_phone_or_same_email_is_a_duplicate() {
    let idx = DedupeIndex::new(10_000);
    let w = 30 * DAY_US;
    let first = keys_of(
        "auto",
        json!({"phone": "7135550147", "email": "ana@example.com"}),
    );
    let same_phone = keys_of(
        "auto",
        json!({"phone": "713-555-0147", "email": "other@example.com"}),
    );
    let same_email = keys_of(
        "auto",
        json!({"phone": "2125550100", "email": "ANA@example.com"}),
    );
    let neither = keys_of(
        "auto",
        json!({"phone": "2125550100", "email": "other@example.com"}),
    );
    assert!(idx.check_and_insert(&first, T0, w));
    assert!(!idx.check_and_insert(&same_phone, T0 + 1, w));
    assert!(!idx.check_and_insert(&same_email, T0 + 2, w));
    // The refused leads recorded nothing, so their other fields are still fresh.
    assert!(idx.check_and_insert(&neither, T0 + 3, w));
}

#[test]
fn campaigns_are_deduplicated_separately() {
    let idx = DedupeIndex::new(10_000);
    let w = DAY_US;
    let v = json!({"phone": "7135550147", "email": "ana@example.com"});
    assert!(idx.check_and_insert(&keys_of("auto", v.clone()), T0, w));
    assert!(idx.check_and_insert(&keys_of("solar", v.clone()), T0, w));
    assert!(!idx.check_and_insert(&keys_of("solar", v), T0 + 5, w));
}

#[test]
fn each_campaign_keeps_its_own_window() {
    let idx = DedupeIndex::new(10_000);
    let short = keys_of("short", json!({"phone": "7135550147"}));
    let long = keys_of("long", json!({"phone": "7135550147"}));
    assert!(idx.check_and_insert(&long, T0, 30 * DAY_US));
    assert!(idx.check_and_insert(&short, T0, DAY_US));
    // Traffic on the short campaign long after its window must not drop the long one's entry.
    for i in 0..100u64 {
        let k = keys_of("short", json!({"phone": format!("212555{:04}", i)}));
        assert!(idx.check_and_insert(&k, T0 + 10 * DAY_US + i, DAY_US));
    }
    assert!(idx.check_and_insert(&short, T0 + 10 * DAY_US, DAY_US));
    assert!(!idx.check_and_insert(&long, T0 + 10 * DAY_US, 30 * DAY_US));
}

#[test]
fn dedupe_off_records_nothing() {
    let idx = DedupeIndex::new(1_000);
    let keys = keys_of("auto", json!({"phone": "7135550147"}));
    assert!(idx.check_and_insert(&keys, T0, 0));
    assert!(idx.check_and_insert(&keys, T0, 0));
    assert!(idx.is_empty());
    assert!(
        idx.check_and_insert(&[], T0, DAY_US),
        "a lead with no keys cannot be a duplicate"
    );
}

#[test]
fn replay_rebuilds_what_was_seen() {
    let idx = DedupeIndex::new(10_000);
    let w = 30 * DAY_US;
    let old = keys_of("auto", json!({"phone": "7135550147"}));
    let recent = keys_of("auto", json!({"email": "ana@example.com"}));
    idx.replay(&old, T0 - 40 * DAY_US);
    idx.replay(&recent, T0 - DAY_US);
    idx.replay(&recent, T0 - 2 * DAY_US); // out of order: the later time is kept
    assert_eq!(idx.len(), 2);
    assert!(
        idx.check_and_insert(&old, T0, w),
        "recorded before the window"
    );
    assert!(!idx.check_and_insert(&recent, T0, w));
    assert!(!idx.check_and_insert(&recent, T0 + 28 * DAY_US + 1, w));
}

#[test]
fn racing_workers_let_exactly_one_copy_through() {
    const THREADS: usize = 8;
    const LEADS: usize = 10_000;
    let idx = Arc::new(DedupeIndex::new(4 * LEADS));
    let leads: Arc<Vec<Vec<u64>>> = Arc::new(
        (0..LEADS)
            .map(|i| {
                keys_of(
                    "auto",
                    json!({"phone": format!("713{:07}", i), "email": format!("u{i}@example.com")}),
                )
            })
            .collect(),
    );
    let wins: Arc<Vec<AtomicUsize>> = Arc::new((0..LEADS).map(|_| AtomicUsize::new(0)).collect());
    let start = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (idx, leads, wins, start) =
                (idx.clone(), leads.clone(), wins.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..LEADS {
                    // Half the threads walk backwards so both ends of the list are contested.
                    let i = if t % 2 == 0 { i } else { LEADS - 1 - i };
                    if idx.check_and_insert(&leads[i], T0 + t as u64, DAY_US) {
                        wins[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for (i, w) in wins.iter().enumerate() {
        assert_eq!(w.load(std::sync::atomic::Ordering::Relaxed), 1, "lead {i}");
    }
    assert_eq!(idx.len(), 2 * LEADS);
    assert_eq!(idx.forced_evictions(), 0);
}

#[test]
fn racing_leads_sharing_one_key_let_exactly_one_through() {
    // Each thread's copy has its own email but the same phone, and the keys land in different
    // shards in different orders: the lock order must keep this free of deadlock and atomic.
    const THREADS: usize = 8;
    const LEADS: usize = 2_000;
    let idx = Arc::new(DedupeIndex::new(THREADS * LEADS * 2));
    let start = Arc::new(Barrier::new(THREADS));
    let wins: Arc<Vec<AtomicUsize>> = Arc::new((0..LEADS).map(|_| AtomicUsize::new(0)).collect());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (idx, wins, start) = (idx.clone(), wins.clone(), start.clone());
            std::thread::spawn(move || {
                let mut keys = Vec::new();
                start.wait();
                for i in 0..LEADS {
                    let l = lead(json!({"email": format!("t{t}-{i}@x.com"), "phone": format!("212{:07}", i)}));
                    dedupe_keys("auto", &l, &mut keys);
                    keys.reverse(); // email first on this thread: the caller's order must not matter
                    if idx.check_and_insert(&keys, T0, DAY_US) {
                        wins[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for (i, w) in wins.iter().enumerate() {
        assert_eq!(w.load(std::sync::atomic::Ordering::Relaxed), 1, "lead {i}");
    }
}

#[test]
fn memory_stays_bounded_and_keeps_the_newest() {
    let max = 6_400;
    let idx = DedupeIndex::new(max);
    let per_shard = max / DEDUPE_SHARDS;
    let total = 100_000u64;
    let keys: Vec<u64> = (0..total)
        .map(|i| key_hash("auto", b'p', i.to_string().chars()))
        .collect();
    for (i, &k) in keys.iter().enumerate() {
        assert!(idx.check_and_insert(&[k], T0 + i as u64, 30 * DAY_US));
        assert!(
            idx.len() <= idx.capacity() + DEDUPE_SHARDS,
            "len {} at {i}",
            idx.len()
        );
    }
    assert!(
        idx.len() >= max * 9 / 10,
        "a full index stays nearly full: {}",
        idx.len()
    );
    assert!(idx.forced_evictions() >= total - idx.capacity() as u64);
    // The most recent leads are all still known (each shard keeps its newest `per_shard`),
    // the very first ones were dropped for room.
    let recent = per_shard as u64 / 2;
    for &k in &keys[(total - recent) as usize..] {
        assert!(!idx.check_and_insert(&[k], T0 + total, 30 * DAY_US));
    }
    let dropped = keys[..1_000]
        .iter()
        .filter(|&&k| idx.check_and_insert(&[k], T0 + total, 30 * DAY_US))
        .count();
    assert_eq!(dropped, 1_000);
}

/// Keys fall in the shards unevenly: an index still holds every one of `max_entries` keys
/// (none dropped for room), whatever the seed of its mix, and its bound is a few per cent over
/// `max_entries` at the default size.
#[test]
fn an_index_holds_its_whole_size_before_dropping_any() {
    for (max, runs) in [(1_024, 50), (6_400, 20), (100_000, 3)] {
        for run in 0..runs {
            let idx = DedupeIndex::new(max);
            let keys: Vec<u64> = (0..max as u64)
                .map(|i| key_hash("auto", b'p', format!("{run}-{i}").chars()))
                .collect();
            for (i, &k) in keys.iter().enumerate() {
                assert!(idx.check_and_insert(&[k], T0 + i as u64, 30 * DAY_US));
            }
            assert_eq!(idx.forced_evictions(), 0, "{max} keys, run {run}");
            assert_eq!(idx.len(), max);
            for &k in &keys {
                assert!(!idx.check_and_insert(&[k], T0 + max as u64, 30 * DAY_US));
            }
        }
    }
    let default = DedupeIndex::new(1 << 20);
    assert!(
        default.capacity() < (1 << 20) * 105 / 100,
        "{}",
        default.capacity()
    );
}

#[test]
fn expired_entries_are_dropped_as_traffic_moves_on() {
    let idx = DedupeIndex::new(100_000);
    let w = DAY_US;
    for i in 0..5_000u64 {
        assert!(idx.check_and_insert(&[key_hash("a", b'p', i.to_string().chars())], T0, w));
    }
    assert_eq!(idx.len(), 5_000);
    // Two days later, new leads clear the expired ones in passing.
    for i in 0..5_000u64 {
        let k = key_hash("b", b'p', i.to_string().chars());
        assert!(idx.check_and_insert(&[k], T0 + 2 * DAY_US, w));
    }
    assert!(
        idx.len() < 5_000 + 1_000,
        "expired entries linger: {}",
        idx.len()
    );
    assert_eq!(
        idx.forced_evictions(),
        0,
        "expired entries are not a shortfall"
    );
}

#[test]
fn re_recording_after_the_window_keeps_the_bound() {
    // The same few keys accepted again and again, each after its window: the stale queue slots
    // they leave must not grow the index.
    let max = 640;
    let idx = DedupeIndex::new(max);
    let keys: Vec<u64> = (0..500u64)
        .map(|i| key_hash("auto", b'e', i.to_string().chars()))
        .collect();
    let w = 10;
    for round in 0..200u64 {
        for &k in &keys {
            assert!(idx.check_and_insert(&[k], T0 + round * (w + 1), w));
        }
    }
    assert!(idx.len() <= idx.capacity() + DEDUPE_SHARDS);
    let distinct: HashSet<u64> = keys.iter().copied().collect();
    assert_eq!(distinct.len(), keys.len());
}
