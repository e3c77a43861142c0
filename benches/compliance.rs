//! The compliance checks as a worker runs them per lead: key derivation, the shared dedupe
//! check-and-insert on a well-filled index, and a suppression lookup. Target: under 1 µs each.
//!
//! Run: `cargo bench --bench compliance -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use gavel::compliance::{dedupe_keys, DedupeIndex, Suppression};
use gavel::lead::Fields;
use serde_json::{json, Value};
use std::path::Path;

/// Keys the index is sized for: a month of 15 k leads a day, two keys each.
const INDEX_ENTRIES: usize = 1_000_000;
/// Leads already in the index before measuring, so lookups probe a realistic table.
const PREFILL_LEADS: u64 = 400_000;
/// Distinct new leads the insert benchmarks cycle through.
const FRESH_LEADS: u64 = 1_000_000;
/// An index small enough to stay in cache.
const SMALL_ENTRIES: usize = 10_000;
const DAY_US: u64 = 86_400 * 1_000_000;
const T0: u64 = 1_764_000_000 * 1_000_000;

fn lead(i: u64) -> Fields {
    match json!({"phone": format!("713{:07}", i % 10_000_000), "email": format!("user{i}@example.com")})
    {
        Value::Object(m) => Fields::from_map(&m),
        _ => Fields::default(),
    }
}

fn fresh_keys(first: u64, count: u64) -> Vec<[u64; 2]> {
    let mut k = Vec::new();
    (first..first + count)
        .map(|i| {
            dedupe_keys("auto-insurance", &lead(i), &mut k);
            [
                k.first().copied().unwrap_or(0),
                k.get(1).copied().unwrap_or(0),
            ]
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let sample = lead(42);
    let mut keys = Vec::with_capacity(2);
    c.bench_function("dedupe_keys", |b| {
        b.iter(|| {
            dedupe_keys("auto-insurance", black_box(&sample), &mut keys);
            black_box(keys.len())
        })
    });

    let idx = DedupeIndex::new(INDEX_ENTRIES);
    for i in 0..PREFILL_LEADS {
        dedupe_keys("auto-insurance", &lead(i), &mut keys);
        idx.check_and_insert(&keys, T0 + i, 30 * DAY_US);
    }
    // Precomputed keys, laid out flat, so the loop measures the index alone.
    let fresh = fresh_keys(PREFILL_LEADS, FRESH_LEADS);
    let mut n = 0usize;
    c.bench_function("check_and_insert new lead (1M index, evicting)", |b| {
        b.iter(|| {
            let k = &fresh[n % fresh.len()];
            n += 1;
            black_box(idx.check_and_insert(k, T0 + PREFILL_LEADS + n as u64, 30 * DAY_US))
        })
    });
    // The same work on an index that fits in cache: the difference is memory latency.
    let small = DedupeIndex::new(SMALL_ENTRIES);
    let mut n = 0usize;
    c.bench_function("check_and_insert new lead (10k index, evicting)", |b| {
        b.iter(|| {
            let k = &fresh[n % fresh.len()];
            n += 1;
            black_box(small.check_and_insert(k, T0 + n as u64, 30 * DAY_US))
        })
    });
    dedupe_keys("auto-insurance", &lead(7), &mut keys);
    c.bench_function("check_and_insert duplicate", |b| {
        b.iter(|| black_box(idx.check_and_insert(black_box(&keys), T0 + DAY_US, 30 * DAY_US)))
    });

    let list: String = (0..100_000u64)
        .map(|i| format!("(212) {:03}-{:04}\n", i / 10_000, i % 10_000))
        .collect();
    let sup = match Suppression::from_reader(Path::new("bench"), list.as_bytes()) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    c.bench_function("suppression contains (100k list)", |b| {
        b.iter(|| black_box(sup.contains(black_box("7135550147"))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
