//! `Idempotency-Key`: a seller's name for one `POST /v1/leads` or `POST /v1/ping`, so that a
//! retry after a lost answer (a dropped connection, the seller's own timeout) is answered with
//! the first request's answer instead of auctioning the consumer a second time, or being
//! refused as a duplicate of itself.
//!
//! The index maps (seller, key) to the lead the key first named and a fingerprint of the
//! request (its endpoint and body), for [`IDEMPOTENCY_WINDOW_US`] and at most
//! [`MAX_IDEMPOTENCY_KEYS`] keys (beyond, the oldest key is forgotten first). It is shared by
//! all workers, and rebuilt at a start from the keys the journal's `lead_received` records
//! carry. Only requests with the header touch it.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use parking_lot::Mutex;

/// Longest key a seller may send, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// How long a key names its lead: a retry later than this runs as a new request.
pub const IDEMPOTENCY_WINDOW_US: u64 = 24 * 3600 * 1_000_000;
/// Keys held in all; the oldest is forgotten first beyond it (about 100 bytes each).
pub const MAX_IDEMPOTENCY_KEYS: usize = 1_000_000;
/// Independent locks: two requests contend only when their keys share a shard.
const SHARDS: usize = 16;

/// What a key named when it was first used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The lead (a ULID's 128 bits).
    pub lead_id: u128,
    /// The request's endpoint and body, hashed.
    pub fingerprint: u64,
    /// When the key was first used, µs since the Unix epoch.
    pub ts_us: u64,
}

/// The index's word on a request's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not used (within the window): the request runs.
    New,
    /// Used by the same request: its answer is the first one's.
    Same(Entry),
    /// Used by a different request: refused.
    Different(Entry),
}

struct Shard {
    map: HashMap<u128, Entry>,
    /// Keys in the order they were recorded, with their time: the oldest is dropped first.
    /// May hold keys forgotten or recorded again since; those are skipped.
    order: VecDeque<(u128, u64)>,
}

/// (seller, key) → the lead it names. See the module docs.
pub struct IdempotencyIndex {
    /// Two independent hashes of (seller, key) make its 128-bit identity: distinct keys
    /// collide with odds far below one in 2^64 over the index's life. Seeded per process;
    /// the index is rebuilt from the journal's keys and bodies at each start.
    ids: (RandomState, RandomState),
    bodies: RandomState,
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
}

/// Why a key is refused before it is looked up.
pub fn check_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() {
        return Err("Idempotency-Key is empty");
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err("Idempotency-Key is longer than 128 bytes");
    }
    if !key.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err("Idempotency-Key holds a byte that is not printable ASCII");
    }
    Ok(())
}

impl Default for IdempotencyIndex {
    fn default() -> Self {
        Self::new(MAX_IDEMPOTENCY_KEYS)
    }
}

