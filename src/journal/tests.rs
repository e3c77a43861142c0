use crate::test_rng::Rng;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cli::{self, JournalCmd};
use super::format::{
    self, frame_crc, frame_len, read_frame, Frame, COMMIT_MAGIC, SEGMENT_HEADER_BYTES,
};
use super::record::PAYLOAD_VERSION;
use super::recovery::TORN_WINDOW;
use super::segment::segment_path;
use super::writer::{prefault_range, PREFAULT_AHEAD_BYTES, RELEASE_BEHIND_BYTES};
use super::*;
use std::io::Write as _;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("gavel-journal-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opts(dir: &Path, segment_bytes: u64) -> JournalOptions {
    JournalOptions {
        dir: dir.to_path_buf(),
        segment_bytes,
        sync: SyncMode::Os,
        retain_segments: 0,
        keep_us: CAP_WINDOW_US,
    }
}

const T0: u64 = 1_795_000_000_000_000; // 2026-11-18, unix microseconds

fn lead_id(i: usize) -> String {
    format!("01JDQ6X8W2{i:016}")
}

/// One record of every type (and every ping outcome), with some optional fields missing.
fn every_record() -> Vec<Record> {
    let id = lead_id(7);
    let s = |v: &str| v.to_string();
    vec![
        Record::LeadReceived {
            lead_id: id.clone(),
            seller: s("acme-media"),
            campaign: s("auto-insurance"),
            source: Some(s("fb-17")),
            test: false,
            lead_json:
                br#"{"lead":{"zip":"77002","age":34},"consent":{"vertical":"auto_insurance"}}"#
                    .to_vec(),
            flow: Some(LeadFlow::Lead),
            idempotency_key: None,
        },
        // As written before records named their flow.
        Record::LeadReceived {
            lead_id: id.clone(),
            seller: s("blue-leads"),
            campaign: s("solar"),
            source: None,
            test: true,
            lead_json: Vec::new(),
            flow: None,
            idempotency_key: None,
        },
        Record::Rejected {
            lead_id: id.clone(),
            seller: s("acme-media"),
            campaign: s("auto-insurance"),
            http_status: 422,
            code: s("invalid_field"),
            field: Some(s("lead.zip")),
            message: Some(s("zip must be 5 digits (or ZIP+4)")),
        },
        Record::Rejected {
            lead_id: id.clone(),
            seller: s("acme-media"),
            campaign: s("auto-insurance"),
            http_status: 422,
            code: s("duplicate"),
            field: None,
            message: None,
        },
        Record::PingSent {
            lead_id: id.clone(),
            buyer: s("acme-ins"),
        },
        Record::PingResult {
            lead_id: id.clone(),
            buyer: s("acme-ins"),
            outcome: PingOutcome::Bid {
                cents: 4250,
                bid_id: Some(s("b-77")),
            },
            reason: None,
            response_us: 380_123,
        },
        Record::PingResult {
            lead_id: id.clone(),
            buyer: s("blue-ins"),
            outcome: PingOutcome::Bid {
                cents: 0,
                bid_id: None,
            },
            reason: None,
            response_us: 1,
        },
        Record::PingResult {
            lead_id: id.clone(),
            buyer: s("b"),
            outcome: PingOutcome::NoBid,
            reason: None,
            response_us: 2,
        },
        Record::PingResult {
            lead_id: id.clone(),
            buyer: s("b"),
            outcome: PingOutcome::Timeout,
            reason: Some(s("timeout")),
            response_us: 800_000,
        },
        Record::PingResult {
            lead_id: id.clone(),
            buyer: s("b"),
            outcome: PingOutcome::Error,
            reason: Some(s("connection reset")),
            response_us: 3,
        },
        Record::PingResult {
            lead_id: id.clone(),
            buyer: s("b"),
            outcome: PingOutcome::Invalid,
            reason: Some(s("negative bid")),
            response_us: 4,
        },
        Record::AuctionClosed {
            lead_id: id.clone(),
            bids: 7,
            ranked: vec![(s("acme-ins"), 12000), (s("blue-ins"), 9601)],
        },
        Record::AuctionClosed {
            lead_id: id.clone(),
            bids: 0,
            ranked: Vec::new(),
        },
        Record::PostSent {
            lead_id: id.clone(),
            buyer: s("acme-ins"),
            price_cents: 12000,
        },
        Record::PostResult {
            lead_id: id.clone(),
            buyer: s("acme-ins"),
            accepted: true,
            reason: None,
            response_us: 95_000,
            price_cents: 12000,
            buyer_lead_id: Some(s("AC-991")),
        },
        Record::PostResult {
            lead_id: id.clone(),
            buyer: s("blue-ins"),
            accepted: false,
            reason: Some(s("duplicate")),
            response_us: 12,
            price_cents: 9601,
            buyer_lead_id: None,
        },
        Record::Sale {
            lead_id: id.clone(),
            campaign: s("auto-insurance"),
            seller: s("acme-media"),
            buyer: s("acme-ins"),
            price_cents: 12000,
            payout_cents: 9600,
            test: false,
        },
        Record::LeadAnswered {
            lead_id: id.clone(),
            campaign: s("auto-insurance"),
            seller: s("acme-media"),
            status: LeadStatus::Sold,
            price_cents: 12000,
            payout_cents: 9600,
            elapsed_us: 412_000,
            bids: Some(7),
            reason: None,
        },
        Record::LeadAnswered {
            lead_id: id.clone(),
            campaign: s("solar"),
            seller: s("blue-leads"),
            status: LeadStatus::Unsold,
            price_cents: 0,
            payout_cents: 0,
            elapsed_us: 1_200_000,
            bids: Some(3),
            reason: Some(s("below_reserve")),
        },
        Record::LeadReceived {
            lead_id: id.clone(),
            seller: s("blue-leads"),
            campaign: s("solar"),
            source: None,
            test: false,
            lead_json: br#"{"lead":{"zip":"77002"}}"#.to_vec(),
            flow: Some(LeadFlow::Ping),
            idempotency_key: Some(s("retry-7f3a")),
        },
        Record::LeadReceived {
            lead_id: id.clone(),
            seller: s("blue-leads"),
            campaign: s("solar"),
            source: None,
            test: false,
            lead_json: br#"{"ping_id":"P1","lead":{"zip":"77002"}}"#.to_vec(),
            flow: Some(LeadFlow::Post),
            idempotency_key: None,
        },
        Record::PingAnswered {
            lead_id: id.clone(),
            campaign: s("solar"),
            seller: s("blue-leads"),
            payout_cents: 9600,
            hold_ms: 30_000,
            held: vec![
                (s("acme-ins"), 12_000, Some(s("b-77"))),
                (s("blue-ins"), 11_000, None),
            ],
            terms: Some(PayoutTerms::ShareBp(8000)),
        },
        Record::PingAnswered {
            lead_id: id.clone(),
            campaign: s("solar"),
            seller: s("blue-leads"),
            payout_cents: 2000,
            hold_ms: 30_000,
            held: vec![(s("acme-ins"), 12_000, None)],
            terms: Some(PayoutTerms::Fixed(2000)),
        },
        Record::PingAnswered {
            lead_id: id.clone(),
            campaign: s("solar"),
            seller: s("blue-leads"),
            payout_cents: 2000,
            hold_ms: 30_000,
            held: vec![(s("acme-ins"), 12_000, None)],
            terms: None,
        },
        Record::PingAnswered {
            lead_id: id.clone(),
            campaign: s("solar"),
            seller: s("blue-leads"),
            payout_cents: 0,
            hold_ms: 0,
            held: Vec::new(),
            terms: None,
        },
        Record::Recovered {
            lead_id: id.clone(),
            kind: Unsettled::PostUnanswered,
        },
        Record::Recovered {
            lead_id: id.clone(),
            kind: Unsettled::SellerUnanswered,
        },
        // Written before the answer's bids and reason were journaled.
        Record::LeadAnswered {
            lead_id: id.clone(),
            campaign: s("solar"),
            seller: s("blue-leads"),
            status: LeadStatus::Unsold,
            price_cents: 0,
            payout_cents: 0,
            elapsed_us: 1_200_000,
            bids: None,
            reason: None,
        },
        // A test lead's sale.
        Record::Sale {
            lead_id: id,
            campaign: s("auto-insurance"),
            seller: s("acme-media"),
            buyer: s("blue-ins"),
            price_cents: 5000,
            payout_cents: 4000,
            test: true,
        },
    ]
}

/// A record whose frame is exactly 256 bytes when `i` fits in 6 digits.
fn ping_record(i: usize) -> Record {
    Record::PingSent {
        lead_id: lead_id(i),
        buyer: "b".repeat(256 - 24 - 1 - 2 - 26 - 2),
    }
}

fn append(j: &Journal, ts: u64, r: &Record) -> Position {
    r.with_ref(|rr| j.append(ts, rr)).unwrap()
}

fn records(dir: &Path) -> Vec<Record> {
    read_all(dir)
        .unwrap()
        .into_iter()
        .map(|e| e.record)
        .collect()
}

/// Write `n` varied records (sizes differ, so padding differs) and return them with the
/// byte range of each frame (segment 0 only: the segment must be large enough).
fn write_sample(dir: &Path, n: usize) -> (Vec<Record>, Vec<(u64, u64)>) {
    let (j, _) = Journal::open(opts(dir, MIN_SEGMENT_BYTES)).unwrap();
    let all = every_record();
    let mut recs = Vec::new();
    let mut frames = Vec::new();
    for i in 0..n {
        let r = all[i % all.len()].clone();
        let p = append(&j, T0 + i as u64, &r);
        assert_eq!(p.segment, 0);
        let len = r.with_ref(|rr| frame_len(rr.encoded_len().unwrap() as u64));
        frames.push((p.offset, p.offset + len));
        recs.push(r);
    }
    drop(j);
    (recs, frames)
}

fn seg0(dir: &Path) -> PathBuf {
    segment_path(dir, 0)
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn read_at(path: &Path, at: u64, n: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; n];
    f.read_exact_at(&mut b, at).unwrap();
    b
}

fn cut_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".cut"))
        .collect();
    v.sort();
    v
}

