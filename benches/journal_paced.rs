//! The journal at the exchange's pace, with its background `msync`: how long the worker's
//! appends for one lead take, and how often they stall, with `sync = "interval"` (10 ms)
//! against `sync = "os"`.
//!
//! A lead at 10 buyers writes about 26 records, some 2.4 KB; at 2,000 leads/s that is ~5 MB/s
//! into the mapped segment. Each "lead" here is 24 records of 100 bytes appended back to back,
//! due every 500 µs (busy-waited), for 10 s per mode; the time of each lead's appends goes into
//! a histogram. This is the product's own `Journal` on the disk under the temporary directory
//! (set `TMPDIR` to measure another). Not a timed test: it prints what it measured.
//!
//! Run: `cargo bench --bench journal_paced`

use std::time::{Duration, Instant};

use gavel::journal::{Journal, JournalOptions, RecordRef, SyncMode};
use hdrhistogram::Histogram;

/// Records per lead and their buyer-name size, for ~100-byte frames.
const RECORDS_PER_LEAD: usize = 24;
const BUYER: &str = "buyer-with-a-name-long-enough-for-a-hundred-byte-frame-xxxxxxxx";
const LEAD_ID: &str = "01JDQ6X8W2ABCDEFGHJKMNPQRS";
/// One lead due every this often: 2,000 leads/s.
const LEAD_EVERY: Duration = Duration::from_micros(500);
/// Measured leads per mode (10 s).
const LEADS: u64 = 20_000;
/// An append batch longer than this counts as a stall.
const STALL: Duration = Duration::from_micros(100);
const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

fn run(name: &str, sync: SyncMode) {
    let dir =
        std::env::temp_dir().join(format!("gavel-journal-paced-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = JournalOptions {
        dir: dir.clone(),
        segment_bytes: SEGMENT_BYTES,
        sync,
        retain_segments: 0,
        keep_us: gavel::journal::CAP_WINDOW_US,
    };
    let (j, _) = match Journal::open(opts) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{name}: cannot open a journal in {}: {e}", dir.display());
            return;
        }
    };
    let rec = RecordRef::PingSent {
        lead_id: LEAD_ID,
        buyer: BUYER,
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut stalls = 0u64;
    let mut stalled = Duration::ZERO;
    let start = Instant::now();
    for i in 0..LEADS {
        let due = start + LEAD_EVERY * i as u32;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let t0 = Instant::now();
        for k in 0..RECORDS_PER_LEAD {
            if let Err(e) = j.append(1_795_000_000_000_000 + i * 100 + k as u64, &rec) {
                eprintln!("{name}: append failed: {e}");
                return;
            }
        }
        let took = t0.elapsed();
        hist.saturating_record(took.as_nanos() as u64);
        if took > STALL {
            stalls += 1;
            stalled += took;
        }
    }
    let wall = start.elapsed();
    drop(j);
    let _ = std::fs::remove_dir_all(&dir);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "journal paced, sync={name:<13} {LEADS} leads x {RECORDS_PER_LEAD} records in {:.1} s: \
         per lead p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us; \
         {stalls} over {} us ({:.2} ms in all)",
        wall.as_secs_f64(),
        us(0.5),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1000.0,
        STALL.as_micros(),
        stalled.as_secs_f64() * 1000.0
    );
}

fn main() {
    // `cargo bench` passes flags such as `--bench`; this harness takes none.
    for round in 0..2 {
        let _ = round;
        run(
            "interval 10ms",
            SyncMode::Interval(Duration::from_millis(10)),
        );
        run("os", SyncMode::Os);
    }
}
