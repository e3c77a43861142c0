//! Seller-side ping-post: the bids of each `/v1/ping`, held for its `/v1/post`, and the pings
//! whose hold ran out, remembered a while longer so that a late post is told `410
//! ping_expired` rather than `404 unknown_ping`.

use super::HeldPing;
use crate::config::Snapshot;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pings whose bids are held at once; beyond it a ping is answered 503.
pub const MAX_HELD_PINGS: usize = 100_000;

/// How long a ping is remembered after its hold ran out (a post then gets 410, later 404).
pub const EXPIRED_PING_MEMORY: Duration = Duration::from_secs(3600);

/// Expired pings remembered at once; beyond it the oldest are forgotten first. An entry is
/// the ping id, its seller and two instants (about 100 bytes).
pub const MAX_EXPIRED_PINGS: usize = 100_000;

/// Held bids whose buyers were mapped onto the buyers of another config (a reload, or a start
/// replaying the journal), best first: one bid per buyer, its best. Two buyers made one (one
/// removed, its id in the other's `previous_ids`) held a bid each; the one buyer they are now
/// takes the lead once, as any buyer does, not a second time at its other bid nor again after
/// rejecting it. `priced` (the buyers that priced the lead) keeps each buyer once too.
pub fn one_bid_per_buyer<T>(bids: impl IntoIterator<Item = (usize, T)>) -> Vec<(usize, T)> {
    let mut out: Vec<(usize, T)> = Vec::new();
    for (buyer, rest) in bids {
        if !out.iter().any(|(b, _)| *b == buyer) {
            out.push((buyer, rest));
        }
    }
    out
}

/// Buyers mapped onto another config, each once, in their order ([`one_bid_per_buyer`] for a
/// plain list, such as a hold's `priced`).
pub fn each_buyer_once(buyers: impl IntoIterator<Item = usize>) -> Vec<usize> {
    one_bid_per_buyer(buyers.into_iter().map(|b| (b, ())))
        .into_iter()
        .map(|(b, ())| b)
        .collect()
}

/// What a post finds under a ping id.
pub enum Lookup<'a> {
    /// The bids are still held.
    Live(&'a mut HeldPing),
    /// The hold ran out; `posted` when a post had claimed it before. `campaign_gone`: not run
    /// out, but read back at a start whose config lacks its campaign (this id), so no post can
    /// take it (as one after a reload that removed the campaign could not).
    Expired {
        seller: &'a str,
        posted: bool,
        campaign_gone: Option<&'a str>,
    },
    /// Never held, or forgotten.
    Unknown,
}

/// A hold mapped onto a config (`None` when it cannot be).
pub type Restore = Box<dyn Fn(&Arc<Snapshot>) -> Option<HeldPing> + Send>;

/// A hold read back at a start whose config lacked its campaign: how to hold it again
/// ([`HeldPings::revive`]) once a reload brings the campaign back, and until when.
pub struct GoneHold {
    pub campaign: String,
    /// The hold mapped onto a config that has the campaign.
    pub restore: Restore,
    pub expires: Instant,
}

struct Expired {
    seller: String,
    posted: bool,
    campaign_gone: Option<GoneHold>,
    /// When it was moved here: forgotten `EXPIRED_PING_MEMORY` later.
    at: Instant,
}

/// The held pings and the recently expired ones.
#[derive(Default)]
pub struct HeldPings {
    live: HashMap<String, HeldPing>,
    expired: HashMap<String, Expired>,
    /// Expired ids in the order they expired, to forget the oldest first.
    order: VecDeque<(Instant, String)>,
}

impl HeldPings {
    /// Pings held now.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Pings held now that no post has taken.
    pub fn postable_len(&self) -> usize {
        self.live.values().filter(|h| !h.posted).count()
    }

    /// Expired pings remembered now.
    pub fn expired_len(&self) -> usize {
        self.expired.len()
    }

    /// Whether one more ping can be held, the expired ones moved out first when full, and
    /// then the posted ones: a ping a post took (past its checks, so it is not given back) is
    /// held for no post any more, and is remembered as the expired are (a second post is told
    /// 409 all the same).
    pub fn has_room(&mut self, now: Instant) -> bool {
        if self.live.len() >= MAX_HELD_PINGS {
            self.sweep(now);
        }
        if self.live.len() >= MAX_HELD_PINGS {
            let taken: Vec<String> = self
                .live
                .iter()
                .filter(|(_, h)| h.posted && !h.checking)
                .map(|(id, _)| id.clone())
                .collect();
            for id in taken {
                if let Some((id, h)) = self.live.remove_entry(&id) {
                    self.remember(id, &h, now);
                }
            }
        }
        self.live.len() < MAX_HELD_PINGS
    }