/// The copies recovery kept of segments it cut (`NNN.seg.cut-SECS`), by file name.
fn copy_files(dir: &Path) -> Vec<String> {
    cut_files(dir)
        .into_iter()
        .filter(|n| n.contains(".seg.cut-"))
        .collect()
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn sale_record(i: usize) -> Record {
    Record::Sale {
        lead_id: lead_id(i),
        campaign: "auto-insurance".into(),
        seller: "acme-media".into(),
        buyer: "acme-ins".into(),
        price_cents: 1000 + i as i64,
        payout_cents: 800,
        test: false,
    }
}

/// Every record recovery set aside, stamped at or after `since`, and what the replay found.
fn set_aside(dir: &Path, since: u64) -> (Vec<Entry>, SetAsideReport) {
    let mut got = Vec::new();
    let report = replay_set_aside(dir, since, |e| got.push(e.clone())).unwrap();
    (got, report)
}

fn seg_files(dir: &Path) -> usize {
    super::segment::list_segments(dir).unwrap().len()
}

/// A raw, valid frame of any type code (for records this build does not know).
fn raw_frame(type_code: u8, ts: u64, payload: &[u8]) -> Vec<u8> {
    let len = frame_len(payload.len() as u64);
    let pad = (len - 24 - payload.len() as u64) as u8;
    let mut f = vec![0u8; len as usize];
    f[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    f[4..8].copy_from_slice(&COMMIT_MAGIC.to_le_bytes());
    f[8] = type_code;
    f[9] = pad;
    f[16..24].copy_from_slice(&ts.to_le_bytes());
    f[24..24 + payload.len()].copy_from_slice(payload);
    let mut head = [0u8; 16];
    head[0..4].copy_from_slice(&f[0..4]);
    head[4..8].copy_from_slice(&f[8..12]);
    head[8..16].copy_from_slice(&f[16..24]);
    let crc = frame_crc(&head, payload);
    f[12..16].copy_from_slice(&crc.to_le_bytes());
    f
}

// ---------------------------------------------------------------------------------------------
// Codec

#[test]
fn every_record_type_round_trips_through_the_codec() {
    for r in every_record() {
        let bytes = r.with_ref(|rr| rr.to_bytes()).unwrap();
        assert_eq!(bytes[0], PAYLOAD_VERSION);
        let back = Record::decode(r.record_type() as u8, &bytes).unwrap();
        assert_eq!(back, r);
        // Borrowed and owned forms agree.
        assert_eq!(r.with_ref(|rr| rr.to_record()), r);
    }
}

/// Every record's lead id is read from the head of its payload without decoding it, which a
/// lookup relies on to pass over other leads' records.
#[test]
fn every_records_lead_id_is_at_the_head_of_its_payload() {
    for r in every_record() {
        let bytes = r.with_ref(|rr| rr.to_bytes()).unwrap();
        assert_eq!(
            record::payload_lead_id(&bytes),
            Some(r.lead_id().as_bytes()),
            "{r:?}"
        );
    }
    // Another version's layout is not guessed at.
    assert_eq!(
        record::payload_lead_id(&[PAYLOAD_VERSION + 1, 2, 0, b'a', b'b']),
        None
    );
    assert_eq!(
        record::payload_lead_id(&[PAYLOAD_VERSION, 9, 0, b'a']),
        None
    );
    assert_eq!(record::payload_lead_id(&[]), None);
}

/// A reader of one lead yields exactly that lead's records, in order, and ends at the first
/// record past its stop, whoever's it is.
#[test]
fn a_reader_of_one_lead_yields_its_records_and_stops_where_told() {
    let dir = TempDir::new("only-lead");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    for i in 0..300 {
        append(&j, T0 + i as u64, &ping_record(i % 7));
    }
    drop(j);
    let all = read_all(dir.path()).unwrap();
    let want: Vec<_> = all
        .iter()
        .filter(|e| e.record.lead_id() == lead_id(3))
        .map(|e| (e.pos, e.ts_us))
        .collect();
    let got: Vec<_> = Reader::open(dir.path())
        .unwrap()
        .only_lead(&lead_id(3))
        .map(|e| e.map(|e| (e.pos, e.ts_us)).unwrap())
        .collect();
    assert_eq!(got.len(), 43);
    assert_eq!(got, want);
    let mut r = Reader::open(dir.path()).unwrap().only_lead(&lead_id(3));
    r.stop_after(T0 + 100);
    let stopped: Vec<u64> = r.map(|e| e.unwrap().ts_us).collect();
    assert_eq!(
        stopped,
        (3..=100).step_by(7).map(|i| T0 + i).collect::<Vec<_>>()
    );
}

#[test]
fn decoding_garbage_never_panics_and_truncation_is_an_error() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for code in 0..=12u8 {
        for len in 0..300usize {
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if let Some(b) = buf.first_mut() {
                *b = PAYLOAD_VERSION;
            }
            let _ = Record::decode(code, &buf);
        }
    }
    for r in every_record() {
        let bytes = r.with_ref(|rr| rr.to_bytes()).unwrap();
        for cut in 0..bytes.len() {
            if let Record::LeadReceived {
                idempotency_key: Some(_),
                ..
            } = &r
            {
                let mut older = r.clone();
                if let Record::LeadReceived {
                    idempotency_key, ..
                } = &mut older
                {
                    *idempotency_key = None;
                }
                let older_len = older.with_ref(|rr| rr.to_bytes()).unwrap().len();
                if cut == older_len {
                    // Without its key it reads as a record written before the field.
                    let back = Record::decode(r.record_type() as u8, &bytes[..cut]).unwrap();
                    assert_eq!(back, older);
                    continue;
                }
                if cut == older_len - 1 {
                    // Without its flow too, as one written before both.
                    let back = Record::decode(r.record_type() as u8, &bytes[..cut]).unwrap();
                    assert!(matches!(
                        back,
                        Record::LeadReceived {
                            flow: None,
                            idempotency_key: None,
                            ..
                        }
                    ));
                    continue;
                }
            } else if let Record::LeadReceived { flow: Some(_), .. } = &r {
                if cut == bytes.len() - 1 {
                    // Without its last field it reads as a record written before the field.
                    let back = Record::decode(r.record_type() as u8, &bytes[..cut]).unwrap();
                    assert!(matches!(back, Record::LeadReceived { flow: None, .. }));
                    continue;
                }
            }
            if let Record::Rejected { .. } = &r {
                let mut older = r.clone();
                if let Record::Rejected { message, .. } = &mut older {
                    *message = None;
                }
                // Less the absent message's one byte: a record written before the field.
                if cut == older.with_ref(|rr| rr.to_bytes()).unwrap().len() - 1 {
                    let back = Record::decode(r.record_type() as u8, &bytes[..cut]).unwrap();
                    assert_eq!(back, older);
                    continue;
                }
            }
            if let Record::Sale { test: true, .. } = &r {
                if cut == bytes.len() - 1 {
                    // Without its flag it reads as a real sale: the flag is written last.
                    let back = Record::decode(r.record_type() as u8, &bytes[..cut]).unwrap();
                    assert!(matches!(back, Record::Sale { test: false, .. }));
                    continue;
                }
            }
            if let Record::LeadAnswered { bids: Some(_), .. } = &r {
                let mut older = r.clone();
                if let Record::LeadAnswered { bids, reason, .. } = &mut older {
                    (*bids, *reason) = (None, None);
                }
                if cut == older.with_ref(|rr| rr.to_bytes()).unwrap().len() {
                    // Without its answer's bids and reason it reads as a record from before.
                    let back = Record::decode(r.record_type() as u8, &bytes[..cut]).unwrap();
                    assert_eq!(back, older);
                    continue;
                }
            }
            if let Record::PingAnswered { terms: Some(_), .. } = &r {
                if cut == bytes.len() - 9 {
                    let back = Record::decode(r.record_type() as u8, &bytes[..cut]).unwrap();
                    assert!(matches!(back, Record::PingAnswered { terms: None, .. }));
                    continue;
                }
            }
            assert!(
                Record::decode(r.record_type() as u8, &bytes[..cut]).is_err(),
                "{r:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn unknown_types_and_newer_versions_are_reported_as_newer() {
    assert!(Record::decode(200, &[1, 2, 3]).unwrap_err().is_newer());
    assert!(
        Record::decode(RecordType::PingSent as u8, &[PAYLOAD_VERSION + 1, 0, 0])
            .unwrap_err()
            .is_newer()
    );
    assert!(
        !Record::decode(RecordType::PingSent as u8, &[PAYLOAD_VERSION, 9])
            .unwrap_err()
            .is_newer()
    );
}

#[test]
fn oversized_fields_are_refused_before_touching_the_journal() {
    let dir = TempDir::new("oversize");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    let long = "x".repeat(70_000);
    let r = RecordRef::PingSent {
        lead_id: "L",
        buyer: &long,
    };
    assert!(matches!(
        j.append(T0, &r),
        Err(JournalError::FieldTooLong { field: "buyer", .. })
    ));
    let big = vec![b' '; 2 * 1024 * 1024];
    let r = RecordRef::LeadReceived {
        lead_id: "L",
        seller: "s",
        campaign: "c",
        source: None,
        test: false,
        lead_json: &big,
        flow: Some(LeadFlow::Lead),
        idempotency_key: None,
    };
    assert!(matches!(
        j.append(T0, &r),
        Err(JournalError::RecordTooLarge { .. })
    ));
    append(&j, T0, &ping_record(1));
    drop(j);
    assert_eq!(records(dir.path()), vec![ping_record(1)]);
}

// ---------------------------------------------------------------------------------------------
// Appending, reopening, rotation, retention

#[test]
fn appended_records_read_back_in_order_with_their_timestamps() {
    let dir = TempDir::new("basic");
    let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.created, Some(0));
    assert_eq!(report.records, 0);
    let all = every_record();
    let mut positions = Vec::new();
    for (i, r) in all.iter().enumerate() {
        positions.push(append(&j, T0 + i as u64, r));
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    drop(j);
    let entries = read_all(dir.path()).unwrap();
    assert_eq!(entries.len(), all.len());
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.record, all[i]);
        assert_eq!(e.ts_us, T0 + i as u64);
        assert_eq!(e.pos, positions[i]);
    }
    assert!(verify(dir.path()).unwrap().intact());
}

#[test]
fn reopening_after_a_clean_close_continues_appending() {
    let dir = TempDir::new("reopen");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    for i in 0..10 {
        append(&j, T0, &ping_record(i));
    }
    let end = j.tail();
    drop(j);
    let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.records, 10);
    assert_eq!(report.cut, None);
    assert_eq!(report.tail, end);
    for i in 10..20 {
        let p = append(&j, T0, &ping_record(i));
        assert!(p >= end);
    }
    drop(j);
    let expect: Vec<Record> = (0..20).map(ping_record).collect();
    assert_eq!(records(dir.path()), expect);
}

#[test]
fn a_second_writer_is_locked_out() {
    let dir = TempDir::new("lock");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    assert!(matches!(
        Journal::open(opts(dir.path(), 1 << 20)),
        Err(JournalError::Locked(_))
    ));
    // Nor does deleting the LOCK file let one in: the directory itself is locked.
    std::fs::remove_file(dir.path().join(super::segment::LOCK_FILE)).unwrap();
    assert!(matches!(
        Journal::open(opts(dir.path(), 1 << 20)),
        Err(JournalError::Locked(_))
    ));
    drop(j);
    assert!(Journal::open(opts(dir.path(), 1 << 20)).is_ok());
}

#[test]
fn rotation_spreads_records_over_sealed_segments_and_loses_none() {
    let dir = TempDir::new("rotate");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let n = 1500; // ~384 KB of 256-byte frames: six or more 64 KiB segments
    for i in 0..n {
        append(&j, T0 + i as u64, &ping_record(i));
    }
    let last = j.tail();
    drop(j);
    let segs = seg_files(dir.path());
    assert!(segs >= 6, "only {segs} segments");
    assert_eq!(last.segment as usize, segs - 1);
    let expect: Vec<Record> = (0..n).map(ping_record).collect();
    assert_eq!(records(dir.path()), expect);
    // Every segment but the last ends with the sentinel.
    for seq in 0..segs as u64 - 1 {
        let bytes = std::fs::read(segment_path(dir.path(), seq)).unwrap();
        let mut off = SEGMENT_HEADER_BYTES;
        loop {
            match read_frame(&bytes, off) {
                Frame::Record { len, .. } => off += len,
                Frame::Sealed => break,
                other => panic!("segment {seq} at {off}: {other:?}"),
            }
        }
    }
    // Reopening continues in the last segment.
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(report.records, n as u64);
    assert_eq!(report.tail.segment, last.segment);
    assert!(report.sealed.is_empty());
    drop(j);
}

/// Waits up to 5 s for `cond`.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !cond() {
        assert!(t.elapsed() < Duration::from_secs(5), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The next segment is made ahead of need, its blocks reserved, and a rotation renames it into
/// place: the segment that follows is that very file, and another spare follows it.
#[test]
fn rotation_takes_the_spare_made_ahead_and_another_follows() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("spare");
    let spare = dir.path().join(super::segment::SPARE_FILE);
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    eventually("a spare is made", || j.spare_ready());
    let meta = std::fs::metadata(&spare).unwrap();
    assert_eq!(meta.len(), MIN_SEGMENT_BYTES);
    assert!(
        meta.blocks() * 512 >= MIN_SEGMENT_BYTES,
        "the spare's blocks are reserved: {} blocks",
        meta.blocks()
    );
    let inode = meta.ino();
    let mut i = 0;
    while j.tail().segment == 0 {
        append(&j, T0 + i as u64, &ping_record(i));
        i += 1;
    }
    assert_eq!(
        std::fs::metadata(segment_path(dir.path(), 1))
            .unwrap()
            .ino(),
        inode,
        "segment 1 is the spare renamed"
    );
    eventually("the next spare is made", || j.spare_ready());
    assert!(j.accepts_leads());
    drop(j);
    // Every record reads back; the spare is no part of the journal and is kept for the next
    // start, which takes it over.
    let expect: Vec<Record> = (0..i).map(ping_record).collect();
    assert_eq!(records(dir.path()), expect);
    assert!(spare.exists());
    let inode = std::fs::metadata(&spare).unwrap().ino();
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(report.records, i as u64);
    eventually("the spare is taken over", || j.spare_ready());
    assert_eq!(std::fs::metadata(&spare).unwrap().ino(), inode);
    drop(j);
    // One of another size is made anew at the size configured.
    let (j, _) = Journal::open(opts(dir.path(), 2 * MIN_SEGMENT_BYTES)).unwrap();
    eventually("the spare is resized", || j.spare_ready());
    assert_eq!(
        std::fs::metadata(&spare).unwrap().len(),
        2 * MIN_SEGMENT_BYTES
    );
    drop(j);
}

/// Whether `verify` found a segment file whose size is not its header's.
fn resized(v: &VerifyReport) -> bool {
    matches!(
        v.damage.as_ref().map(|d| d.kind),
        Some(DamageKind::SizeChanged { .. })
    )
}

/// Forty ping records in one 1 MiB segment, the journal closed: where each record ends.
fn forty_pings(dir: &Path) -> Vec<u64> {
    let (j, _) = Journal::open(opts(dir, 1 << 20)).unwrap();
    let mut ends = Vec::new();
    for i in 0..40 {
        append(&j, T0 + i as u64, &ping_record(i));
        ends.push(j.tail().offset);
    }
    ends
}

/// Set segment `seq`'s file to `len` bytes, as a copy interrupted or `truncate` would.
fn resize_segment(dir: &Path, seq: u64, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(dir, seq))
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The newest segment's file cut short (the journal never resizes one; a copy interrupted, or
/// a test making a torn tail, does): the records up to the cut are whole, `verify` calls it a
/// torn tail and the journal intact, and recovery puts the file back to its size and appends
/// after the last whole record, with no copy. An older segment cut short lost the records
/// between the cut and its sentinel: damage, and a copy is kept.
#[test]
fn the_newest_segment_cut_short_is_a_torn_tail_an_older_one_damage() {
    for cut_mid_record in [true, false] {
        let dir = TempDir::new("cut-short");
        let ends = forty_pings(dir.path());
        let seg = segment_path(dir.path(), 0);
        // In the middle of the 21st record, or exactly at its start.
        let at = if cut_mid_record {
            ends[19] + 40
        } else {
            ends[19]
        };
        resize_segment(dir.path(), 0, at);
        let v = verify(dir.path()).unwrap();
        assert!(v.intact(), "{v}");
        assert_eq!(v.records, 20, "{v}");
        let d = v.damage.clone().expect("the cut is reported");
        assert!(matches!(d.kind, DamageKind::SizeChanged { .. }), "{v}");
        assert_eq!(d.at.offset, ends[19], "{v}");
        assert!(v.to_string().contains("torn tail"), "{v}");
        let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
        let cut = report.cut.clone().expect("a cut");
        assert!(cut.torn_tail && cut.copied_to.is_none(), "{report}");
        assert!(report.to_string().contains("(torn tail)"), "{report}");
        assert!(cut_files(dir.path()).is_empty());
        append(&j, T0, &ping_record(99));
        drop(j);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), 1 << 20);
        let mut expect: Vec<Record> = (0..20).map(ping_record).collect();
        expect.push(ping_record(99));
        assert_eq!(records(dir.path()), expect);
        let (_j, again) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
        assert!(again.cut.is_none(), "{again}");
    }

    let dir = TempDir::new("cut-short-older");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    fill_to_segment(&j, 1);
    drop(j);
    let seg = segment_path(dir.path(), 0);
    resize_segment(dir.path(), 0, MIN_SEGMENT_BYTES / 2);
    let v = verify(dir.path()).unwrap();
    assert!(!v.intact(), "{v}");
    assert!(resized(&v), "{v}");
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let cut = report.cut.clone().expect("a cut");
    assert!(!cut.torn_tail && cut.copied_to.is_some(), "{report}");
    drop(j);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), MIN_SEGMENT_BYTES);
}

/// A reader (`export`, `show`, a lookup) meets a segment cut short as `verify` does, wherever
/// the cut falls: an older one is damage, named as the cut, even cut exactly between two
/// records, where every frame before the end reads whole and the end looks like the end; the
/// newest one cut so is a torn tail, its records up to the cut read and nothing more.
#[test]
fn a_reader_finds_a_segment_cut_between_two_records() {
    for cut_mid_record in [false, true] {
        let dir = TempDir::new("cut-between");
        let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
        let mut ends = Vec::new();
        let mut i = 0;
        while j.tail().segment == 0 {
            append(&j, T0 + i as u64, &ping_record(i));
            ends.push(j.tail());
            i += 1;
        }
        for k in 0..5 {
            append(&j, T0 + (i + k) as u64, &ping_record(i + k));
        }
        drop(j);
        // Segment 0, sealed, cut where its 20th record ends (and its 21st begins), or 40
        // bytes into the 21st.
        let at = ends[19].offset + if cut_mid_record { 40 } else { 0 };
        resize_segment(dir.path(), 0, at);
        let mut reader = Reader::open(dir.path()).unwrap();
        let read: Vec<_> = reader
            .by_ref()
            .take(20)
            .map(|e| e.unwrap().record)
            .collect();
        assert_eq!(read, (0..20).map(ping_record).collect::<Vec<_>>());
        match reader.next() {
            Some(Err(JournalError::Damaged { at: pos, kind })) => {
                assert!(matches!(kind, DamageKind::SizeChanged { .. }), "{kind}");
                assert_eq!(pos.offset, ends[19].offset);
            }
            other => panic!("cut at {at}: {other:?}"),
        }
        assert!(!verify(dir.path()).unwrap().intact());
    }

    // The newest segment cut between two records: a torn tail, read to the cut.
    let dir = TempDir::new("cut-between-newest");
    let ends = forty_pings(dir.path());
    resize_segment(dir.path(), 0, ends[19]);
    assert_eq!(
        records(dir.path()),
        (0..20).map(ping_record).collect::<Vec<_>>()
    );
    assert!(verify(dir.path()).unwrap().intact());
    // Cut inside a record: a follower reads to the cut and waits there, as on a torn tail.
    resize_segment(dir.path(), 0, ends[18] + 40);
    let mut f = Follower::from_segment(dir.path(), 0);
    let mut seen = Vec::new();
    assert_eq!(f.poll(&mut |e| seen.push(e.record)).unwrap(), 19);
    assert_eq!(f.poll(&mut |e| seen.push(e.record)).unwrap(), 0);
    // A start sets the file back to its size and appends from the cut: followed from there.
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    for i in 100..105 {
        append(&j, T0 + i as u64, &ping_record(i));
    }
    drop(j);
    assert_eq!(f.poll(&mut |e| seen.push(e.record)).unwrap(), 5);
    let expect: Vec<Record> = (0..19).chain(100..105).map(ping_record).collect();
    assert_eq!(seen, expect);

    // Cut behind a follower that had read every record, and written again from the cut by a
    // start: the follower finds its place by the records' stamps, and hands out exactly the
    // new records, not the middle of one.
    let dir = TempDir::new("cut-behind-follower");
    let ends = forty_pings(dir.path());
    for cut_mid_record in [false, true] {
        let mut f = Follower::from_segment(dir.path(), 0);
        let mut seen = Vec::new();
        let before = f.poll(&mut |e| seen.push(e.record)).unwrap();
        resize_segment(
            dir.path(),
            0,
            ends[before - 11] + if cut_mid_record { 40 } else { 0 },
        );
        let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
        for i in 0..3 {
            append(
                &j,
                T0 + 10_000 * (1 + u64::from(cut_mid_record)) + i as u64,
                &ping_record(1000 + before + i),
            );
        }
        drop(j);
        seen.clear();
        f.poll(&mut |e| seen.push(e.record)).unwrap();
        let expect: Vec<Record> = (0..3).map(|i| ping_record(1000 + before + i)).collect();
        assert_eq!(seen, expect, "cut mid-record: {cut_mid_record}");
    }
}