impl IdempotencyIndex {
    /// An index holding about `max_keys` keys in all (at least one per shard). Allocates
    /// as keys come, not up front.
    pub fn new(max_keys: usize) -> IdempotencyIndex {
        IdempotencyIndex {
            ids: (RandomState::new(), RandomState::new()),
            bodies: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        map: HashMap::new(),
                        order: VecDeque::new(),
                    })
                })
                .collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// The identity of `key` as `seller` used it.
    pub fn id(&self, seller: &str, key: &str) -> u128 {
        let half = |s: &RandomState| {
            let mut h = s.build_hasher();
            h.write(seller.as_bytes());
            h.write_u8(0xff); // no seller id holds it: ("ab", "c") is not ("a", "bc")
            h.write(key.as_bytes());
            h.finish()
        };
        (u128::from(half(&self.ids.0)) << 64) | u128::from(half(&self.ids.1))
    }

    /// The fingerprint of a request: which endpoint (a `LeadFlow` code) and its body.
    pub fn fingerprint(&self, flow: u8, body: &[u8]) -> u64 {
        let mut h = self.bodies.build_hasher();
        h.write_u8(flow);
        h.write(body);
        h.finish()
    }

    fn shard(&self, id: u128) -> &Mutex<Shard> {
        &self.shards[(id as usize) % SHARDS]
    }

    /// What `id` names now, against a request of `fingerprint`.
    pub fn get(&self, id: u128, fingerprint: u64, now_us: u64) -> Seen {
        let s = self.shard(id).lock();
        match s.map.get(&id) {
            Some(e) if live(e, now_us) => judge(*e, fingerprint),
            _ => Seen::New,
        }
    }

    /// Record `id` for `lead_id` unless it already names a live lead (then say which, as
    /// [`IdempotencyIndex::get`] does). Atomic: of two requests racing with one key, one runs.
    pub fn claim(&self, id: u128, fingerprint: u64, lead_id: u128, now_us: u64) -> Seen {
        let mut s = self.shard(id).lock();
        if let Some(e) = s.map.get(&id) {
            if live(e, now_us) {
                return judge(*e, fingerprint);
            }
        }
        let entry = Entry {
            lead_id,
            fingerprint,
            ts_us: now_us,
        };
        self.put(&mut s, id, entry, now_us);
        Seen::New
    }

    /// Forget `id` if it still names `lead_id` (a request that claimed it and then never ran).
    pub fn forget(&self, id: u128, lead_id: u128) {
        let mut s = self.shard(id).lock();
        if s.map.get(&id).is_some_and(|e| e.lead_id == lead_id) {
            s.map.remove(&id);
        }
    }

    /// Put back a key read from the journal (at a start, in the journal's order).
    pub fn replay(&self, id: u128, entry: Entry, now_us: u64) {
        if !live(&entry, now_us) {
            return;
        }
        let mut s = self.shard(id).lock();
        // The first use of a key wins, as it did live.
        if s.map.get(&id).is_some_and(|e| live(e, entry.ts_us)) {
            return;
        }
        self.put(&mut s, id, entry, now_us);
    }

    fn put(&self, s: &mut Shard, id: u128, entry: Entry, now_us: u64) {
        s.map.insert(id, entry);
        s.order.push_back((id, entry.ts_us));
        // Expired keys, then the oldest beyond the shard's room.
        while let Some(&(old, ts)) = s.order.front() {
            let current = s.map.get(&old).is_some_and(|e| e.ts_us == ts);
            let expired = ts.saturating_add(IDEMPOTENCY_WINDOW_US) <= now_us;
            if current && !expired && s.map.len() <= self.per_shard {
                break;
            }
            s.order.pop_front();
            if current {
                s.map.remove(&old);
            }
        }
        // Entries forgotten or recorded again leave stale places behind: compact when they
        // outnumber the live ones.
        if s.order.len() > 2 * s.map.len() + SHARDS {
            let map = &s.map;
            let keep: VecDeque<(u128, u64)> = s
                .order
                .iter()
                .copied()
                .filter(|(k, ts)| map.get(k).is_some_and(|e| e.ts_us == *ts))
                .collect();
            s.order = keep;
        }
    }

    /// Keys held now (each shard locked in turn).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn live(e: &Entry, now_us: u64) -> bool {
    e.ts_us.saturating_add(IDEMPOTENCY_WINDOW_US) > now_us
}