    /// Hold a ping's bids. False when `MAX_HELD_PINGS` are held even after the expired ones
    /// were moved out.
    pub fn insert(&mut self, id: String, ping: HeldPing, now: Instant) -> bool {
        if !self.has_room(now) {
            return false;
        }
        self.live.insert(id, ping);
        true
    }

    /// Remember a ping whose hold ran out at `at` (a restart reading the journal): a post is
    /// told 410, or 409 when `posted`.
    pub fn insert_expired(&mut self, id: String, seller: String, posted: bool, at: Instant) {
        self.insert_memory(id, seller, posted, None, at);
    }

    /// Remember a ping read back at a start whose config lacks its campaign: its post is told
    /// so, as it would have been before the restart, until it is forgotten as the expired are.
    pub fn insert_campaign_gone(
        &mut self,
        id: String,
        seller: String,
        gone: GoneHold,
        at: Instant,
    ) {
        self.insert_memory(id, seller, false, Some(gone), at);
    }

    /// Hold again a ping a start could not (its campaign not in that config) now that `snap`
    /// has its campaign, until its hold's end: its post then runs as any held ping's, and a
    /// later start, which reads the same hold back from the journal, holds it the same way.
    /// Once its hold has run out it is an expired ping like any other.
    pub fn revive(&mut self, id: &str, snap: &Arc<Snapshot>, now: Instant) {
        let Some(e) = self.expired.get_mut(id) else {
            return;
        };
        let Some(g) = &e.campaign_gone else {
            return;
        };
        if now >= g.expires {
            e.campaign_gone = None;
            return;
        }
        if e.posted || snap.campaign_by_id(&g.campaign).is_none() {
            return;
        }
        let Some(mut h) = (g.restore)(snap) else {
            return;
        };
        h.expires = g.expires;
        if let Some(e) = self.expired.remove(id) {
            if !self.insert(id.to_string(), h, now) {
                // No room: it stays as it was.
                self.expired.insert(id.to_string(), e);
            }
        }
    }

    fn insert_memory(
        &mut self,
        id: String,
        seller: String,
        posted: bool,
        campaign_gone: Option<GoneHold>,
        at: Instant,
    ) {
        while self.expired.len() >= MAX_EXPIRED_PINGS {
            if !self.forget_oldest() {
                break;
            }
        }
        self.order.push_back((at, id.clone()));
        self.expired.insert(
            id,
            Expired {
                seller,
                posted,
                campaign_gone,
                at,
            },
        );
    }

    /// Mark a held or expired ping as posted, or as postable again after a refused post (a
    /// restart reading the journal). False when the ping is not known.
    pub fn set_posted(&mut self, id: &str, posted: bool) -> bool {
        if let Some(h) = self.live.get_mut(id) {
            h.posted = posted;
            h.checking = false;
            return true;
        }
        if let Some(e) = self.expired.get_mut(id) {
            e.posted = posted;
            return true;
        }
        false
    }