/// An older segment grown (bytes appended past its header's size): bytes that are not zero
/// are damage to readers as to `verify`; zeroes appended change nothing and are not.
#[test]
fn a_reader_finds_an_older_segment_grown_by_bytes_not_zero() {
    for (fill, damaged) in [(0u8, false), (7u8, true)] {
        let dir = TempDir::new("grown");
        let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
        let n = fill_to_segment(&j, 1);
        append(&j, T0 + n as u64, &ping_record(n));
        drop(j);
        let seg = segment_path(dir.path(), 0);
        let mut file = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        std::io::Write::write_all(&mut file, &[fill; 100]).unwrap();
        drop(file);
        let v = verify(dir.path()).unwrap();
        assert_eq!(!v.intact(), damaged, "{v}");
        match read_all(dir.path()) {
            Ok(all) => assert!(!damaged && all.len() == n + 1, "{} read", all.len()),
            Err(JournalError::Damaged { at, kind }) => {
                assert!(damaged, "{kind}");
                assert!(matches!(kind, DamageKind::SizeChanged { .. }), "{kind}");
                assert_eq!(at.offset, MIN_SEGMENT_BYTES);
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A segment missing between two that are there (retention only removes the oldest): damage;
/// the segments after the gap are set aside, and appends go on after the one before it.
#[test]
fn a_missing_segment_between_two_is_damage() {
    let dir = TempDir::new("gap");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let mut i = 0;
    while j.tail().segment < 2 {
        append(&j, T0 + i as u64, &ping_record(i));
        i += 1;
    }
    drop(j);
    let before_gap = Reader::open(dir.path())
        .unwrap()
        .take_while(|e| e.as_ref().is_ok_and(|e| e.pos.segment == 0))
        .count();
    assert!(before_gap > 0);
    std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
    let v = verify(dir.path()).unwrap();
    assert!(!v.intact(), "{v}");
    assert_eq!(
        v.damage.as_ref().map(|d| d.kind),
        Some(DamageKind::MissingSegment(1)),
        "{v}"
    );
    // Readers stop at the gap too: export prints the records before it and fails there,
    // rather than go on past a segment's worth of lost records.
    let (code, out, err) = run_cli(JournalCmd::Export {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert_eq!(out.lines().count(), before_gap);
    assert!(err.contains("segment 1 is missing"), "{err}");
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let cut = report.cut.clone().expect("a cut");
    assert_eq!(cut.moved_aside.len(), 1, "{report}");
    append(&j, T0 + i as u64, &ping_record(i));
    drop(j);
    assert!(verify(dir.path()).unwrap().intact());
}

/// Fill `j` until appends go to segment `seg`, and wait for `HEAD` to name it.
fn fill_to_segment(j: &Journal, seg: u64) -> usize {
    let mut i = 0;
    while j.tail().segment < seg {
        append(j, T0 + i as u64, &ping_record(i));
        i += 1;
    }
    eventually("HEAD names the newest segment", || j.head() == Some(seg));
    i
}

/// The newest segment deleted leaves no gap, but `HEAD` still names it: `verify` calls the
/// journal damaged and a start is refused, saying what to do; with the file back, the journal
/// opens with every record. Removing `HEAD` accepts the loss.
#[test]
fn a_deleted_newest_segment_is_found_and_stops_a_start() {
    let dir = TempDir::new("newest");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let n = fill_to_segment(&j, 2);
    drop(j);
    assert_eq!(super::head::read_head(dir.path()).unwrap(), Some(2));
    let newest = segment_path(dir.path(), 2);
    let kept = std::fs::read(&newest).unwrap();
    std::fs::remove_file(&newest).unwrap();

    let v = verify(dir.path()).unwrap();
    assert!(!v.intact(), "{v}");
    assert_eq!(
        v.damage.as_ref().map(|d| d.kind),
        Some(DamageKind::NewestMissing { first: 2, head: 2 }),
        "{v}"
    );
    // export prints every record left and then fails, naming the missing segment.
    let (code, out, err) = run_cli(JournalCmd::Export {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert!(out.lines().count() > 0);
    assert!(err.contains("segment 2"), "{err}");
    // verify says the file's records are lost, not that a power loss took a record.
    let (code, _, err) = run_cli(JournalCmd::Verify {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the missing file's records are lost unless it is restored")
            && !err.contains("power loss"),
        "{err}"
    );
    // So does a HEAD file that is not one the exchange wrote.
    let head = dir.path().join(super::head::HEAD_FILE);
    let head_text = std::fs::read(&head).unwrap();
    std::fs::write(&head, "hello world\n").unwrap();
    let (code, _, err) = run_cli(JournalCmd::Export {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HEAD"), "{err}");
    std::fs::write(&head, head_text).unwrap();
    let text = v.to_string();
    assert!(
        text.contains("DAMAGED") && text.contains("segment 2"),
        "{text}"
    );

    let e = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES))
        .err()
        .expect("refused");
    assert!(
        matches!(
            e,
            JournalError::NewestMissing {
                first: 2,
                head: 2,
                ..
            }
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("segment 2 is missing") && text.contains("HEAD"),
        "{text}"
    );
    // Refusing changed nothing: no segment was made in its place.
    assert_eq!(
        super::segment::list_segments(dir.path()).unwrap(),
        vec![0, 1]
    );

    // Put back, the journal opens with all its records.
    std::fs::write(&newest, &kept).unwrap();
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert!(report.cut.is_none(), "{report}");
    drop(j);
    assert_eq!(records(dir.path()).len(), n);

    // Gone again, and the operator accepts the loss by removing HEAD.
    std::fs::remove_file(&newest).unwrap();
    assert!(Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).is_err());
    std::fs::remove_file(dir.path().join(super::head::HEAD_FILE)).unwrap();
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(j.tail().segment, 1);
    assert_eq!(j.head(), Some(1));
    drop(j);
    assert!(verify(dir.path()).unwrap().intact());
}

/// The oldest segment deleted before retention would leaves no gap either, but `HEAD` names
/// it as kept: `verify` and `export` call the journal damaged and a start is refused, saying
/// what to do; with the file back, the journal opens with every record. Removing `HEAD`
/// accepts the loss.
#[test]
fn a_deleted_oldest_segment_is_found_and_stops_a_start() {
    let dir = TempDir::new("oldest");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let n = fill_to_segment(&j, 3);
    drop(j);
    let marker = super::head::read_marker(dir.path()).unwrap();
    assert_eq!(
        marker,
        Some(super::head::Head {
            newest: 3,
            oldest: Some(0)
        })
    );
    let oldest = segment_path(dir.path(), 0);
    let kept = std::fs::read(&oldest).unwrap();
    std::fs::remove_file(&oldest).unwrap();

    let v = verify(dir.path()).unwrap();
    assert!(!v.intact(), "{v}");
    assert_eq!(
        v.damage.as_ref().map(|d| d.kind),
        Some(DamageKind::OldestMissing { first: 0, last: 0 }),
        "{v}"
    );
    let (code, _, err) = run_cli(JournalCmd::Verify {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the missing file's records are lost unless it is restored")
            && err.contains("segment 0"),
        "{err}"
    );
    // export fails before printing a record: what it would print is not the journal.
    let (code, out, err) = run_cli(JournalCmd::Export {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert_eq!(out.lines().count(), 0, "{out}");
    assert!(err.contains("segment 0"), "{err}");
    // show finds a lead in the segments left, and warns of the loss.
    let (code, out, err) = run_cli(JournalCmd::Show {
        lead_id: lead_id(n - 1),
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("ping_sent"), "{out}");
    assert!(
        err.contains("segment 0, the oldest kept") && err.contains("may be incomplete"),
        "{err}"
    );
    // A lead of the missing segment is not found, and the loss is said.
    let (code, out, err) = run_cli(JournalCmd::Show {
        lead_id: lead_id(0),
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("not found") && err.contains("segment 0, the oldest kept"),
        "{err}"
    );

    let e = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES))
        .err()
        .expect("refused");
    assert!(
        matches!(
            e,
            JournalError::OldestMissing {
                first: 0,
                last: 0,
                ..
            }
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("segment 0 is missing") && text.contains("HEAD"),
        "{text}"
    );
    assert_eq!(
        super::segment::list_segments(dir.path()).unwrap(),
        vec![1, 2, 3]
    );

    // Two gone are named as a range.
    let second = segment_path(dir.path(), 1);
    let kept_second = std::fs::read(&second).unwrap();
    std::fs::remove_file(&second).unwrap();
    let e = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("segments 0 to 1 are missing"), "{e}");

    // Put back, the journal opens with all its records.
    std::fs::write(&oldest, &kept).unwrap();
    std::fs::write(&second, &kept_second).unwrap();
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert!(report.cut.is_none(), "{report}");
    drop(j);
    assert_eq!(records(dir.path()).len(), n);

    // Gone again, and the operator accepts the loss by removing HEAD: the next `HEAD` names
    // what is left.
    std::fs::remove_file(&oldest).unwrap();
    assert!(Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).is_err());
    std::fs::remove_file(dir.path().join(super::head::HEAD_FILE)).unwrap();
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    drop(j);
    assert_eq!(
        super::head::read_marker(dir.path())
            .unwrap()
            .and_then(|h| h.oldest),
        Some(1)
    );
    assert!(verify(dir.path()).unwrap().intact());
}

/// What retention does to a journal of segments 0 to 3 keeping 2 on: `HEAD` names 2 the
/// oldest kept, then 0 and 1 are removed.
fn retain_from_segment_2(dir: &Path) {
    super::head::write_marker(
        dir,
        super::head::Head {
            newest: 3,
            oldest: Some(2),
        },
        false,
    )
    .unwrap();
    for seg in [0, 1] {
        std::fs::remove_file(segment_path(dir, seg)).unwrap();
    }
}

/// A reader beside a running exchange: the oldest segments it listed, removed by retention
/// before it opened them (`HEAD` names a newer oldest), are passed over; one gone that `HEAD`
/// still names as kept is an error.
#[test]
fn a_reader_passes_over_segments_retention_removed_after_its_listing() {
    let dir = TempDir::new("reader-retention");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    fill_to_segment(&j, 3);
    drop(j);
    let in_kept: usize = read_all(dir.path())
        .unwrap()
        .iter()
        .filter(|e| e.pos.segment >= 2)
        .count();
    let reader = Reader::open(dir.path()).unwrap();
    // As retention does: `HEAD` first, then the removals.
    retain_from_segment_2(dir.path());
    let read: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(read.len(), in_kept);
    assert!(verify(dir.path()).unwrap().intact());

    // Gone without retention's word: an error.
    let reader = Reader::open(dir.path()).unwrap();
    std::fs::remove_file(segment_path(dir.path(), 2)).unwrap();
    assert!(reader.collect::<Result<Vec<_>, _>>().is_err());
}

/// A segment retention removes after a reader has read records before it is a gap in what
/// that reader reads: said as retention's doing, not as a bare missing file.
#[test]
fn a_segment_retention_removes_under_a_reader_midway_is_said_to_be_so() {
    let dir = TempDir::new("reader-retention-midway");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    fill_to_segment(&j, 3);
    drop(j);
    let mut reader = Reader::open(dir.path()).unwrap();
    let first = reader.next().unwrap().unwrap();
    assert_eq!(first.pos.segment, 0);
    retain_from_segment_2(dir.path());
    let err = reader
        .find_map(Result::err)
        .expect("the gap is an error")
        .to_string();
    assert!(err.contains("removed by the exchange's retention"), "{err}");
    assert!(
        err.contains(&segment_path(dir.path(), 1).display().to_string()),
        "{err}"
    );
}

/// Retention names the new oldest segment before it removes one: segments older than `HEAD`
/// names (a crash between the two) are harmless, and removed on the next start.
#[test]
fn segments_older_than_head_names_are_left_by_an_interrupted_retention() {
    let dir = TempDir::new("oldest-lag");
    let o = JournalOptions {
        retain_segments: 1,
        ..opts(dir.path(), MIN_SEGMENT_BYTES)
    };
    let (j, _) = Journal::open(o.clone()).unwrap();
    fill_to_segment(&j, 3);
    drop(j);
    super::head::write_marker(
        dir.path(),
        super::head::Head {
            newest: 3,
            oldest: Some(2),
        },
        false,
    )
    .unwrap();
    assert!(verify(dir.path()).unwrap().intact());
    assert_eq!(
        read_all(dir.path()).unwrap().len(),
        records(dir.path()).len()
    );
    let (j, report) = Journal::open(o).unwrap();
    assert!(report.cut.is_none(), "{report}");
    drop(j);
    // All in one day: retention keeps them all, and `HEAD` names the oldest on disk again.
    assert_eq!(
        super::head::read_marker(dir.path())
            .unwrap()
            .and_then(|h| h.oldest),
        Some(0)
    );

    // A marker naming an oldest newer than its newest, or with lines of its own, is not one
    // the exchange wrote.
    for text in [
        "gavel-journal-head 1\nsegment 3\noldest 4\n",
        "gavel-journal-head 1\nsegment 3\noldest 1\nmore\n",
        "gavel-journal-head 1\nsegment 3\noldest x\n",
    ] {
        std::fs::write(dir.path().join(super::head::HEAD_FILE), text).unwrap();
        assert!(
            matches!(
                super::head::read_marker(dir.path()),
                Err(JournalError::BadHead { .. })
            ),
            "{text}"
        );
    }
}

/// A `HEAD` that cannot be written (a full disk) fails with the error and leaves no side file
/// behind; the `HEAD` before it stays as it was.
#[test]
fn a_head_that_cannot_be_written_leaves_no_side_file() {
    let dir = TempDir::new("head-full");
    head::write_head(dir.path(), 3, true).unwrap();
    // The side file's name leads to a device where every write fails for want of space.
    let partial = dir.path().join("HEAD.partial");
    std::os::unix::fs::symlink("/dev/full", &partial).unwrap();
    let e = head::write_head(dir.path(), 4, true).unwrap_err();
    assert!(e.to_string().contains("write"), "{e}");
    assert!(
        std::fs::symlink_metadata(&partial).is_err(),
        "side file left"
    );
    assert_eq!(head::read_head(dir.path()).unwrap(), Some(3));
}

/// In the durable sync modes `HEAD` is written with its fsyncs, and follows rotations alike.
#[test]
fn head_follows_rotations_in_the_durable_modes() {
    for sync in [
        SyncMode::Always,
        SyncMode::Interval(Duration::from_millis(5)),
    ] {
        let dir = TempDir::new("head-durable");
        let o = JournalOptions {
            sync,
            ..opts(dir.path(), MIN_SEGMENT_BYTES)
        };
        let (j, _) = Journal::open(o.clone()).unwrap();
        assert_eq!(j.head(), Some(0));
        fill_to_segment(&j, 1);
        drop(j);
        std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
        assert!(
            matches!(
                Journal::open(o),
                Err(JournalError::NewestMissing {
                    first: 1,
                    head: 1,
                    ..
                })
            ),
            "{sync:?}"
        );
    }
}

/// Several newest segments gone are named as a range; all of them gone is found too.
#[test]
fn deleted_newest_segments_are_named_as_a_range() {
    let dir = TempDir::new("newest-range");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    fill_to_segment(&j, 3);
    drop(j);
    for seg in [2, 3] {
        std::fs::remove_file(segment_path(dir.path(), seg)).unwrap();
    }
    let e = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("segments 2 to 3 are missing"), "{e}");
    for seg in [0, 1] {
        std::fs::remove_file(segment_path(dir.path(), seg)).unwrap();
    }
    let v = verify(dir.path()).unwrap();
    assert!(!v.intact(), "{v}");
    assert!(Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).is_err());
}

/// `HEAD` lags the newest segment after a crash just after a rotation: harmless, and brought
/// up to date on open. A `HEAD` this build did not write is an error naming the file.
#[test]
fn a_lagging_head_is_accepted_and_a_foreign_one_refused() {
    let dir = TempDir::new("head-lag");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    fill_to_segment(&j, 2);
    drop(j);
    super::head::write_head(dir.path(), 0, false).unwrap();
    assert!(verify(dir.path()).unwrap().intact());
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(j.head(), Some(2));
    drop(j);
    assert_eq!(super::head::read_head(dir.path()).unwrap(), Some(2));

    // Empty, as a crash in `os` mode may leave its renamed write: not checked, written again.
    std::fs::write(dir.path().join(super::head::HEAD_FILE), "").unwrap();
    assert!(verify(dir.path()).unwrap().intact());
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(j.head(), Some(2));
    drop(j);

    std::fs::write(dir.path().join(super::head::HEAD_FILE), "2\n").unwrap();
    let e = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES))
        .err()
        .expect("refused");
    assert!(matches!(e, JournalError::BadHead { .. }), "{e}");
    assert!(e.to_string().contains("HEAD"), "{e}");
    assert!(verify(dir.path()).is_err());
}

/// A cut that sets segments aside lowers `HEAD` with them, so the next start does not take
/// them for lost.
#[test]
fn a_cut_that_sets_the_newest_segments_aside_lowers_head() {
    let dir = TempDir::new("head-cut");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    fill_to_segment(&j, 3);
    drop(j);
    std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(
        report.cut.as_ref().map(|c| c.moved_aside.len()),
        Some(2),
        "{report}"
    );
    assert_eq!(j.head(), Some(0));
    drop(j);
    assert_eq!(super::head::read_head(dir.path()).unwrap(), Some(0));
    let (_j, again) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert!(again.cut.is_none(), "{again}");
}

/// The segment being appended to, deleted while in use: its records would vanish with the
/// process, so new leads are refused at once; the very file put back under its name ends it.
#[test]
fn the_current_segment_deleted_while_in_use_stops_new_leads() {
    let dir = TempDir::new("seg-lost");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    append(&j, T0, &ping_record(0));
    assert!(j.accepts_leads() && !j.segment_lost());
    let seg = segment_path(dir.path(), 0);
    let away = dir.path().join("moved-away");
    std::fs::rename(&seg, &away).unwrap();
    eventually("the loss is noticed", || j.segment_lost());
    assert!(!j.accepts_leads());
    let said = j.background_errors().1.unwrap_or_default();
    assert!(said.contains("deleted or replaced"), "{said}");
    assert!(said.contains("another file"), "{said}");
    // A copy is another file: still lost.
    std::fs::copy(&away, &seg).unwrap();
    std::thread::sleep(super::writer::SPARE_RETRY * 2);
    assert!(j.segment_lost());
    std::fs::rename(&away, &seg).unwrap();
    eventually("the segment is back", || !j.segment_lost());
    assert!(j.accepts_leads());
    // Deleted outright, it has no name left to come back under.
    std::fs::remove_file(&seg).unwrap();
    eventually("the deletion is noticed", || j.segment_lost());
    assert!(!j.accepts_leads());
}

/// The segment being appended to, cut short by something else while mapped: the stores past
/// the cut would raise SIGBUS and kill the process; they go nowhere instead, the loss is
/// noticed and new leads are refused for good (the records past the cut are gone even if the
/// file gets its size back).
#[test]
fn the_current_segment_cut_short_while_in_use_stops_new_leads_and_kills_nothing() {
    let dir = TempDir::new("seg-cut");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    append(&j, T0, &ping_record(0));
    let seg = segment_path(dir.path(), 0);
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(0).unwrap();
    // Every page of these is past the file's end now.
    for i in 1..200 {
        append(&j, T0 + i as u64, &ping_record(i));
    }
    assert!(super::fault::pages_replaced() > 0);
    eventually("the cut is noticed", || j.segment_lost());
    assert!(!j.accepts_leads());
    let last = j.background_errors().1.unwrap_or_default();
    assert!(last.contains("cut short"), "{last}");
    file.set_len(1 << 20).unwrap();
    std::thread::sleep(super::writer::SPARE_RETRY * 2);
    assert!(j.segment_lost() && !j.accepts_leads());
}

/// `HEAD` deleted or changed while the journal is open is written again: the next start still
/// finds a deleted newest segment.
#[test]
fn head_deleted_or_changed_while_in_use_is_written_again() {
    let dir = TempDir::new("head-deleted");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    fill_to_segment(&j, 1);
    let head = dir.path().join(super::head::HEAD_FILE);
    let written = std::fs::read_to_string(&head).unwrap();
    std::fs::remove_file(&head).unwrap();
    eventually("HEAD is back", || head.exists());
    assert_eq!(j.head(), Some(1));
    assert_eq!(std::fs::read_to_string(&head).unwrap(), written);
    // Replaced by what no start could read, or by another segment's marker: written again.
    for other in [
        "garbage\n".to_string(),
        written.replace("segment 1", "segment 0"),
    ] {
        std::fs::write(&head, other).unwrap();
        eventually("HEAD is written again", || {
            std::fs::read_to_string(&head).is_ok_and(|h| h == written)
        });
    }
    drop(j);
    std::fs::remove_file(segment_path(dir.path(), 1)).unwrap();
    assert!(Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).is_err());
}

/// The next segment's file deleted (or replaced) while the journal is open is made again, so
/// the next rotation still needs no disk space and finds its file.
#[test]
fn a_spare_deleted_while_in_use_is_made_again() {
    use std::os::unix::fs::MetadataExt;
    let dir = TempDir::new("spare-deleted");
    let spare = dir.path().join(super::segment::SPARE_FILE);
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    eventually("a spare is made", || j.spare_ready());
    std::fs::remove_file(&spare).unwrap();
    eventually("the spare is made again", || {
        std::fs::metadata(&spare).is_ok_and(|m| m.len() == MIN_SEGMENT_BYTES)
    });
    eventually("it is ready", || j.spare_ready());
    let again = std::fs::metadata(&spare).unwrap().ino();
    fill_to_segment(&j, 1);
    assert_eq!(
        std::fs::metadata(segment_path(dir.path(), 1))
            .unwrap()
            .ino(),
        again,
        "the rotation took the spare made again"
    );
    assert_eq!(j.background_errors().0, 0);
}

/// A segment cut short under a reader reads as ending at the cut, and kills nothing.
#[test]
fn a_segment_cut_short_under_a_reader_ends_its_records() {
    let dir = TempDir::new("seg-cut-read");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    for i in 0..100 {
        append(&j, T0 + i as u64, &ping_record(i));
    }
    drop(j);
    let mut r = Reader::open(dir.path()).unwrap();
    assert!(r.next().is_some_and(|e| e.is_ok()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment_path(dir.path(), 0))
        .unwrap();
    file.set_len(4096).unwrap();
    let rest: Vec<_> = r.collect();
    assert!(rest.len() < 99, "{} records after the cut", rest.len());
}

/// Bytes appended to the newest segment file past its size are not records: a torn tail,
/// cut by recovery (the file gets its size back). Appended to an older segment, whose records
/// end at its sentinel, they are damage.
#[test]
fn a_segment_grown_past_its_size_is_a_torn_tail_when_newest() {
    let dir = TempDir::new("grown");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    for i in 0..10 {
        append(&j, T0 + i as u64, &ping_record(i));
    }
    drop(j);
    let seg = segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let copy = bytes.clone();
    bytes.extend_from_slice(b"half a record\x01\x02");
    std::fs::write(&seg, &bytes).unwrap();
    let v = verify(dir.path()).unwrap();
    assert!(v.intact(), "{v}");
    assert!(resized(&v), "{v}");
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert!(report.cut.as_ref().is_some_and(|c| c.torn_tail), "{report}");
    drop(j);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), MIN_SEGMENT_BYTES);
    assert_eq!(records(dir.path()).len(), 10);
    assert!(verify(dir.path()).unwrap().damage.is_none());
    // Whole records appended are not a torn tail: they would be lost by the cut.
    let mut twice = copy.clone();
    twice.extend_from_slice(&copy);
    std::fs::write(&seg, &twice).unwrap();
    assert!(!verify(dir.path()).unwrap().intact());

    let dir = TempDir::new("grown-older");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    fill_to_segment(&j, 1);
    drop(j);
    let seg = segment_path(dir.path(), 0);
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(b"not a record").unwrap();
    drop(f);
    let v = verify(dir.path()).unwrap();
    assert!(!v.intact(), "{v}");
}

/// Non-zero bytes far past the end of the data (a byte changed in the unwritten part of a
/// segment) are damage, reported with their offset; near the end they are what a power loss
/// leaves of records written after the last one that reached the disk, a torn tail.
#[test]
fn data_far_after_the_end_is_damage_and_near_it_a_torn_tail() {
    for (distance, intact) in [(4096, true), (2 * TORN_WINDOW, false)] {
        let dir = TempDir::new("after-end");
        let (j, _) = Journal::open(opts(dir.path(), 4 * TORN_WINDOW)).unwrap();
        for i in 0..10 {
            append(&j, T0 + i as u64, &ping_record(i));
        }
        let end = j.tail().offset;
        drop(j);
        let at = end + distance;
        patch(&seg0(dir.path()), at, &[0x5a]);
        let v = verify(dir.path()).unwrap();
        assert_eq!(v.intact(), intact, "{v}");
        assert_eq!(
            v.damage.as_ref().map(|d| d.kind),
            Some(DamageKind::DataAfterEnd { first: at }),
            "{v}"
        );
        assert!(v.to_string().contains(&format!("offset {at}")), "{v}");
        let (j, report) = Journal::open(opts(dir.path(), 4 * TORN_WINDOW)).unwrap();
        assert_eq!(report.records, 10);
        assert_eq!(cut_files(dir.path()).is_empty(), intact, "{report}");
        drop(j);
        assert!(verify(dir.path()).unwrap().damage.is_none());
        assert_eq!(records(dir.path()).len(), 10);
    }
}

/// A directory that takes no new names (here the probe's name is a directory; in production,
/// a read-only remount or an immutable flag) makes the spare useless, since it cannot be
/// renamed into place: new leads stop at half a segment though the spare is there, and are
/// taken again once the directory takes names again.
#[test]
fn a_directory_that_takes_no_new_names_stops_new_leads_at_half_a_segment() {
    let dir = TempDir::new("no-names");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    eventually("a spare is made", || j.spare_ready());
    let blocker = dir.path().join(super::writer::DIR_PROBE);
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    eventually("the directory is found to take no names", || {
        j.background_errors().0 > 0
    });
    assert!(j.spare_ready());
    let mut i = 0;
    while j.accepts_leads() {
        append(&j, T0 + i as u64, &ping_record(i));
        i += 1;
        assert!(i < 10_000);
    }
    assert!(j.tail().offset >= MIN_SEGMENT_BYTES / 2);
    std::fs::remove_dir_all(&blocker).unwrap();
    eventually("leads are taken again", || j.accepts_leads());
    assert_eq!(j.refused(), 0);
}

/// Append ping records from `from` until the journal appends to segment `seq`; returns the
/// next record's number.
fn append_into_segment(j: &Journal, seq: u64, from: usize) -> usize {
    let mut i = from;
    while j.tail().segment < seq {
        append(j, T0 + i as u64, &ping_record(i));
        i += 1;
        assert!(i < from + 100_000);
    }
    i
}

/// `HEAD` that cannot be rewritten after a rotation (here its temporary file's name is taken
/// by a directory; in production, a full disk) is one failure for the operator, not one a
/// second while it lasts; the journal says what `HEAD` still names, and writes it once it can.
#[test]
fn a_head_that_cannot_be_written_is_one_failure_and_is_written_once_it_can_be() {
    let dir = TempDir::new("head-blocked");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    eventually("a spare is made", || j.spare_ready());
    assert_eq!(j.head(), Some(0));
    let blocker = dir.path().join("HEAD.partial");
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    append_into_segment(&j, 1, 0);
    eventually("the failure is noted", || j.background_errors().0 > 0);
    let (_, msg) = j.background_errors();
    assert!(
        msg.as_deref().unwrap_or("").contains("HEAD.partial"),
        "{msg:?}"
    );
    // Retried every second, counted once.
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(j.background_errors().0, 1);
    assert_eq!(j.head(), Some(0));
    assert_eq!(super::head::read_head(dir.path()).unwrap(), Some(0));
    std::fs::remove_dir_all(&blocker).unwrap();
    eventually("HEAD is written", || j.head() == Some(1));
    assert_eq!(super::head::read_head(dir.path()).unwrap(), Some(1));
    assert_eq!(j.background_errors().0, 1);
}

/// A start that cannot rewrite `HEAD` says what it still names (not nothing), counts the
/// failure once, and writes it once it can.
#[test]
fn a_start_that_cannot_write_head_tells_what_it_names() {
    let dir = TempDir::new("head-blocked-start");
    let blocker = dir.path().join("HEAD.partial");
    {
        let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
        eventually("a spare is made", || j.spare_ready());
        std::fs::create_dir_all(blocker.join("x")).unwrap();
        append_into_segment(&j, 1, 0);
    }
    assert_eq!(super::head::read_head(dir.path()).unwrap(), Some(0));
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(j.head(), Some(0));
    let (count, msg) = j.background_errors();
    assert_eq!(count, 1);
    assert!(
        msg.as_deref().unwrap_or("").contains("HEAD.partial"),
        "{msg:?}"
    );
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(j.background_errors().0, 1);
    std::fs::remove_dir_all(&blocker).unwrap();
    eventually("HEAD is written", || j.head() == Some(1));
    assert_eq!(super::head::read_head(dir.path()).unwrap(), Some(1));
}

/// A journal directory removed or replaced while in use: what is appended would be lost with
/// it, so no new lead is taken until it is back.
#[test]
fn a_journal_directory_moved_away_stops_new_leads_at_once() {
    let dir = TempDir::new("moved");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    append(&j, T0, &ping_record(0));
    assert!(j.accepts_leads() && !j.dir_lost());
    let away = dir.path().with_extension("away");
    std::fs::rename(dir.path(), &away).unwrap();
    // Another directory in its place is not the journal's either.
    std::fs::create_dir_all(dir.path()).unwrap();
    eventually("the loss is noticed", || j.dir_lost());
    assert!(!j.accepts_leads());
    // The stand-in is moved aside whole rather than emptied, so a file the journal's thread
    // is making in it (its probe) cannot keep the journal's directory from taking its place.
    let stand_in = dir.path().with_extension("stand-in");
    std::fs::rename(dir.path(), &stand_in).unwrap();
    std::fs::rename(&away, dir.path()).unwrap();
    let _ = std::fs::remove_dir_all(&stand_in);
    eventually("the directory is back", || !j.dir_lost());
    assert!(j.accepts_leads());
}

/// When the spare cannot be made (here its name is taken by a directory; in production, a
/// full disk), new leads are taken until the current segment is half full and then turned
/// away, while records go on being appended into the other half; once the spare can be made
/// again, leads are taken again and the rotation goes through.
#[test]
fn without_a_spare_new_leads_stop_at_half_a_segment_and_resume_when_it_is_made() {
    let dir = TempDir::new("no-spare");
    let blocker = dir.path().join(super::segment::SPARE_FILE);
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    eventually("the failure is noted", || j.background_errors().0 > 0);
    assert!(!j.spare_ready());
    let (_, msg) = j.background_errors();
    assert!(
        msg.as_deref().unwrap_or("").contains("next.spare"),
        "{msg:?}"
    );
    let mut i = 0;
    while j.accepts_leads() {
        append(&j, T0 + i as u64, &ping_record(i));
        i += 1;
        assert!(i < 10_000);
    }
    let tail = j.tail();
    assert_eq!(tail.segment, 0);
    assert!(
        tail.offset >= MIN_SEGMENT_BYTES / 2 && tail.offset < MIN_SEGMENT_BYTES / 2 + 1024,
        "stopped at {tail:?}"
    );
    // The running leads' records still go in.
    for k in i..i + 20 {
        append(&j, T0 + k as u64, &ping_record(k));
    }
    assert!(!j.accepts_leads());
    // Room again: within a retry the spare is made and leads are taken.
    std::fs::remove_dir_all(&blocker).unwrap();
    eventually("the spare is made once it can be", || j.spare_ready());
    assert!(j.accepts_leads());
    let mut k = i + 20;
    while j.tail().segment == 0 {
        append(&j, T0 + k as u64, &ping_record(k));
        k += 1;
    }
    drop(j);
    let expect: Vec<Record> = (0..k).map(ping_record).collect();
    assert_eq!(records(dir.path()), expect);
}

/// The sale [`without_a_spare_the_results_and_sales_of_posts_sent_always_find_room`] writes
/// for lead `id`.
fn promised_sale(id: &str) -> RecordRef<'_> {
    RecordRef::Sale {
        lead_id: id,
        campaign: "camp",
        seller: "seller",
        buyer: "buyer-a",
        price_cents: 4250,
        payout_cents: 3400,
        test: false,
    }
}

/// Posts sent while no spare can be made promise their results and sales room: other
/// records are refused that room (`NoRoom`), so every result and sale still goes in, however
/// many records the leads in flight write meanwhile; once written, the room is given back.
#[test]
fn without_a_spare_the_results_and_sales_of_posts_sent_always_find_room() {
    let dir = TempDir::new("promised");
    let blocker = dir.path().join(super::segment::SPARE_FILE);
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    eventually("the failure is noted", || j.background_errors().0 > 0);
    // Nor can the next segment be made when it is needed (a full disk).
    let next = segment_path(dir.path(), 1);
    std::fs::create_dir_all(next.join("x")).unwrap();
    let long = "r".repeat(MAX_POST_TEXT_BYTES);
    // A quarter of the segment promised.
    let promise = post_promise(&lead_id(0), "buyer-a", "camp", "seller");
    let posts = (MIN_SEGMENT_BYTES / 4 / promise) as usize;
    for i in 0..posts {
        let sent = RecordRef::PostSent {
            lead_id: &lead_id(i),
            buyer: "buyer-a",
            price_cents: 4250,
        };
        j.append_promising(T0, &sent, promise).unwrap();
    }
    assert_eq!(j.promised(), posts as u64 * promise);
    // The leads' other records fill the segment up to the promised room, and no further.
    let mut i = 0;
    let refusal = loop {
        match ping_record(i).with_ref(|rr| j.append(T0, rr)) {
            Ok(_) => i += 1,
            Err(e) => break e,
        }
        assert!(i < 100_000);
    };
    assert!(matches!(refusal, JournalError::NoRoom { .. }), "{refusal}");
    assert!(j.tail().offset + posts as u64 * promise <= MIN_SEGMENT_BYTES);
    // A post that cannot be promised room is refused, and promises nothing.
    let late = RecordRef::PostSent {
        lead_id: &lead_id(posts),
        buyer: "buyer-a",
        price_cents: 4250,
    };
    assert!(j.append_promising(T0, &late, promise).is_err());
    assert_eq!(j.promised(), posts as u64 * promise);
    // Every result (with the longest reason and buyer lead id) and sale goes in.
    for p in 0..posts {
        let id = lead_id(p);
        let result = RecordRef::PostResult {
            lead_id: &id,
            buyer: "buyer-a",
            accepted: true,
            reason: Some(&long),
            response_us: 1234,
            price_cents: 4250,
            buyer_lead_id: Some(&long),
        };
        j.append_promised(T0, &result).unwrap();
        j.append_promised(T0, &promised_sale(&id)).unwrap();
        j.release(promise);
    }
    assert_eq!(j.promised(), 0);
    assert_eq!(j.tail().segment, 0);
    // Nor is a post that cannot be promised room sent, however small its promise.
    let id = lead_id(posts + 1);
    let sent = RecordRef::PostSent {
        lead_id: &id,
        buyer: "buyer-a",
        price_cents: 4250,
    };
    assert!(j.append_promising(T0, &sent, promise).is_err());
    // With room on the disk again, the spare is made and taken by the next rotation; a
    // promise made before it is kept in the segment after.
    std::fs::remove_dir_all(&next).unwrap();
    std::fs::remove_dir_all(&blocker).unwrap();
    eventually("the spare is made", || j.spare_ready() && j.accepts_leads());
    j.append_promising(T0, &sent, promise).unwrap();
    let mut k = i;
    while ping_record(k)
        .with_ref(|rr| j.append(T0, rr))
        .unwrap()
        .segment
        == 0
    {
        k += 1;
    }
    assert_eq!(
        j.append_promised(T0, &promised_sale(&id)).unwrap().segment,
        1
    );
    j.release(promise);
    drop(j);
    let all = records(dir.path());
    let sales = all
        .iter()
        .filter(|r| matches!(r, Record::Sale { .. }))
        .count();
    assert_eq!(sales, posts + 1);
    assert_eq!(all.len(), 3 * posts + k + 3);
    assert!(verify(dir.path()).unwrap().damage.is_none());
}

#[test]
fn retention_keeps_segments_of_an_open_cap_window() {
    let dir = TempDir::new("retain");
    let o = JournalOptions {
        retain_segments: 2,
        ..opts(dir.path(), MIN_SEGMENT_BYTES)
    };
    let (j, _) = Journal::open(o.clone()).unwrap();
    // All within one day: nothing may be removed, whatever retain_segments says.
    for i in 0..1200 {
        append(&j, T0 + i as u64, &ping_record(i));
    }
    let before = seg_files(dir.path());
    assert!(before > 2);
    // Forty days later the old segments are past every cap window.
    let later = T0 + 40 * 24 * 3600 * 1_000_000;
    for i in 1200..1800 {
        append(&j, later + i as u64, &ping_record(i));
    }
    drop(j);
    // Removed: every segment whose records are all past the window. Kept: the segment that
    // also holds the first new records, and the new ones.
    let kept = read_all(dir.path()).unwrap();
    let first_seg = kept[0].pos.segment;
    assert!(first_seg > 0, "old segments removed");
    assert!(kept
        .iter()
        .filter(|e| e.pos.segment == first_seg)
        .any(|e| e.ts_us > later));
    assert!(kept
        .iter()
        .filter(|e| e.pos.segment > first_seg)
        .all(|e| e.ts_us > later));
    assert_eq!(kept.last().unwrap().record, ping_record(1799));
    assert_eq!(
        seg_files(dir.path()) as u64,
        kept.last().unwrap().pos.segment - first_seg + 1
    );
    assert!(verify(dir.path()).unwrap().intact());
    // `HEAD` names the oldest segment left, and the journal opens again on it.
    assert_eq!(
        super::head::read_marker(dir.path())
            .unwrap()
            .and_then(|h| h.oldest),
        Some(first_seg)
    );
    let (j, report) = Journal::open(o).unwrap();
    assert!(report.cut.is_none(), "{report}");
    drop(j);
}

/// A longer `keep_us` (the longest `dedupe_days`) keeps segments the cap window alone would
/// let go, and `keep_for` raises it on a live journal.
#[test]
fn retention_keeps_what_the_longest_dedupe_window_needs() {
    let day = 24 * 3600 * 1_000_000u64;
    let run = |keep_days: u64, raise_to: Option<u64>| {
        let dir = TempDir::new("retain-dedupe");
        let (j, _) = Journal::open(JournalOptions {
            retain_segments: 1,
            keep_us: keep_days * day,
            ..opts(dir.path(), MIN_SEGMENT_BYTES)
        })
        .unwrap();
        for i in 0..600 {
            append(&j, T0 + i as u64, &ping_record(i));
        }
        if let Some(d) = raise_to {
            j.keep_for(d * day);
        }
        // Forty days later: past the cap window, inside a 365-day dedupe window.
        for i in 600..1200 {
            append(&j, T0 + 40 * day + i as u64, &ping_record(i));
        }
        drop(j);
        read_all(dir.path()).unwrap()[0].record.clone()
    };
    assert_ne!(
        run(0, None),
        ping_record(0),
        "the cap window alone lets it go"
    );
    assert_eq!(run(365, None), ping_record(0));
    assert_eq!(run(0, Some(365)), ping_record(0));
}

#[test]
fn sales_replay_streams_only_sales_in_the_window() {
    let dir = TempDir::new("replay");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let day = 24 * 3600 * 1_000_000u64;
    let sale = |i: usize| Record::Sale {
        lead_id: lead_id(i),
        campaign: "auto-insurance".into(),
        seller: "acme-media".into(),
        buyer: "acme-ins".into(),
        price_cents: 1000 + i as i64,
        payout_cents: 800,
        test: false,
    };
    for i in 0..600 {
        let ts = T0 + (i as u64 / 100) * day; // six days, 100 records a day
        append(&j, ts, &ping_record(i));
        if i % 10 == 0 {
            append(&j, ts, &sale(i));
        }
    }
    drop(j);
    let mut seen = Vec::new();
    let n = replay_sales(dir.path(), T0 + 4 * day, |ts, r| seen.push((ts, r.clone()))).unwrap();
    assert_eq!(n, 20);
    assert_eq!(seen.first().unwrap().1, sale(400));
    assert!(seen.iter().all(|(ts, _)| *ts >= T0 + 4 * day));
}

#[test]
fn records_of_unknown_types_are_skipped_by_readers() {
    let dir = TempDir::new("unknown");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    append(&j, T0, &ping_record(1));
    let end = j.tail();
    drop(j);
    let mut frame = raw_frame(77, T0, &[1, 2, 3, 4, 5]);
    frame.extend(raw_frame(
        RecordType::PingSent as u8,
        T0,
        &[PAYLOAD_VERSION + 3, 1],
    ));
    patch(&seg0(dir.path()), end.offset, &frame);
    let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.records, 3);
    append(&j, T0, &ping_record(2));
    drop(j);
    assert_eq!(records(dir.path()), vec![ping_record(1), ping_record(2)]);
    let v = verify(dir.path()).unwrap();
    assert!(v.intact());
    assert_eq!(v.unknown, 2);
}

/// A whole record (its checksum holds) whose content is not a record of its type, a `sale`
/// cut short or of payload version 0, is no forward-compatible skip: `verify` and `export` say so and exit 1, export
/// still printing every record it could read.
#[test]
fn a_whole_record_that_does_not_decode_fails_verify_and_export() {
    let dir = TempDir::new("undecodable");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    append(&j, T0, &ping_record(1));
    let end = j.tail();
    drop(j);
    // A sale cut short, and one of a version older than any build wrote (0).
    let mut frame = raw_frame(RecordType::Sale as u8, T0, &[PAYLOAD_VERSION, 3, b'a']);
    frame.extend(raw_frame(RecordType::Sale as u8, T0, &[0; 80]));
    patch(&seg0(dir.path()), end.offset, &frame);
    let v = verify(dir.path()).unwrap();
    assert_eq!((v.undecodable, v.unknown), (2, 0), "{v}");
    let (code, out, err) = run_cli(JournalCmd::Verify {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.starts_with("ok"), "{out}");
    assert!(err.contains("2 whole record(s) could not be read"), "{err}");
    let (code, out, err) = run_cli(JournalCmd::Export {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(err.contains("could not be read and are left out"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Concurrency

#[test]
fn concurrent_appenders_lose_nothing_and_never_interleave() {
    let dir = TempDir::new("concurrent");
    // 1 MiB segments: about 25 rotations under contention.
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    let j = Arc::new(j);
    let threads = 8;
    let per_thread = 12_500;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let j = Arc::clone(&j);
            std::thread::spawn(move || {
                let mut last = None;
                for i in 0..per_thread {
                    // Sizes vary so frames of different lengths race for the same slots.
                    let buyer = format!("t{t}-{}", "x".repeat(i % 97));
                    let lead = format!("{t:02}-{i:06}");
                    let p = j
                        .append(
                            T0 + i as u64,
                            &RecordRef::PingSent {
                                lead_id: &lead,
                                buyer: &buyer,
                            },
                        )
                        .unwrap();
                    assert!(last < Some(p), "positions of one thread must increase");
                    last = Some(p);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    drop(j);
    let entries = read_all(dir.path()).unwrap();
    assert_eq!(entries.len(), threads * per_thread);
    let mut seen = HashSet::new();
    let mut next_per_thread = vec![0usize; threads];
    for e in &entries {
        let Record::PingSent { lead_id, buyer } = &e.record else {
            panic!("unexpected {:?}", e.record)
        };
        let t: usize = lead_id[0..2].parse().unwrap();
        let i: usize = lead_id[3..].parse().unwrap();
        assert_eq!(
            buyer,
            &format!("t{t}-{}", "x".repeat(i % 97)),
            "record {lead_id} intact"
        );
        assert_eq!(e.ts_us, T0 + i as u64);
        assert_eq!(i, next_per_thread[t], "thread {t}'s records in order");
        next_per_thread[t] += 1;
        assert!(seen.insert(lead_id.clone()));
    }
    let v = verify(dir.path()).unwrap();
    assert!(v.intact() && v.damage.is_none() && v.torn == 0, "{v}");
}

#[test]
fn sync_modes_append_and_sync_without_error() {
    for sync in [
        SyncMode::Always,
        SyncMode::Interval(Duration::from_millis(1)),
        SyncMode::Os,
    ] {
        let dir = TempDir::new("sync");
        let o = JournalOptions {
            sync,
            ..opts(dir.path(), MIN_SEGMENT_BYTES)
        };
        let (j, _) = Journal::open(o).unwrap();
        let j = Arc::new(j);
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let j = Arc::clone(&j);
                std::thread::spawn(move || {
                    for i in 0..400 {
                        let p = append(&j, T0, &ping_record(t * 1000 + i));
                        j.sync_to(p).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Positions that name nothing are harmless.
        j.sync_to(Position {
            segment: 999,
            offset: 3,
        })
        .unwrap();
        j.sync_to(Position {
            segment: 0,
            offset: 1 << 40,
        })
        .unwrap();
        j.flush().unwrap();
        assert_eq!(j.sync_mode(), sync);
        assert_eq!(j.background_errors().0, 0, "{:?}", j.background_errors().1);
        drop(j);
        assert_eq!(records(dir.path()).len(), 800);
    }
}

/// Resident KiB of this process's mappings of `path` (from /proc/self/smaps).
fn mapped_rss_kib(path: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_string_lossy();
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(name.as_ref());
        } else if inside && line.starts_with("Rss:") {
            total += line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap();
        }
    }
    total
}

fn smaps_of(path: &Path) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_string_lossy();
    let mut out = String::new();
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(name.as_ref());
        }
        if inside {
            out.push_str(line);
            out.push('\n');
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    out.push_str(&present_ranges(a, b));
                }
            }
        }
    }
    out
}

fn present_ranges(start: u64, end: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open("/proc/self/pagemap").unwrap();
    let pages = (end - start) / 4096;
    f.seek(SeekFrom::Start(start / 4096 * 8)).unwrap();
    let mut buf = vec![0u8; pages as usize * 8];
    f.read_exact(&mut buf).unwrap();
    let mut out = String::from("present (KiB offsets): ");
    let mut run: Option<u64> = None;
    for i in 0..=pages {
        let present = i < pages && {
            let w = u64::from_le_bytes(buf[i as usize * 8..i as usize * 8 + 8].try_into().unwrap());
            w >> 63 == 1
        };
        match (present, run) {
            (true, None) => run = Some(i),
            (false, Some(r)) => {
                out.push_str(&format!("[{}-{}) ", r * 4, i * 4));
                run = None;
            }
            _ => {}
        }
    }
    out.push('\n');
    out
}

#[test]
fn written_pages_leave_the_resident_set_and_read_back_intact() {
    // 48 MiB of records into one 64 MiB segment, in each sync mode: the mapping's resident
    // size must settle near the prefault window plus the release margin, not near 48 MiB.
    const SEGMENT: u64 = 64 << 20;
    const RECORDS: usize = (48 << 20) / 256;
    // A filesystem with large folios (ext4 on Linux 6.16 and later) has a fault map the
    // whole folio around the faulting page, up to 2 MiB, so a few folios on either side of the
    // window (behind what was released, past what was prefaulted) may be resident too: seen at
    // up to 17 MiB here. What is checked is that residency does not follow the 48 MiB written.
    const FOLIO_SLACK_BYTES: u64 = 8 << 20;
    let bound_kib =
        (PREFAULT_AHEAD_BYTES + 4 * RELEASE_BEHIND_BYTES + FOLIO_SLACK_BYTES) / 1024 + 1024;
    for sync in [
        SyncMode::Interval(Duration::from_millis(1)),
        SyncMode::Always,
        SyncMode::Os,
    ] {
        let dir = TempDir::new("release");
        let (j, _) = Journal::open(JournalOptions {
            sync,
            ..opts(dir.path(), SEGMENT)
        })
        .unwrap();
        let mut last = None;
        for i in 0..RECORDS {
            let p = append(&j, T0 + i as u64, &ping_record(i));
            if sync == SyncMode::Always && i % 1024 == 0 {
                j.sync_to(p).unwrap();
            }
            last = Some(p);
        }
        if let Some(p) = last {
            j.sync_to(p).unwrap();
            assert_eq!(p.segment, 0, "{sync:?}: the records fit one segment");
        }
        let seg = seg0(dir.path());
        let mut rss = mapped_rss_kib(&seg);
        // The background thread releases on its own tick, after its msync of what was written
        // (which can take seconds on a busy disk): wait for it, generously.
        for _ in 0..1500 {
            if rss <= bound_kib {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            rss = mapped_rss_kib(&seg);
        }
        assert!(
            rss <= bound_kib,
            "{sync:?}: {rss} KiB of the segment resident after writing 48 MiB (bound {bound_kib}); \
             tail, prefaulted, released, walked: {:?}\n{}",
            j.slot_offsets(0),
            smaps_of(&seg)
        );
        assert_eq!(j.background_errors().0, 0);
        drop(j);
        let back = records(dir.path());
        assert_eq!(back.len(), RECORDS, "{sync:?}");
        assert_eq!(back[RECORDS / 2], ping_record(RECORDS / 2), "{sync:?}");
        assert_eq!(back[RECORDS - 1], ping_record(RECORDS - 1), "{sync:?}");
    }
}

/// Prefaulting never reaches behind the writers: when they have outrun it (a busy machine,
/// the background thread late), it starts at the tail's page, so pages written and released
/// meanwhile are not faulted back in to stay resident for the segment's life.
#[test]
fn prefault_starts_at_the_tail_when_the_writers_have_passed_it() {
    const MIB: u64 = 1 << 20;
    let len = 64 * MIB;
    // Ahead of the writers: from what was prefaulted, to the window past the tail.
    assert_eq!(
        prefault_range(8 * MIB, 2 * MIB, len, 4096),
        Some((8 * MIB, 2 * MIB + PREFAULT_AHEAD_BYTES))
    );
    // The writers at 46 MiB + 100 bytes, the last prefault at 30 MiB: nothing behind the
    // tail's page is touched.
    let tail = 46 * MIB + 100;
    assert_eq!(
        prefault_range(30 * MIB, tail, len, 4096),
        Some((46 * MIB, tail + PREFAULT_AHEAD_BYTES))
    );
    // Up to the segment's end, and nothing once the window is done.
    assert_eq!(
        prefault_range(60 * MIB, 62 * MIB, len, 4096),
        Some((62 * MIB, len))
    );
    assert_eq!(prefault_range(len, 62 * MIB, len, 4096), None);
    assert_eq!(
        prefault_range(10 * MIB + PREFAULT_AHEAD_BYTES, 10 * MIB, len, 4096),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// Corruption and recovery

/// Index of the frame containing byte `at`, and whether the byte is frame padding.
fn frame_at(frames: &[(u64, u64)], recs: &[Record], at: u64) -> Option<(usize, bool)> {
    frames
        .iter()
        .position(|&(s, e)| at >= s && at < e)
        .map(|k| {
            let payload = recs[k].with_ref(|rr| rr.encoded_len().unwrap() as u64);
            (k, at >= frames[k].0 + 24 + payload)
        })
}

#[test]
fn flipped_bits_anywhere_keep_every_whole_record_before_them_and_nothing_after() {
    let pristine = TempDir::new("flip-src");
    let (recs, frames) = write_sample(pristine.path(), 60);
    let data_end = frames.last().unwrap().1;
    let mut positions: Vec<u64> = (0..data_end + 64).step_by(29).collect();
    positions.extend([0, 8, 60, 64, 68, 72, 76, 80, 88, data_end, data_end + 4]);
    for at in positions {
        for bit in [0u8, 5] {
            let dir = TempDir::new("flip");
            copy_dir(pristine.path(), dir.path());
            let b = read_at(&seg0(dir.path()), at, 1)[0];
            patch(&seg0(dir.path()), at, &[b ^ (1 << bit)]);
            let expect_kept = match frame_at(&frames, &recs, at) {
                Some((_, true)) => recs.len(), // padding is not covered: nothing lost
                Some((k, false)) => k,
                None if at < SEGMENT_HEADER_BYTES => 0,
                None => recs.len(), // after the data: garbage, all records kept
            };
            let before = verify(dir.path()).unwrap();
            let damaged = read_file(&seg0(dir.path()));
            let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
            assert_eq!(
                report.records as usize, expect_kept,
                "flip at {at} bit {bit}: {report}"
            );
            if expect_kept < recs.len() {
                let cut = report
                    .cut
                    .as_ref()
                    .unwrap_or_else(|| panic!("flip at {at}: no cut: {report}"));
                let expect_skipped = if at < SEGMENT_HEADER_BYTES {
                    recs.len()
                } else {
                    recs.len().saturating_sub(expect_kept + 1)
                };
                assert_eq!(
                    cut.records_skipped as usize, expect_skipped,
                    "flip at {at} bit {bit}"
                );
                // A flip inside a record's covered bytes damages a committed record: it is
                // lost, so the journal is not intact even when nothing whole follows.
                let committed_lost = report
                    .cut
                    .as_ref()
                    .is_some_and(|c| c.kind.is_committed_record());
                assert_eq!(
                    before.intact(),
                    expect_skipped == 0 && !committed_lost,
                    "verify before open: {before}"
                );
                // Whole records cut from a segment kept in place, or a committed one damaged:
                // its bytes are copied first.
                if at >= SEGMENT_HEADER_BYTES && (expect_skipped > 0 || committed_lost) {
                    let copy = cut.copied_to.as_ref().unwrap_or_else(|| panic!("{report}"));
                    assert_eq!(read_file(copy), damaged, "flip at {at} bit {bit}");
                } else {
                    assert_eq!(cut.copied_to, None, "flip at {at} bit {bit}: {report}");
                }
            } else if at < data_end {
                assert_eq!(report.cut, None);
                assert!(before.intact() && before.damage.is_none());
            } else {
                // Garbage after the data: cut, or reclaimed as a torn frame; nothing lost.
                assert!(before.intact(), "{before}");
                assert_eq!(report.tail.offset, data_end, "{report}");
            }
            if report.cut.as_ref().is_none_or(|c| c.copied_to.is_none()) {
                assert!(copy_files(dir.path()).is_empty(), "flip at {at} bit {bit}");
            }
            // Every whole record the cut took out of the journal is read back from the files
            // it set aside, and nothing else.
            let skipped = report
                .cut
                .as_ref()
                .map_or(0, |c| c.records_skipped as usize);
            let (back, aside) = set_aside(dir.path(), 0);
            assert_eq!(aside.records as usize, skipped, "flip at {at} bit {bit}");
            let back: Vec<Record> = back.into_iter().map(|e| e.record).collect();
            assert_eq!(back, recs[recs.len() - skipped..], "flip at {at} bit {bit}");
            // Appends continue after the cut, and the journal is whole again.
            append(&j, T0, &ping_record(999));
            drop(j);
            let mut expect = recs[..expect_kept].to_vec();
            expect.push(ping_record(999));
            assert_eq!(records(dir.path()), expect, "flip at {at} bit {bit}");
            let after = verify(dir.path()).unwrap();
            assert!(
                after.intact() && after.damage.is_none(),
                "after recovery: {after}"
            );
        }
    }
}

#[test]
fn a_truncated_tail_is_cut_at_the_last_whole_record() {
    let pristine = TempDir::new("trunc-src");
    let (recs, frames) = write_sample(pristine.path(), 20);
    let (last_start, last_end) = *frames.last().unwrap();
    // Written partly (a power loss wrote some of its pages): the end of the last record never
    // reached the disk. With its commit word on disk, a committed record is lost: that is
    // damage, reported by verify, and its segment is copied aside before the cut. Without it
    // (`keep` 4), the record was never committed: a torn record, skipped and reclaimed.
    for keep in [4, 8, 24, 30, 40] {
        let dir = TempDir::new("trunc");
        copy_dir(pristine.path(), dir.path());
        let zeros = vec![0u8; (last_end - last_start - keep) as usize];
        patch(&seg0(dir.path()), last_start + keep, &zeros);
        let committed = keep >= 8;
        let damaged = read_file(&seg0(dir.path()));
        let v = verify(dir.path()).unwrap();
        assert_eq!(v.intact(), !committed, "keep {keep}: {v}");
        assert_eq!(v.records as usize, 19);
        let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
        assert_eq!(report.records, 19);
        assert_eq!(report.tail.offset, last_start, "{report}");
        match report.cut.as_ref().and_then(|c| c.copied_to.as_ref()) {
            Some(copy) => {
                assert!(committed, "keep {keep}: {report}");
                assert_eq!(read_file(copy), damaged);
                assert!(report.to_string().contains("committed record"), "{report}");
            }
            None => {
                assert!(!committed, "keep {keep}: no copy: {report}");
                assert!(cut_files(dir.path()).is_empty());
            }
        }
        drop(j);
        assert!(verify(dir.path()).unwrap().damage.is_none());
        assert_eq!(records(dir.path()), recs[..19].to_vec());
    }
    // The file itself cut short in the middle of the last record: a torn tail, cut at the
    // last whole record with no copy; the segment gets its size back, and appends go on.
    let dir = TempDir::new("trunc-file");
    copy_dir(pristine.path(), dir.path());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg0(dir.path()))
        .unwrap();
    f.set_len(last_start + 40).unwrap();
    drop(f);
    let v = verify(dir.path()).unwrap();
    assert!(v.intact(), "{v}");
    assert_eq!(
        v.damage.as_ref().map(|d| d.at.offset),
        Some(last_start),
        "{v}"
    );
    let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.records, 19);
    assert!(cut_files(dir.path()).is_empty(), "{report}");
    assert_eq!(
        std::fs::metadata(seg0(dir.path())).unwrap().len(),
        std::fs::metadata(seg0(pristine.path())).unwrap().len()
    );
    // The segment fills up and appends move on to a new one.
    for i in 0..10 {
        append(&j, T0, &ping_record(i));
    }
    drop(j);
    let got = records(dir.path());
    assert_eq!(got.len(), 29);
    assert_eq!(got[..19], recs[..19]);
}

#[test]
fn a_zeroed_page_keeps_the_records_before_it_and_moves_later_segments_aside() {
    let dir = TempDir::new("zeroed");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let n = 700; // three segments
    let mut positions = Vec::new();
    for i in 0..n {
        positions.push(append(&j, T0, &ping_record(i)));
    }
    drop(j);
    assert!(seg_files(dir.path()) >= 3);
    // Zero the second page of segment 0 (a page that starts inside a record).
    patch(&seg0(dir.path()), 4096, &[0u8; 4096]);
    let first_lost = positions
        .iter()
        .position(|p| p.segment == 0 && p.offset + 256 > 4096)
        .unwrap();
    let v = verify(dir.path()).unwrap();
    assert!(!v.intact(), "whole records follow the damage: {v}");
    let d = v.damage.unwrap();
    assert_eq!(d.at, positions[first_lost]);
    assert!(d.records_after > 0);

    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let cut = report.cut.clone().unwrap();
    assert_eq!(cut.at, positions[first_lost]);
    assert!(cut.records_skipped > 0);
    assert!(cut.records_skipped_in_segment > 0);
    assert!(cut.records_skipped > cut.records_skipped_in_segment);
    assert_eq!(cut.moved_aside.len(), seg_files_before_cut(&positions) - 1);
    assert!(cut.copied_to.is_some(), "{report}");
    assert_eq!(report.records as usize, first_lost);
    assert!(report.to_string().contains("cut at segment 0"));
    append(&j, T0, &ping_record(5000));
    drop(j);
    let mut expect: Vec<Record> = (0..first_lost).map(ping_record).collect();
    expect.push(ping_record(5000));
    assert_eq!(records(dir.path()), expect);
    // The later segments are kept for inspection, never deleted, and so is segment 0 as it
    // was before the cut.
    assert_eq!(cut_files(dir.path()).len(), cut.moved_aside.len() + 1);
    assert_eq!(copy_files(dir.path()).len(), 1);
    // What was cut, in segment 0 after the zeroed page and in the segments moved aside, still
    // reads back from those files: the records lost are only those the damage touched.
    let (back, aside) = set_aside(dir.path(), 0);
    assert_eq!(aside.records, cut.records_skipped);
    assert_eq!(aside.replayed, cut.records_skipped);
    assert_eq!(aside.files, cut.moved_aside.len() + 1);
    let first_back = n - back.len();
    assert!(first_back > first_lost && positions[first_back].offset >= 8192);
    let expect: Vec<Record> = (first_back..n).map(ping_record).collect();
    assert_eq!(
        back.into_iter().map(|e| e.record).collect::<Vec<_>>(),
        expect
    );
    assert!(verify(dir.path()).unwrap().intact());
}

fn seg_files_before_cut(positions: &[Position]) -> usize {
    positions.last().unwrap().segment as usize + 1
}

/// One byte gone bad in the middle of a segment (not a crash: whole records follow it). The
/// cut is made as before, but only after the segment's bytes are copied aside.
#[test]
fn a_corrupt_byte_mid_segment_is_cut_only_after_the_segment_is_copied_aside() {
    let dir = TempDir::new("mid-corrupt");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let mut written = Vec::new();
    for i in 0..200 {
        let r = if i % 4 == 3 {
            sale_record(i)
        } else {
            ping_record(i)
        };
        written.push((append(&j, T0 + i as u64, &r), r));
    }
    drop(j);
    assert!(written.iter().all(|(p, _)| p.segment == 0));
    let bad = 80;
    let bad_at = written[bad].0;
    let after = written.len() - bad - 1;
    let sales_after = written[bad + 1..]
        .iter()
        .filter(|(_, r)| matches!(r, Record::Sale { .. }))
        .count();
    assert!(sales_after > 20);
    // One payload byte of record 80 flips.
    let b = read_at(&seg0(dir.path()), bad_at.offset + 40, 1)[0];
    patch(&seg0(dir.path()), bad_at.offset + 40, &[b ^ 0x10]);
    let original = read_file(&seg0(dir.path()));

    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let cut = report.cut.clone().unwrap();
    assert_eq!(cut.at, bad_at);
    assert_eq!(cut.kind, DamageKind::BadChecksum);
    assert_eq!(cut.records_skipped as usize, after);
    assert_eq!(cut.records_skipped_in_segment as usize, after);
    assert_eq!(cut.zeroed_from, Some(bad_at));
    assert!(cut.moved_aside.is_empty());
    // The copy: the whole segment, byte for byte as it was before the cut, beside it.
    let copy = cut.copied_to.clone().unwrap();
    assert_eq!(copy.parent(), Some(dir.path()));
    let name = copy.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("00000000000000000000.seg.cut-"), "{name}");
    assert_eq!(read_file(&copy), original);
    // The report (what `gavel serve` prints on stderr) says what was cut and where it went.
    let text = report.to_string();
    for want in [
        format!(
            "cut at segment 0 offset {} (checksum mismatch)",
            bad_at.offset
        ),
        format!("{after} whole record(s) after it ({after} of them in segment 0)"),
        format!("segment 0 zeroed from offset {} to its end", bad_at.offset),
        format!("copied to {}", copy.display()),
    ] {
        assert!(text.contains(&want), "{want:?} not in {text}");
    }
    // The live segment is cut as before: the records before the damage, then zeros.
    assert_eq!(report.records as usize, bad);
    let live = read_file(&seg0(dir.path()));
    assert_eq!(live.len(), original.len());
    assert_eq!(
        live[..bad_at.offset as usize],
        original[..bad_at.offset as usize]
    );
    assert!(live[bad_at.offset as usize..].iter().all(|&b| b == 0));
    append(&j, T0 + 1000, &ping_record(1000));
    drop(j);

    // Nothing reads the copy as a segment: readers, verify, export, tail, the next open.
    let expect: Vec<Record> = written[..bad]
        .iter()
        .map(|(_, r)| r.clone())
        .chain([ping_record(1000)])
        .collect();
    assert_eq!(records(dir.path()), expect);
    assert_eq!(seg_files(dir.path()), 1);
    let v = verify(dir.path()).unwrap();
    assert!(v.intact() && v.damage.is_none(), "{v}");
    assert_eq!(v.records as usize, bad + 1);
    let (code, out, _) = run_cli(JournalCmd::Export {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), bad + 1);
    let mut out = Vec::new();
    let mut err = Vec::new();
    assert_eq!(cli::tail(dir.path(), 1000, &mut out, &mut err, Some(1)), 0);
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), bad + 1);
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(report.cut, None, "{report}");
    assert_eq!(report.records as usize, bad + 1);
    drop(j);
    assert_eq!(copy_files(dir.path()), vec![name.clone()]);

    // The records after the bad one still count for caps and dedupe: read back from the copy,
    // exactly those, with their times; at this start and every later one.
    let (back, aside) = set_aside(dir.path(), 0);
    assert_eq!(aside.records as usize, after);
    assert_eq!(aside.replayed as usize, after);
    assert_eq!(aside.files, 1);
    // Record i was stamped T0 + i; positions are those in the copy (the original segment's).
    let expect: Vec<(Position, u64, Record)> = written
        .iter()
        .enumerate()
        .skip(bad + 1)
        .map(|(i, (p, r))| (*p, T0 + i as u64, r.clone()))
        .collect();
    let got: Vec<(Position, u64, Record)> = back
        .into_iter()
        .map(|e| (e.pos, e.ts_us, e.record))
        .collect();
    assert_eq!(got, expect);
    let mut sales = 0;
    let n = replay_set_aside(dir.path(), 0, |e| {
        sales += matches!(e.record, Record::Sale { .. }) as usize
    })
    .unwrap();
    assert_eq!(sales, sales_after);
    assert_eq!(n.records as usize, after);
    // Only the records of the window asked for are handed over; all are counted.
    let since = T0 + (bad as u64 + 50);
    let (recent, aside) = set_aside(dir.path(), since);
    assert_eq!(aside.records as usize, after);
    assert_eq!(recent.len(), written.len() - (bad + 50));
    assert!(recent.iter().all(|e| e.ts_us >= since));

    // Cut again (the same segment, maybe in the same second): a second copy, the first kept.
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let mut again = Vec::new();
    for i in 0..20 {
        again.push(append(&j, T0 + 2000, &ping_record(2000 + i)));
    }
    drop(j);
    patch(&seg0(dir.path()), again[3].offset + 40, &[0xEE]);
    let before_second = read_file(&seg0(dir.path()));
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let second_cut = report.cut.clone().unwrap();
    assert_eq!(second_cut.records_skipped, 16);
    let second = second_cut.copied_to.unwrap();
    assert_ne!(second, copy);
    assert_eq!(read_file(&second), before_second);
    assert_eq!(read_file(&copy), original);
    assert_eq!(copy_files(dir.path()).len(), 2);
    drop(j);
    // Each copy gives back what its own cut removed: the second copy also holds the records
    // before its damage (still live, so not counted again) and none of the first cut's.
    let (back, aside) = set_aside(dir.path(), 0);
    assert_eq!(aside.records as usize, after + 16);
    assert_eq!(aside.files, 2);
    let from_second: Vec<Record> = back
        .iter()
        .filter(|e| e.ts_us == T0 + 2000)
        .map(|e| e.record.clone())
        .collect();
    assert_eq!(
        from_second,
        (4..20).map(|i| ping_record(2000 + i)).collect::<Vec<_>>()
    );

    // Retention removes old segments, never a copy.
    let (j, _) = Journal::open(JournalOptions {
        retain_segments: 1,
        ..opts(dir.path(), MIN_SEGMENT_BYTES)
    })
    .unwrap();
    for i in 0..300 {
        append(&j, T0 + 3000, &ping_record(3000 + i));
    }
    let later = T0 + 40 * 24 * 3600 * 1_000_000;
    for i in 0..600 {
        append(&j, later, &ping_record(4000 + i));
    }
    drop(j);
    assert!(!seg0(dir.path()).exists(), "segment 0 is past every window");
    assert_eq!(read_file(&copy), original);
    assert_eq!(read_file(&second), before_second);
    assert_eq!(set_aside(dir.path(), 0).1.records as usize, after + 16);
}

#[test]
fn only_the_names_recovery_gives_are_read_back_as_set_aside() {
    use super::salvage::{set_aside_files, AsideKind};
    let dir = TempDir::new("aside-names");
    let seg = "00000000000000000012.seg";
    for name in [
        seg,
        "00000000000000000012.seg.cut",
        "00000000000000000012.seg.cut.3",
        "00000000000000000012.seg.cut-1796121837",
        "00000000000000000012.seg.cut-1796121837.2",
        // Not recovery's: a copy being written, an operator's renames, stray files.
        "00000000000000000012.seg.cut-partial",
        "00000000000000000012.seg.cut.bak",
        "00000000000000000012.seg.cut-",
        "00000000000000000012.seg.cut-17961.2.3",
        "00000000000000000012.seg.cut.",
        "00000000000000000012.seg.cutx",
        "0000000000000000012.seg.cut",
        "0000000000000000001x.seg.cut",
        "LOCK",
    ] {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    let got: Vec<(String, u64, AsideKind)> = set_aside_files(dir.path())
        .unwrap()
        .into_iter()
        .map(|f| {
            let name = f.path.file_name().unwrap().to_string_lossy().into_owned();
            (name, f.seq, f.kind)
        })
        .collect();
    let want = [
        ("00000000000000000012.seg.cut", AsideKind::Moved),
        ("00000000000000000012.seg.cut-1796121837", AsideKind::Copy),
        ("00000000000000000012.seg.cut-1796121837.2", AsideKind::Copy),
        ("00000000000000000012.seg.cut.3", AsideKind::Moved),
    ]
    .map(|(n, k)| (n.to_string(), 12, k));
    assert_eq!(got, want);
    // Empty files hold nothing, and nothing is read as a segment but the segment.
    assert_eq!(set_aside(dir.path(), 0).1, SetAsideReport::default());
    assert_eq!(super::segment::list_segments(dir.path()).unwrap(), vec![12]);
}

#[test]
fn garbage_after_the_last_record_is_cut_and_every_record_kept() {
    let pristine = TempDir::new("garbage-src");
    let (recs, frames) = write_sample(pristine.path(), 30);
    let end = frames.last().unwrap().1;
    let mut rng = Rng(42);
    for gap in [0u64, 8, 100, 5000] {
        let dir = TempDir::new("garbage");
        copy_dir(pristine.path(), dir.path());
        let junk: Vec<u8> = (0..300).map(|_| (rng.next() as u8) | 1).collect();
        patch(&seg0(dir.path()), end + gap, &junk);
        let v = verify(dir.path()).unwrap();
        assert!(
            v.intact(),
            "garbage with nothing whole after it is a torn tail: {v}"
        );
        assert!(v.damage.is_some());
        let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
        assert_eq!(report.records as usize, recs.len());
        let cut = report.cut.clone().unwrap();
        assert_eq!(cut.records_skipped, 0);
        assert!(cut.bytes >= 300, "{report}");
        assert_eq!(cut.copied_to, None);
        assert!(cut_files(dir.path()).is_empty());
        for i in 0..50 {
            append(&j, T0, &ping_record(i));
        }
        drop(j);
        let got = records(dir.path());
        assert_eq!(got.len(), recs.len() + 50);
        let v = verify(dir.path()).unwrap();
        assert!(v.damage.is_none(), "{v}");
    }
}

#[test]
fn a_torn_record_in_the_middle_is_skipped_and_the_whole_ones_after_it_kept() {
    let dir = TempDir::new("torn");
    let (recs, frames) = write_sample(dir.path(), 12);
    // A writer died between claiming record 5 and committing it; others went on.
    patch(&seg0(dir.path()), frames[5].0 + 4, &[0, 0, 0, 0]);
    patch(&seg0(dir.path()), frames[5].0 + 30, &[0xAB; 8]);
    let v = verify(dir.path()).unwrap();
    assert!(v.intact() && v.damage.is_none());
    assert_eq!(v.torn, 1);
    assert_eq!(
        v.torn_positions,
        vec![Position {
            segment: 0,
            offset: frames[5].0
        }]
    );
    let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.torn_skipped, 1);
    assert_eq!(report.records, 11);
    assert_eq!(report.cut, None);
    append(&j, T0, &ping_record(1));
    drop(j);
    let mut expect = recs.clone();
    expect.remove(5);
    expect.push(ping_record(1));
    assert_eq!(records(dir.path()), expect);
}

#[test]
fn a_segment_created_but_never_written_is_dropped_on_open() {
    let dir = TempDir::new("empty-seg");
    let (recs, _) = write_sample(dir.path(), 5);
    // A crash between creating the next segment file and writing its header.
    let f = std::fs::File::create(segment_path(dir.path(), 1)).unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    assert!(verify(dir.path()).unwrap().intact());
    let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(report.records, 5);
    assert_eq!(report.tail.segment, 0);
    assert!(cut_files(dir.path()).is_empty());
    drop(j);
    assert_eq!(records(dir.path()), recs);
}

/// A newest segment whose header holds bytes that do not read (written over, or its file cut
/// inside the header) is not what a crash leaves: `verify` calls the journal damaged, and the
/// exchange sets the segment aside (it is kept, not removed) and says so.
#[test]
fn a_newest_segment_with_a_written_but_unreadable_header_is_damage() {
    for (case, len, header) in [
        ("garbage", 1u64 << 20, vec![0xAB; 64]),
        ("cut inside the header", 10, vec![0x47; 10]),
    ] {
        let dir = TempDir::new("bad-header");
        let (recs, _) = write_sample(dir.path(), 5);
        let path = segment_path(dir.path(), 1);
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(len).unwrap();
        drop(f);
        patch(&path, 0, &header);
        let v = verify(dir.path()).unwrap();
        assert!(!v.intact(), "{case}: {v}");
        assert!(
            v.to_string().contains("DAMAGED at segment 1 offset 0"),
            "{case}: {v}"
        );
        assert!(v.to_string().contains("bad segment header"), "{case}: {v}");
        // The bytes that are there, not a whole header's worth.
        let held = len.min(64);
        assert!(
            v.to_string()
                .contains(&format!(", {held} byte(s) in the segment")),
            "{case}: {v}"
        );
        let (code, _, err) = run_cli(JournalCmd::Verify {
            dir: dir.path().to_path_buf(),
        });
        assert_eq!(code, 1, "{case}: {err}");
        let (j, report) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
        let cut = report.cut.as_ref().unwrap();
        assert!(!cut.torn_tail, "{case}: {report}");
        assert_eq!(cut.moved_aside.len(), 1, "{case}: {report}");
        assert!(
            report
                .to_string()
                .contains("a segment header no crash leaves"),
            "{case}: {report}"
        );
        assert_eq!(
            std::fs::read(&cut.moved_aside[0]).unwrap()[..header.len()],
            header[..],
            "{case}: the segment's bytes are kept"
        );
        drop(j);
        assert_eq!(records(dir.path()), recs, "{case}");
    }
}

#[test]
fn a_segment_from_a_newer_format_is_refused_not_cut() {
    let dir = TempDir::new("newer");
    write_sample(dir.path(), 3);
    let mut h = read_at(&seg0(dir.path()), 0, 64);
    h[8..12].copy_from_slice(&(format::FORMAT_VERSION + 1).to_le_bytes());
    let crc = crc32c::crc32c(&h[0..60]);
    h[60..64].copy_from_slice(&crc.to_le_bytes());
    patch(&seg0(dir.path()), 0, &h);
    assert!(matches!(
        Journal::open(opts(dir.path(), 1 << 20)),
        Err(JournalError::UnsupportedFormat { .. })
    ));
    assert!(matches!(
        verify(dir.path()),
        Err(JournalError::UnsupportedFormat { .. })
    ));
    assert!(cut_files(dir.path()).is_empty());
}

#[test]
fn the_reader_stops_with_an_error_at_real_damage() {
    let dir = TempDir::new("reader-damage");
    let (recs, frames) = write_sample(dir.path(), 10);
    patch(&seg0(dir.path()), frames[3].0 + 30, &[0xFF]);
    let items: Vec<_> = Reader::open(dir.path()).unwrap().collect();
    assert_eq!(items.len(), 4);
    for (i, item) in items[..3].iter().enumerate() {
        assert_eq!(item.as_ref().unwrap().record, recs[i]);
    }
    assert!(matches!(
        items[3],
        Err(JournalError::Damaged {
            at: Position { segment: 0, .. },
            kind: DamageKind::BadChecksum
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Following and the command line

#[test]
fn a_follower_sees_new_records_across_rotations() {
    let dir = TempDir::new("follow");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    for i in 0..5 {
        append(&j, T0, &ping_record(i));
    }
    let (mut f, backlog) = Follower::from_end(dir.path(), 3).unwrap();
    assert_eq!(
        backlog.iter().map(|e| e.record.clone()).collect::<Vec<_>>(),
        (2..5).map(ping_record).collect::<Vec<_>>()
    );
    let mut got = Vec::new();
    assert_eq!(f.poll(&mut |e| got.push(e.record)).unwrap(), 0);
    for i in 5..700 {
        append(&j, T0, &ping_record(i));
    }
    f.poll(&mut |e| got.push(e.record)).unwrap();
    assert_eq!(got, (5..700).map(ping_record).collect::<Vec<_>>());
    assert!(f.position().segment > 0);
    drop(j);
}

/// A torn record at the very end (a crash between claim and commit) is not skipped however
/// long it waits: the writer's next start reclaims it, and the follower reads the records
/// written over it from their start, neither landing inside one nor missing one.
#[test]
fn a_follower_waits_on_a_torn_tail_and_reads_what_the_next_start_writes_over_it() {
    let dir = TempDir::new("follow-torn");
    let (recs, frames) = write_sample(dir.path(), 12);
    let (last_start, _) = frames[11];
    patch(&seg0(dir.path()), last_start + 4, &[0, 0, 0, 0]);
    let mut f = Follower::from_segment(dir.path(), 0);
    let mut got = Vec::new();
    f.poll(&mut |e| got.push(e.record)).unwrap();
    assert_eq!(got, recs[..11].to_vec());
    std::thread::sleep(super::reader::TORN_WAIT + Duration::from_millis(100));
    got.clear();
    assert_eq!(f.poll(&mut |e| got.push(e.record)).unwrap(), 0);
    assert_eq!(f.position().offset, last_start, "a torn tail is waited on");
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(report.tail.offset, last_start, "{report}");
    for i in 100..103 {
        append(&j, T0, &ping_record(i));
    }
    f.poll(&mut |e| got.push(e.record)).unwrap();
    assert_eq!(got, (100..103).map(ping_record).collect::<Vec<_>>());
    drop(j);
}

/// A torn record with a whole one after it (its writer died, another went on) is skipped
/// once it has waited [`TORN_WAIT`](super::reader::TORN_WAIT).
#[test]
fn a_follower_skips_a_torn_record_with_whole_ones_after_it() {
    let dir = TempDir::new("follow-torn-mid");
    let (recs, frames) = write_sample(dir.path(), 12);
    patch(&seg0(dir.path()), frames[5].0 + 4, &[0, 0, 0, 0]);
    let mut f = Follower::from_segment(dir.path(), 0);
    let mut got = Vec::new();
    f.poll(&mut |e| got.push(e.record)).unwrap();
    assert_eq!(got, recs[..5].to_vec());
    std::thread::sleep(super::reader::TORN_WAIT + Duration::from_millis(100));
    f.poll(&mut |e| got.push(e.record)).unwrap();
    let mut expect = recs.clone();
    expect.remove(5);
    assert_eq!(got, expect);
}

fn run_cli(cmd: JournalCmd) -> (i32, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = cli::run_to(cmd, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn export_prints_one_json_object_a_line_with_dollars_and_rfc3339_times() {
    let dir = TempDir::new("export");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    let all = every_record();
    for (i, r) in all.iter().enumerate() {
        append(&j, T0 + 123_456 + i as u64, r);
    }
    drop(j);
    let (code, out, _) = run_cli(JournalCmd::Export {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), all.len());
    for (v, r) in lines.iter().zip(&all) {
        assert_eq!(v["lead_id"], r.lead_id());
        assert_eq!(v["type"], r.record_type().name());
        assert!(v["ts"].as_str().unwrap().starts_with("2026-11-"), "{v}");
        assert!(
            v["ts"].as_str().unwrap().ends_with(".123456Z")
                || v["ts"].as_str().unwrap().contains('.')
        );
    }
    assert_eq!(lines[0]["lead"]["lead"]["zip"], "77002");
    assert_eq!(lines[0]["source"], "fb-17");
    assert_eq!(lines[1]["source"], serde_json::Value::Null);
    assert_eq!(lines[5]["bid"], 42.5);
    assert_eq!(lines[5]["outcome"], "bid");
    assert_eq!(lines[8]["outcome"], "timeout");
    assert_eq!(lines[8]["reason"], "timeout");
    assert_eq!(lines[9]["outcome"], "error");
    assert_eq!(lines[9]["reason"], "error");
    assert_eq!(lines[9]["detail"], "connection reset");
    assert_eq!(lines[5]["reason"], serde_json::Value::Null);
    assert_eq!(lines[11]["ranked"][1]["price"], 96.01);
    assert_eq!(lines[16]["price"], 120.0);
    assert_eq!(lines[16]["payout"], 96.0);
    assert_eq!(lines[16]["test"], false);
    let last = lines.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["test"].as_bool()),
        (Some("sale"), Some(true))
    );
    assert!(out.contains("\"price\":120.0"), "money printed exactly");
    assert_eq!(lines[17]["status"], "sold");
    assert_eq!(lines[17]["bids"], 7);
    assert_eq!(lines[17]["reason"], serde_json::Value::Null);
    assert_eq!(lines[18]["reason"], "below_reserve");
    assert_eq!(lines[0]["flow"], "lead");
    assert_eq!(
        lines[1].get("flow"),
        None,
        "unknown for records written before it"
    );
    assert_eq!(lines[19]["flow"], "ping");
    assert_eq!(lines[19]["idempotency_key"], "retry-7f3a");
    assert_eq!(lines[0].get("idempotency_key"), None);
    assert_eq!(lines[20]["flow"], "post");
    assert_eq!(lines[21]["type"], "ping_answered");
    assert_eq!(lines[21]["status"], "bid");
    assert_eq!(lines[21]["payout"], 96.0);
    assert_eq!(lines[21]["expires_in_ms"], 30_000);
    assert_eq!(lines[21]["held"][0]["buyer"], "acme-ins");
    assert_eq!(lines[21]["held"][0]["price"], 120.0);
    assert_eq!(lines[21]["held"][0]["bid_id"], "b-77");
    assert_eq!(lines[21]["held"][1]["bid_id"], serde_json::Value::Null);
    assert_eq!(lines[21]["payout_share"], 0.8);
    assert_eq!(lines[21].get("payout_fixed"), None);
    assert_eq!(lines[22]["payout_fixed"], 20.0);
    assert_eq!(
        lines[23].get("payout_share"),
        None,
        "unknown for records written before it"
    );
    assert_eq!(lines[24]["status"], "no_bid");
    assert_eq!(lines[24]["held"], serde_json::json!([]));
}

#[test]
fn show_prints_one_leads_history_relative_to_its_first_record() {
    let dir = TempDir::new("show");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    append(&j, T0, &ping_record(1));
    for (i, r) in every_record().iter().enumerate() {
        append(&j, T0 + 1000 * i as u64, r);
    }
    drop(j);
    let (code, out, _) = run_cli(JournalCmd::Show {
        lead_id: lead_id(7),
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("lead {}", lead_id(7))));
    assert!(out.contains("+0.000 ms"));
    assert!(out.contains("+18.000 ms"));
    assert!(out.contains("bid $42.50"));
    assert!(out.contains("acme-ins pays $120.00, acme-media earns $96.00"));
    assert!(out.contains("ping from blue-leads"));
    assert!(out.contains("bid: payout $20.00 (fixed $20.00) offered"));
    assert!(out.contains(
        "bid: payout $96.00 (80% share) offered for 30000 ms; held: acme-ins $120.00, blue-ins $110.00"
    ));
    assert!(out.contains("no bid"));
    assert!(!out.contains(&lead_id(1)));
    let (code, _, err) = run_cli(JournalCmd::Show {
        lead_id: lead_id(99),
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1);
    assert!(err.contains("not found"));
    // What cannot be a lead id is a usage error, said as such.
    let (code, _, err) = run_cli(JournalCmd::Show {
        lead_id: "nope".into(),
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("\"nope\" is not a lead id"), "{err}");
    // Nor is 26 digits whose first is over 7: more than 128 bits, it would name another lead.
    let mut over = lead_id(0);
    over.replace_range(0..1, "8");
    let (code, _, err) = run_cli(JournalCmd::Show {
        lead_id: over,
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 2, "{err}");
}

/// A directory with no segment in it is no journal: `export` and `show` say so and fail, as
/// `verify` does; `tail` says it waits for the first segment, and then follows it.
#[test]
fn an_empty_directory_is_no_journal_and_tail_waits_for_one() {
    let dir = TempDir::new("no-journal");
    for cmd in [
        JournalCmd::Export {
            dir: dir.path().to_path_buf(),
        },
        JournalCmd::Show {
            lead_id: lead_id(1),
            dir: dir.path().to_path_buf(),
        },
        JournalCmd::Verify {
            dir: dir.path().to_path_buf(),
        },
    ] {
        let (code, out, err) = run_cli(cmd.clone());
        assert_eq!(code, 1, "{cmd:?}: {err}");
        assert!(out.is_empty(), "{cmd:?}: {out}");
        assert!(err.contains("no journal in"), "{cmd:?}: {err}");
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cli::tail(dir.path(), 5, &mut out, &mut err, Some(1)), 0);
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("waiting for its first segment"), "{err}");
    assert!(out.is_empty());
    // Once the exchange has begun the journal, `tail` follows it without a word.
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    append(&j, T0, &ping_record(1));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(cli::tail(dir.path(), 5, &mut out, &mut err, Some(1)), 0);
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    assert!(String::from_utf8(out).unwrap().contains(&lead_id(1)));
    drop(j);
}

/// `show` says what it could not read: a torn record (an append a crash caught before its
/// commit) is noted and the history stands (exit 0), as `verify` calls such a journal intact;
/// a whole record that does not decode is damage, warned of, exit 1, as `export` has it.
#[test]
fn show_tells_of_torn_and_unreadable_records() {
    let dir = TempDir::new("show-torn");
    let (recs, frames) = write_sample(dir.path(), 12);
    patch(&seg0(dir.path()), frames[5].0 + 4, &[0, 0, 0, 0]);
    let show = || {
        run_cli(JournalCmd::Show {
            lead_id: lead_id(7),
            dir: dir.path().to_path_buf(),
        })
    };
    let (code, out, err) = show();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1 + recs.len() - 1, "{out}");
    assert!(err.contains("note: 1 torn record(s) skipped"), "{err}");
    assert!(err.contains("one may have been this lead's"), "{err}");
    // A record of payload version 0, which no build writes: its checksum holds, it does not
    // decode.
    let end = frames.last().unwrap().1;
    patch(
        &seg0(dir.path()),
        end,
        &raw_frame(RecordType::Sale as u8, T0 + 100, &[0; 80]),
    );
    let (code, out, err) = show();
    assert_eq!(code, 1, "{err}");
    assert_eq!(out.lines().count(), 1 + recs.len() - 1, "{out}");
    assert!(
        err.contains("warning: 1 whole record(s) that may be this lead's could not be read"),
        "{err}"
    );
    assert!(err.contains("note: 1 torn record(s) skipped"), "{err}");
}

/// A ping never written (no connection to the buyer in time) has no response time to show.
#[test]
fn show_says_a_ping_never_sent_was_never_sent() {
    let dir = TempDir::new("show-unsent");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    append(&j, T0, &ping_record(4));
    for (buyer, response_us) in [("slow-ins", 0), ("late-ins", 300_000)] {
        append(
            &j,
            T0 + 300_000,
            &Record::PingResult {
                lead_id: lead_id(4),
                buyer: buyer.into(),
                outcome: PingOutcome::Timeout,
                reason: None,
                response_us,
            },
        );
    }
    drop(j);
    let (code, out, _) = run_cli(JournalCmd::Show {
        lead_id: lead_id(4),
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 0);
    assert!(
        out.contains("slow-ins: timeout, the ping never sent"),
        "{out}"
    );
    assert!(out.contains("late-ins: timeout in 300.000 ms"), "{out}");
}

/// A post never sent (no free connection, a cap, a pause) is not shown as the buyer's
/// rejection; a post the buyer turned down is.
#[test]
fn show_tells_a_post_never_sent_from_a_rejection() {
    let dir = TempDir::new("show-not-posted");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    append(&j, T0, &ping_record(5));
    for (buyer, reason) in [
        (
            "busy-ins",
            "not sent: no free connection to the buyer within post_timeout_ms",
        ),
        ("picky-ins", "duplicate"),
    ] {
        append(
            &j,
            T0 + 400_000,
            &Record::PostResult {
                lead_id: lead_id(5),
                buyer: buyer.into(),
                accepted: false,
                reason: Some(reason.into()),
                response_us: 0,
                price_cents: 1500,
                buyer_lead_id: None,
            },
        );
    }
    drop(j);
    let (code, out, _) = run_cli(JournalCmd::Show {
        lead_id: lead_id(5),
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 0);
    assert!(
        out.contains("busy-ins not posted at $15.00 (not sent: no free connection"),
        "{out}"
    );
    assert!(
        out.contains("picky-ins rejected at $15.00 (duplicate)"),
        "{out}"
    );
}

/// What sellers and buyers sent is shown escaped: a line break in a source or an answer's
/// reason cannot forge a record line, an escape sequence cannot reach the terminal.
#[test]
fn show_escapes_control_characters_from_sellers_and_buyers() {
    let dir = TempDir::new("show-escape");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    let forged = "fb\n     +1.000 ms  sale            acme pays $999.00\u{1b}[2J";
    append(
        &j,
        T0,
        &Record::LeadReceived {
            lead_id: lead_id(3),
            seller: "s".into(),
            campaign: "c".into(),
            source: Some(forged.into()),
            test: false,
            lead_json: b"{}".to_vec(),
            flow: Some(LeadFlow::Lead),
            idempotency_key: None,
        },
    );
    drop(j);
    let (code, out, _) = run_cli(JournalCmd::Show {
        lead_id: lead_id(3),
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(!out.contains('\u{1b}'), "{out:?}");
    assert!(out.contains("fb\\n"), "{out}");
}

/// Ids may hold spaces, `:`, `$` and commas: one that is not plain is shown quoted, so a
/// buyer named like a bid cannot read as a bid nor split the auction's ranked list.
#[test]
fn show_quotes_ids_that_could_read_as_part_of_the_line() {
    let dir = TempDir::new("show-ids");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    let evil = "evil: bid $99.00 (bid id z) in 1.000 ms, x $1.00";
    append(&j, T0, &ping_record(6));
    append(
        &j,
        T0 + 5000,
        &Record::PingResult {
            lead_id: lead_id(6),
            buyer: evil.into(),
            outcome: PingOutcome::Bid {
                cents: 4757,
                bid_id: Some("b-1".into()),
            },
            reason: None,
            response_us: 5147,
        },
    );
    append(
        &j,
        T0 + 6000,
        &Record::AuctionClosed {
            lead_id: lead_id(6),
            bids: 2,
            ranked: vec![("honest".into(), 7721), (evil.into(), 4757)],
        },
    );
    append(
        &j,
        T0 + 7000,
        &Record::PostSent {
            lead_id: lead_id(6),
            buyer: "sep\u{2028}arated".into(),
            price_cents: 7721,
        },
    );
    drop(j);
    let (code, out, _) = run_cli(JournalCmd::Show {
        lead_id: lead_id(6),
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(r#""evil: bid $99.00 (bid id z) in 1.000 ms, x $1.00": bid $47.57 (bid id b-1) in 5.147 ms"#),
        "{out}"
    );
    assert!(
        out.contains(r#"2 bid(s); ranked: honest $77.21, "evil: bid $99.00 (bid id z) in 1.000 ms, x $1.00" $47.57"#),
        "{out}"
    );
    assert!(out.contains(r#"to "sep\u{2028}arated" at $77.21"#), "{out}");
    assert!(!out.contains('\u{2028}'), "{out:?}");
}

#[test]
fn verify_exit_codes_distinguish_intact_damaged_and_missing() {
    let dir = TempDir::new("verify");
    let (_, frames) = write_sample(dir.path(), 10);
    let (code, out, _) = run_cli(JournalCmd::Verify {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 0, "{out}");
    // A torn tail (garbage after the data, nothing committed in it) is intact.
    let end = frames[9].1;
    patch(&seg0(dir.path()), end + 16, &[0xEE]);
    let (code, out, _) = run_cli(JournalCmd::Verify {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("torn tail"));
    patch(&seg0(dir.path()), end + 16, &[0]);
    // A committed record damaged at the end is not: it is lost.
    patch(&seg0(dir.path()), frames[9].0 + 30, &[0xEE]);
    let (code, _, err) = run_cli(JournalCmd::Verify {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("committed record"), "{err}");
    // Damage with whole records after it is not.
    patch(&seg0(dir.path()), frames[2].0 + 30, &[0xEE]);
    let (code, _, err) = run_cli(JournalCmd::Verify {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("segment 0 offset {}", frames[2].0)),
        "{err}"
    );
    // verify never changes the journal.
    let (code, _, _) = run_cli(JournalCmd::Verify {
        dir: dir.path().to_path_buf(),
    });
    assert_eq!(code, 1);

    let missing = dir.path().join("nope");
    for cmd in [
        JournalCmd::Verify {
            dir: missing.clone(),
        },
        JournalCmd::Export {
            dir: missing.clone(),
        },
        JournalCmd::Show {
            lead_id: "x".into(),
            dir: missing.clone(),
        },
        JournalCmd::Tail {
            dir: missing.clone(),
            lines: 1,
        },
    ] {
        let (code, _, err) = run_cli(cmd);
        assert_eq!(code, 2);
        assert_eq!(err.lines().count(), 1);
        assert!(err.contains("not found"), "{err}");
    }
    // A path that exists but is a file is named as such, not as missing.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (code, _, err) = run_cli(JournalCmd::Export { dir: file.clone() });
    assert_eq!(code, 2);
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(
        JournalError::NotFound(file).to_string(),
        format!(
            "journal directory {} is not a directory",
            dir.path().join("a-file").display()
        )
    );
}

#[test]
fn tail_prints_the_last_records_first() {
    let dir = TempDir::new("tail");
    let (j, _) = Journal::open(opts(dir.path(), 1 << 20)).unwrap();
    for i in 0..20 {
        append(&j, T0, &ping_record(i));
    }
    let mut out = Vec::new();
    let mut err = Vec::new();
    assert_eq!(cli::tail(dir.path(), 4, &mut out, &mut err, Some(1)), 0);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(out.lines().count(), 4);
    assert!(out.lines().last().unwrap().contains(&lead_id(19)));
    drop(j);
}

/// A segment whose header never reads (not one a writer is making, which it names only once
/// its header is written) is damage: `tail` says so and fails, as `verify` and `export` do,
/// instead of waiting in silence.
#[test]
fn tail_tells_a_segment_header_that_stays_unreadable() {
    let dir = TempDir::new("tail-bad-header");
    std::fs::write(
        segment_path(dir.path(), 0),
        b"not a journal at all, just some bytes ".repeat(40),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let polls = (reader::TORN_WAIT.as_millis() / cli::TAIL_POLL.as_millis()) as u64 + 20;
    assert_eq!(
        cli::tail(dir.path(), 5, &mut out, &mut err, Some(polls)),
        1,
        "{}",
        String::from_utf8_lossy(&err)
    );
    assert!(out.is_empty());
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("bad segment header (bad magic)"), "{err}");
}

#[test]
fn the_subcommands_parse_as_the_contract_says() {
    use clap::Parser;
    #[derive(clap::Parser, Debug)]
    struct Top {
        #[command(subcommand)]
        cmd: JournalCmd,
    }
    let t = Top::try_parse_from(["journal", "export", "--dir", "/x"]).unwrap();
    assert_eq!(t.cmd, JournalCmd::Export { dir: "/x".into() });
    let t = Top::try_parse_from(["journal", "show", "01ABC", "--dir", "/x"]).unwrap();
    assert_eq!(
        t.cmd,
        JournalCmd::Show {
            lead_id: "01ABC".into(),
            dir: "/x".into()
        }
    );
    let t = Top::try_parse_from(["journal", "verify"]).unwrap();
    assert_eq!(
        t.cmd,
        JournalCmd::Verify {
            dir: cli::DEFAULT_DIR.into()
        }
    );
    let t = Top::try_parse_from(["journal", "tail", "-n", "3"]).unwrap();
    assert_eq!(
        t.cmd,
        JournalCmd::Tail {
            dir: cli::DEFAULT_DIR.into(),
            lines: 3
        }
    );
    assert!(Top::try_parse_from(["journal", "verify", "--bogus"]).is_err());
}

#[test]
fn options_from_the_example_config() {
    let cfg = crate::config::types::JournalConfig::default();
    let o = JournalOptions::from_config(&cfg).unwrap();
    assert_eq!(o.sync, SyncMode::Interval(Duration::from_millis(10)));
    assert_eq!(o.segment_bytes, 268_435_456);
    assert_eq!(o.retain_segments, 64);
    let bad = crate::config::types::JournalConfig {
        sync: "sometimes".into(),
        ..cfg.clone()
    };
    assert!(JournalOptions::from_config(&bad)
        .unwrap_err()
        .to_string()
        .contains("journal.sync"));
    let bad = crate::config::types::JournalConfig {
        segment_bytes: 1000,
        ..cfg
    };
    assert!(JournalOptions::from_config(&bad)
        .unwrap_err()
        .to_string()
        .contains("journal.segment_bytes"));
}

#[test]
fn a_segment_that_lost_its_sentinel_is_sealed_on_open() {
    let dir = TempDir::new("unsealed");
    let (j, _) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    let mut positions = Vec::new();
    for i in 0..300 {
        positions.push(append(&j, T0, &ping_record(i)));
    }
    drop(j);
    // The page holding segment 0's sentinel never reached the disk.
    let last0 = positions.iter().rfind(|p| p.segment == 0).unwrap();
    let sentinel_at = last0.offset + 256;
    assert_eq!(read_at(&seg0(dir.path()), sentinel_at, 4), vec![0xFF; 4]);
    patch(&seg0(dir.path()), sentinel_at, &[0; 4]);
    assert!(verify(dir.path()).unwrap().intact());
    let (j, report) = Journal::open(opts(dir.path(), MIN_SEGMENT_BYTES)).unwrap();
    assert_eq!(report.sealed, vec![0]);
    assert_eq!(report.records, 300);
    assert_eq!(report.tail.segment, 1);
    drop(j);
    assert_eq!(read_at(&seg0(dir.path()), sentinel_at, 4), vec![0xFF; 4]);
    assert_eq!(
        records(dir.path()),
        (0..300).map(ping_record).collect::<Vec<_>>()
    );
}

#[test]
fn frame_checksum_agrees_with_the_crc32c_crate_at_every_length() {
    let mut rng = Rng(0x05ee_dc0c);
    let mut payload = Vec::new();
    for len in 0..2100 {
        payload.clear();
        payload.extend((0..len).map(|_| rng.next() as u8));
        let mut head = [0u8; 16];
        for b in &mut head {
            *b = rng.next() as u8;
        }
        let want = crc32c::crc32c_append(crc32c::crc32c(&head), &payload);
        assert_eq!(frame_crc(&head, &payload), want, "payload of {len} bytes");
    }
}

#[test]
fn a_journal_dir_that_is_a_file_is_refused_as_such() {
    let dir = TempDir::new("dir-is-file");
    let file = dir.path().join("journal");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = match Journal::open(opts(&file, 1 << 20)) {
        Ok(_) => panic!("a file opened as a journal directory"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err,
        format!("journal directory {} is not a directory", file.display())
    );
    // The file is untouched.
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
}
