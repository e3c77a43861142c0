//! Journal append benchmarks: latency of one 256-byte record (sync = "os") on one thread,
//! throughput with two threads, and the p99 of single appends measured with a histogram.
//!
//! Run: `cargo bench --bench journal -- --warm-up-time 1 --measurement-time 3`

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gavel::journal::{format, Journal, JournalOptions, RecordRef, SyncMode};
use hdrhistogram::Histogram;

/// Frame size under test.
const FRAME_BYTES: u64 = 256;
/// Segment size: the configuration's default.
const SEGMENT_BYTES: u64 = 256 * 1024 * 1024;
/// A journal is dropped and its files removed (outside the timed region) after this many
/// bytes, so a long run does not fill the disk.
const MAX_JOURNAL_BYTES: u64 = 1024 * 1024 * 1024;
/// Appends timed one by one for the histogram.
const HISTOGRAM_APPENDS: u64 = 2_000_000;
const TS_US: u64 = 1_795_000_000_000_000;
const LEAD_ID: &str = "01JDQ6X8W2ABCDEFGHJKMNPQRS";

/// The buyer name that makes a `PingSent` frame exactly [`FRAME_BYTES`] long.
fn buyer() -> String {
    // payload = version(1) + lead_id(2 + 26) + buyer(2 + n)
    let n = (FRAME_BYTES - format::FRAME_HEADER_BYTES - 1 - 2 - LEAD_ID.len() as u64 - 2) as usize;
    let b = "b".repeat(n);
    let rec = RecordRef::PingSent {
        lead_id: LEAD_ID,
        buyer: &b,
    };
    assert_eq!(
        format::frame_len(rec.encoded_len().unwrap() as u64),
        FRAME_BYTES
    );
    b
}

/// A journal in a scratch directory, recreated when it has grown past its byte budget.
struct Bench {
    root: PathBuf,
    generation: u64,
    journal: Option<Arc<Journal>>,
    written: u64,
}

impl Bench {
    fn new(name: &str) -> Bench {
        let root =
            std::env::temp_dir().join(format!("gavel-journal-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        Bench {
            root,
            generation: 0,
            journal: None,
            written: 0,
        }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(self.generation.to_string())
    }

    /// The journal, with room for `appends` more records.
    fn journal(&mut self, appends: u64) -> Arc<Journal> {
        if self.journal.is_none() || self.written + appends * FRAME_BYTES > MAX_JOURNAL_BYTES {
            self.journal = None;
            let _ = std::fs::remove_dir_all(self.dir());
            self.generation += 1;
            let opts = JournalOptions {
                dir: self.dir(),
                segment_bytes: SEGMENT_BYTES,
                sync: SyncMode::Os,
                retain_segments: 0,
                keep_us: gavel::journal::CAP_WINDOW_US,
            };
            let (j, _) = Journal::open(opts).unwrap();
            self.journal = Some(Arc::new(j));
            self.written = 0;
        }
        self.written += appends * FRAME_BYTES;
        self.journal.clone().unwrap()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.journal = None;
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

/// Time every append of a long run and print the percentiles.
fn histogram_report(buyer: &str) {
    let mut bench = Bench::new("hist");
    let j = bench.journal(HISTOGRAM_APPENDS);
    let rec = RecordRef::PingSent {
        lead_id: LEAD_ID,
        buyer,
    };
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    // Warm up: fault in code and the first pages.
    for _ in 0..100_000 {
        j.append(TS_US, &rec).unwrap();
    }
    let start = Instant::now();
    for i in 0..HISTOGRAM_APPENDS {
        let t = Instant::now();
        j.append(TS_US + i, &rec).unwrap();
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    let total = start.elapsed();
    println!(
        "journal append, {FRAME_BYTES}-byte records, 1 thread, sync=os, {HISTOGRAM_APPENDS} appends each timed \
         (includes ~2 clock reads):\n  p50 {} ns  p90 {} ns  p99 {} ns  p99.9 {} ns  p99.99 {} ns  max {} ns; \
         {:.2} M appends/s while timing",
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.value_at_quantile(0.9999),
        h.max(),
        HISTOGRAM_APPENDS as f64 / total.as_secs_f64() / 1e6
    );
    drop(j);
    remove(&bench.dir());
}

fn benches(c: &mut Criterion) {
    let buyer = buyer();
    histogram_report(&buyer);

    let mut g = c.benchmark_group("journal");
    g.throughput(Throughput::Elements(1));

    let mut single = Bench::new("single");
    g.bench_function("append_256B_1_thread", |b| {
        b.iter_custom(|iters| {
            let j = single.journal(iters);
            let rec = RecordRef::PingSent {
                lead_id: LEAD_ID,
                buyer: &buyer,
            };
            let start = Instant::now();
            for i in 0..iters {
                j.append(TS_US + i, &rec).unwrap();
            }
            start.elapsed()
        })
    });
    drop(single);

    let mut double = Bench::new("double");
    g.bench_function("append_256B_2_threads", |b| {
        b.iter_custom(|iters| {
            let j = double.journal(iters);
            let barrier = Barrier::new(3);
            let per_thread = iters.div_ceil(2);
            // The scope joins both writers before it returns, so the clock stops when the
            // last append is done.
            let start = std::thread::scope(|s| {
                for _ in 0..2 {
                    let j = &j;
                    let barrier = &barrier;
                    let buyer = &buyer;
                    s.spawn(move || {
                        let rec = RecordRef::PingSent {
                            lead_id: LEAD_ID,
                            buyer,
                        };
                        barrier.wait();
                        for i in 0..per_thread {
                            j.append(TS_US + i, &rec).unwrap();
                        }
                    });
                }
                barrier.wait();
                Instant::now()
            });
            start.elapsed()
        })
    });
    g.finish();
}

criterion_group!(journal_benches, benches);
criterion_main!(journal_benches);