    /// The held ping, to give back a claim that a refused post made.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut HeldPing> {
        self.live.get_mut(id)
    }

    /// What a post of `id` at `now` finds. A hold that ran out is moved to the expired ones
    /// here, so the answer never depends on when the last sweep ran.
    pub fn lookup(&mut self, id: &str, now: Instant) -> Lookup<'_> {
        if self.live.get(id).is_some_and(|h| now >= h.expires) {
            if let Some((id, h)) = self.live.remove_entry(id) {
                self.remember(id, &h, now);
            }
        }
        if let Some(h) = self.live.get_mut(id) {
            return Lookup::Live(h);
        }
        match self.expired.get(id) {
            Some(e) => Lookup::Expired {
                seller: &e.seller,
                posted: e.posted,
                campaign_gone: e.campaign_gone.as_ref().map(|g| g.campaign.as_str()),
            },
            None => Lookup::Unknown,
        }
    }

    /// Move every hold that ran out by `now` to the expired ones, and forget expired ones
    /// older than `EXPIRED_PING_MEMORY`.
    pub fn sweep(&mut self, now: Instant) {
        let done: Vec<String> = self
            .live
            .iter()
            .filter(|(_, h)| now >= h.expires)
            .map(|(id, _)| id.clone())
            .collect();
        for id in done {
            if let Some((id, h)) = self.live.remove_entry(&id) {
                self.remember(id, &h, now);
            }
        }
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < EXPIRED_PING_MEMORY {
                break;
            }
            self.forget_oldest();
        }
    }

    fn remember(&mut self, id: String, h: &HeldPing, now: Instant) {
        let seller = h
            .snap
            .sellers
            .get(h.seller)
            .map(|s| s.id.clone())
            .unwrap_or_default();
        self.insert_expired(id, seller, h.posted, now);
    }

    /// Forget the oldest expired ping; false when none is left.
    fn forget_oldest(&mut self) -> bool {
        let Some((at, id)) = self.order.pop_front() else {
            return false;
        };
        // The same id may have expired again since (a ping id is never reused, but be exact):
        // only the entry this queue slot was written for is forgotten.
        if self.expired.get(&id).is_some_and(|e| e.at == at) {
            self.expired.remove(&id);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Snapshot;
    use std::sync::Arc;

    fn snapshot() -> Arc<Snapshot> {
        let text = include_str!("../../config/exchange.example.toml");
        match crate::config::parse(text) {
            Ok(snap) => Arc::new(snap),
            Err(e) => panic!("the example config must load: {e}"),
        }
    }

    fn ping(snap: &Arc<Snapshot>, expires: Instant) -> HeldPing {
        HeldPing::empty(snap.clone(), expires)
    }

    #[test]
    fn a_ping_past_its_hold_is_expired_until_it_is_forgotten() {
        let snap = snapshot();
        let seller = snap.sellers[0].id.clone();
        let t0 = Instant::now();
        let hold = Duration::from_millis(300);
        let mut held = HeldPings::default();
        assert!(held.insert("p1".into(), ping(&snap, t0 + hold), t0));
        assert!(matches!(held.lookup("p1", t0 + hold / 2), Lookup::Live(_)));
        // The sweep (every 50 ms in a worker) moves it out; a post later still hears 410.
        held.sweep(t0 + hold + Duration::from_millis(50));
        assert_eq!(held.len(), 0);
        let later = t0 + hold + Duration::from_secs(30);
        held.sweep(later);
        match held.lookup("p1", later) {
            Lookup::Expired {
                seller: s, posted, ..
            } => {
                assert_eq!(s, seller);
                assert!(!posted);
            }
            _ => panic!("an expired ping is remembered"),
        }
        assert!(matches!(held.lookup("other", later), Lookup::Unknown));
        let gone = t0 + hold + Duration::from_millis(50) + EXPIRED_PING_MEMORY;
        held.sweep(gone);
        assert!(matches!(held.lookup("p1", gone), Lookup::Unknown));
        assert_eq!(held.expired_len(), 0);
    }

    #[test]
    fn a_lookup_after_the_hold_finds_it_expired_without_a_sweep() {
        let snap = snapshot();
        let t0 = Instant::now();
        let mut held = HeldPings::default();
        let mut p = ping(&snap, t0 + Duration::from_millis(10));
        p.posted = true;
        assert!(held.insert("p".into(), p, t0));
        let at = t0 + Duration::from_millis(10);
        assert!(matches!(
            held.lookup("p", at),
            Lookup::Expired { posted: true, .. }
        ));
        assert_eq!(held.len(), 0);
    }

    /// Full of pings held for a minute, most of them taken by posts: the taken ones make room
    /// for new pings (a second post of one is still told it was posted), one still being
    /// checked or not taken does not.
    #[test]
    fn pings_posts_took_make_room_when_the_hold_is_full() {
        let snap = snapshot();
        let t0 = Instant::now();
        let until = t0 + Duration::from_secs(60);
        let mut held = HeldPings::default();
        for i in 0..MAX_HELD_PINGS {
            let mut p = ping(&snap, until);
            p.posted = i < 3;
            p.checking = i == 2;
            assert!(held.insert(format!("p{i}"), p, t0));
        }
        assert_eq!(held.len(), MAX_HELD_PINGS);
        // Two were taken and checked: room for two, not a third.
        assert!(held.insert("new-1".into(), ping(&snap, until), t0));
        assert!(held.insert("new-2".into(), ping(&snap, until), t0));
        assert!(!held.insert("new-3".into(), ping(&snap, until), t0));
        assert!(matches!(
            held.lookup("p0", t0),
            Lookup::Expired { posted: true, .. }
        ));
        assert!(matches!(held.lookup("p2", t0), Lookup::Live(_)));
        assert!(matches!(held.lookup("p3", t0), Lookup::Live(_)));
    }

    #[test]
    fn expired_pings_are_bounded_oldest_first() {
        let snap = snapshot();
        let t0 = Instant::now();
        let mut held = HeldPings::default();
        let n = MAX_EXPIRED_PINGS + 10;
        for i in 0..n {
            let id = format!("p{i}");
            let at = t0 + Duration::from_micros(i as u64);
            assert!(held.insert(id.clone(), ping(&snap, at), at));
            let _ = held.lookup(&id, at);
        }
        assert_eq!(held.expired_len(), MAX_EXPIRED_PINGS);
        let end = t0 + Duration::from_secs(1);
        assert!(matches!(held.lookup("p0", end), Lookup::Unknown));
        assert!(matches!(held.lookup("p9", end), Lookup::Unknown));
        assert!(matches!(held.lookup("p10", end), Lookup::Expired { .. }));
        assert!(matches!(
            held.lookup(&format!("p{}", n - 1), end),
            Lookup::Expired { .. }
        ));
    }
}
