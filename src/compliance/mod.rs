//! Content rules that refuse a lead before any buyer sees it: duplicates and suppressed phones.
//!
//! Both checks are pure and thread-safe: no sockets, no clock. The worker passes the lead and the
//! time, and turns a refusal into a 422 with code `duplicate` or `suppressed` (PROTOCOL.md §1).
//!
//! - [`Suppression`]: a campaign's do-not-contact list, loaded once from `suppression_file` and
//!   shared read-only by every worker.
//! - [`DedupeIndex`]: one index shared by every worker (in an `Arc`), keyed by hashes of the
//!   normalised phone and lowercased email scoped by campaign ([`dedupe_keys`]). Its
//!   check-and-insert is atomic, so when the same lead lands on two workers at the same instant
//!   exactly one passes.
//!
//! Key hashes are derived with a fixed, spelled-out function ([`key_hash`]) rather than a
//! per-process random one: the index is rebuilt on start from the journal's `lead_received`
//! records, and a key must mean the same thing before and after a restart or an upgrade.

mod dedupe;
mod suppression;

#[cfg(test)]
mod tests;

pub use dedupe::{DedupeIndex, DEDUPE_SHARDS, EVICT_STEPS_PER_KEY};
pub use suppression::{Suppression, SuppressionError, MAX_SUPPRESSED, MAX_SUPPRESSION_LINE_BYTES};

use crate::lead::Fields;

/// Keys one lead yields: its phone and its email. A caller adding its own keys stays under this.
pub const MAX_KEYS_PER_LEAD: usize = 2;

/// Domain tag of a phone key, so a phone and an email with the same text never share a key.
const TAG_PHONE: u8 = b'p';
/// Domain tag of an email key.
const TAG_EMAIL: u8 = b'e';

/// The dedupe keys of `lead` in `campaign`: one for the normalised phone (10 digits, see
/// [`crate::lead::normalized_phone`]) and one for the trimmed, lowercased email, each present only
/// when the field is. `out` is cleared first so a worker can reuse one buffer for every lead.
///
/// Keys are scoped by campaign: the same consumer may be sold once per campaign.
pub fn dedupe_keys(campaign: &str, lead: &Fields, out: &mut Vec<u64>) {
    out.clear();
    if let Some(phone) = lead.get("phone").and_then(crate::lead::normalized_phone) {
        out.push(key_hash(campaign, TAG_PHONE, phone.chars()));
    }
    if let Some(email) = lead.get("email").and_then(|v| v.as_str()) {
        let email = email.trim();
        if !email.is_empty() {
            out.push(key_hash(
                campaign,
                TAG_EMAIL,
                email.chars().flat_map(char::to_lowercase),
            ));
        }
    }
}

/// FNV-1a offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A stable 64-bit key for `value` of kind `tag` in `campaign`.
///
/// FNV-1a over (campaign length, campaign, tag, value as UTF-8), then a MurmurHash3 finaliser so
/// that every input bit reaches every output bit. The length prefix keeps `("ab", "c…")` and
/// `("a", "bc…")` apart. The function is written out here, not borrowed from `std::hash`, whose
/// algorithms may change between Rust releases: the journal outlives the binary that wrote it.
/// Taking chars lets the email be lowercased while hashing, without a temporary string.
pub fn key_hash(campaign: &str, tag: u8, value: impl Iterator<Item = char>) -> u64 {
    let mut h = Fnv(FNV_OFFSET);
    h.bytes(&(campaign.len() as u64).to_le_bytes());
    h.bytes(campaign.as_bytes());
    h.bytes(&[tag]);
    let mut buf = [0u8; 4];
    for c in value {
        h.bytes(c.encode_utf8(&mut buf).as_bytes());
    }
    fmix64(h.0)
}

struct Fnv(u64);

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }
}

/// MurmurHash3's 64-bit finaliser: a bijection with full avalanche.
pub(crate) const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Hashes a `u64` map key that is already well spread (or a phone number) by one seeded
/// [`fmix64`]: cheaper than SipHash on the hot path.
///
/// The seed is per process for the shared dedupe index, so a seller who learns the fixed key
/// function still cannot aim many leads at one bucket of one shard; it is zero for the
/// suppression set, whose contents come from the operator.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MixState {
    seed: u64,
}

impl MixState {
    pub(crate) fn with_seed(seed: u64) -> MixState {
        MixState { seed }
    }

    /// A seed that differs between processes, from std's own source of per-process randomness.
    pub(crate) fn random() -> MixState {
        use std::hash::{BuildHasher, Hasher};
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        MixState { seed }
    }

    pub(crate) fn mix(&self, k: u64) -> u64 {
        fmix64(k ^ self.seed)
    }
}

impl std::hash::BuildHasher for MixState {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher {
            seed: self.seed,
            state: FNV_OFFSET,
        }
    }
}

/// The hasher of [`MixState`]. Maps here only ever hash one `u64`; arbitrary bytes still work
/// (FNV-1a) so the type is a correct `Hasher` for any key.
pub(crate) struct MixHasher {
    seed: u64,
    state: u64,
}

impl std::hash::Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state ^= u64::from(b);
            self.state = self.state.wrapping_mul(FNV_PRIME);
        }
    }
    fn write_u64(&mut self, k: u64) {
        self.state = self.state.rotate_left(29) ^ k;
    }
    fn finish(&self) -> u64 {
        fmix64(self.state ^ self.seed)
    }
}