fn judge(e: Entry, fingerprint: u64) -> Seen {
    if e.fingerprint == fingerprint {
        Seen::Same(e)
    } else {
        Seen::Different(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000_000;

    #[test]
    fn a_key_names_its_first_request_until_the_window_ends() {
        let ix = IdempotencyIndex::new(100);
        let id = ix.id("acme", "k-1");
        let fp = ix.fingerprint(0, b"{\"lead\":{}}");
        assert_eq!(ix.get(id, fp, T0), Seen::New);
        assert_eq!(ix.claim(id, fp, 7, T0), Seen::New);
        let e = Entry {
            lead_id: 7,
            fingerprint: fp,
            ts_us: T0,
        };
        assert_eq!(ix.claim(id, fp, 8, T0 + 1), Seen::Same(e));
        assert_eq!(ix.get(id, fp, T0 + 1), Seen::Same(e));
        let other = ix.fingerprint(0, b"{\"lead\":{\"zip\":\"1\"}}");
        assert_eq!(ix.get(id, other, T0 + 1), Seen::Different(e));
        // The same body on another endpoint is another request.
        assert_eq!(
            ix.get(id, ix.fingerprint(1, b"{\"lead\":{}}"), T0),
            Seen::Different(e)
        );
        // A day later the key is free again.
        let later = T0 + IDEMPOTENCY_WINDOW_US;
        assert_eq!(ix.get(id, fp, later), Seen::New);
        assert_eq!(ix.claim(id, other, 9, later), Seen::New);
        assert_eq!(ix.get(id, other, later).clone(), {
            Seen::Same(Entry {
                lead_id: 9,
                fingerprint: other,
                ts_us: later,
            })
        });
    }

    /// Keys age by the exchange's own clock (`StepFreeClock`): the wall clock at the start, run on by the monotonic
    /// one, so a key claimed a moment ago is live whatever the wall clock reads now.
    #[test]
    fn keys_age_by_a_clock_that_starts_at_the_wall_clock_and_never_steps() {
        let wall = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64
        };
        let before = wall();
        let ix = IdempotencyIndex::new(100);
        let clock = super::super::clock::StepFreeClock::new();
        let t = std::time::Instant::now();
        let first = clock.now_us();
        assert!(
            first >= before && first <= wall() + 1_000,
            "{first} vs {before}"
        );
        let (id, fp) = (ix.id("acme", "k"), ix.fingerprint(0, b"{}"));
        assert_eq!(ix.claim(id, fp, 1, clock.now_us()), Seen::New);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let later = clock.now_us();
        let ran = later - first;
        assert!(
            ran >= 20_000 && ran <= t.elapsed().as_micros() as u64 + 1_000,
            "{ran}"
        );
        assert!(matches!(ix.get(id, fp, later), Seen::Same(_)));
    }

    #[test]
    fn keys_are_per_seller() {
        let ix = IdempotencyIndex::new(100);
        assert_ne!(ix.id("acme", "k"), ix.id("blue", "k"));
        assert_ne!(ix.id("ab", "c"), ix.id("a", "bc"));
        let fp = ix.fingerprint(0, b"{}");
        assert_eq!(ix.claim(ix.id("acme", "k"), fp, 1, T0), Seen::New);
        assert_eq!(ix.claim(ix.id("blue", "k"), fp, 2, T0), Seen::New);
    }

    #[test]
    fn a_forgotten_claim_frees_its_key_but_not_anothers() {
        let ix = IdempotencyIndex::new(100);
        let (id, fp) = (ix.id("acme", "k"), ix.fingerprint(0, b"{}"));
        ix.claim(id, fp, 1, T0);
        ix.forget(id, 2); // not the lead it names
        assert!(matches!(ix.get(id, fp, T0), Seen::Same(_)));
        ix.forget(id, 1);
        assert_eq!(ix.get(id, fp, T0), Seen::New);
        assert_eq!(ix.claim(id, fp, 3, T0), Seen::New);
    }

    #[test]
    fn the_oldest_key_goes_first_when_full() {
        let ix = IdempotencyIndex::new(SHARDS * 4);
        let fp = ix.fingerprint(0, b"{}");
        let ids: Vec<u128> = (0..2000).map(|i| ix.id("acme", &format!("k{i}"))).collect();
        for (i, id) in ids.iter().enumerate() {
            ix.claim(*id, fp, i as u128, T0 + i as u64);
        }
        assert!(ix.len() <= SHARDS * 4, "{} keys held", ix.len());
        // The newest key of every shard is held, the first ones are gone.
        assert!(matches!(ix.get(ids[1999], fp, T0 + 2000), Seen::Same(_)));
        assert_eq!(ix.get(ids[0], fp, T0 + 2000), Seen::New);
        // Stale places do not pile up.
        for s in ix.shards.iter() {
            let s = s.lock();
            assert!(s.order.len() <= 2 * s.map.len() + SHARDS);
        }
    }

    #[test]
    fn replay_keeps_the_first_use_and_skips_expired_keys() {
        let ix = IdempotencyIndex::new(100);
        let id = ix.id("acme", "k");
        let e = |lead_id, ts_us| Entry {
            lead_id,
            fingerprint: 5,
            ts_us,
        };
        let now = T0 + IDEMPOTENCY_WINDOW_US + 10;
        ix.replay(id, e(1, T0), now); // expired by now
        assert_eq!(ix.get(id, 5, now), Seen::New);
        ix.replay(id, e(2, T0 + 20), now);
        ix.replay(id, e(3, T0 + 30), now);
        assert_eq!(ix.get(id, 5, now), Seen::Same(e(2, T0 + 20)));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(check_key("8f14e45f-ceea-467f-a0e6-5c3b1f2a9d10").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(129)).is_err());
        assert!(check_key(&"k".repeat(128)).is_ok());
        assert!(check_key("a\tb").is_err());
        assert!(check_key("clé").is_err());
    }
}
