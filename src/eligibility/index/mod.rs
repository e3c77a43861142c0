//! The per-campaign eligibility index: which buyers may receive a lead now.
//!
//! Built once per config snapshot. For each campaign it keeps its buyers in config order and,
//! per state code, a bitset of the buyers whose `states` admit that state, so a lead only ever
//! looks at buyers that can take its state. The rest is checked per candidate, cheapest first:
//! consent vertical (precomputed for the campaign's own vertical), hours (one time-zone
//! conversion per distinct zone per lead, shared by every buyer in it), zip prefixes and field
//! predicates (each distinct field looked up in the lead once), and last the pause flag and caps,
//! whose counters other cores write.

#[cfg(test)]
mod tests;

use super::filters::{
    FieldPredicate, FilterError, FilterMiss, Filters, StateCode, ZipKey, STATE_CODES,
};
use super::hours::{Schedule, ScheduleError};
use crate::caps::calendar::LocalClock;
use crate::caps::{CapTable, MAX_BUYERS};
use crate::config::types::{BuyerConfig, CampaignConfig};
use crate::lead::{Field, Fields, PathValue};
use crate::money::Cents;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::fmt;

/// Distinct lead fields per campaign whose values are looked up once per lead; predicates on
/// further fields look their value up themselves.
pub const MAX_FIELD_SLOTS: usize = 64;
// A slot's bit in `LeadView::decoded`.
const _: () = assert!(MAX_FIELD_SLOTS <= 64);
/// Distinct buyer time zones whose local clock is computed once per lead; buyers in further zones
/// compute their own.
pub const MAX_TZ_SLOTS: usize = 16;

const BITS: usize = 64;
/// Marks a field or zone beyond the per-lead caches.
const NO_SLOT: u16 = u16::MAX;

/// What the index needs to know about a buyer, compiled from its config.
#[derive(Clone, Debug, Default)]
pub struct BuyerRules {
    /// Campaign ids the buyer takes leads from.
    pub campaigns: Vec<String>,
    /// Consent verticals the buyer accepts; empty = any.
    pub verticals: Vec<String>,
    /// Lead filters.
    pub filters: Filters,
    /// Hours of operation (and the buyer's zone).
    pub schedule: Schedule,
}

/// Errors building a buyer's rules from its config; each names the key at fault.
#[derive(Debug, Clone, PartialEq)]
pub enum RulesError {
    /// Under `[buyers.filters]`.
    Filters(FilterError),
    /// In `timezone` or `hours`.
    Schedule(ScheduleError),
}

impl RulesError {
    /// The key at fault, relative to the buyer, e.g. `filters.fields[1].op` or `hours[0]`.
    pub fn key(&self) -> String {
        match self {
            RulesError::Filters(e) => format!("filters.{}", e.key()),
            RulesError::Schedule(e) => e.key(),
        }
    }
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RulesError::Filters(e) => write!(f, "filters.{e}"),
            RulesError::Schedule(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for RulesError {}

impl BuyerRules {
    /// Compile a buyer's `campaigns`, `verticals`, `[buyers.filters]`, `timezone` and `hours`.
    pub fn from_config(cfg: &BuyerConfig) -> Result<BuyerRules, RulesError> {
        let filters = match &cfg.filters {
            Some(f) => Filters::compile(f).map_err(RulesError::Filters)?,
            None => Filters::any(),
        };
        let schedule =
            Schedule::parse(cfg.timezone.as_deref(), &cfg.hours).map_err(RulesError::Schedule)?;
        Ok(BuyerRules {
            campaigns: cfg.campaigns.clone(),
            verticals: cfg.verticals.clone(),
            filters,
            schedule,
        })
    }
}

impl CampaignRules {
    /// The parts of a campaign's config the index uses.
    pub fn from_config(cfg: &CampaignConfig) -> CampaignRules {
        CampaignRules {
            id: cfg.id.clone(),
            vertical: cfg.vertical.clone(),
            min_price_cents: 1,
        }
    }
}

/// What the index needs to know about a campaign.
#[derive(Clone, Debug, Default)]
pub struct CampaignRules {
    /// The campaign id buyers name in their `campaigns`.
    pub id: String,
    /// The campaign's vertical, used when a lead carries no consent vertical.
    pub vertical: String,
    /// The least a sale of the campaign costs a buyer (its reserve price, at least a cent): a
    /// buyer whose budget has less left could pay for none, and is not eligible.
    pub min_price_cents: Cents,
}

/// Why a buyer was not eligible for a lead, for the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The buyer does not take this campaign (or the campaign or buyer index is unknown).
    NotInCampaign,
    /// The consent's vertical (or the campaign's) is not among the buyer's `verticals`.
    Vertical,
    /// Outside the buyer's hours.
    Closed,
    /// The lead fails one of the buyer's filters.
    Filter(FilterMiss),
    /// The operator paused the buyer.
    Paused,
    /// A cap or the day's budget is used up.
    AtCap,
}

struct Buyer {
    verticals: Box<[Box<str>]>,
    filters: Filters,
    schedule: Schedule,
    /// Index into the per-lead clock cache, or `NO_SLOT`.
    tz_slot: u16,
}

struct Campaign {
    vertical: Box<str>,
    /// [`CampaignRules::min_price_cents`].
    min_price_cents: Cents,
    /// Buyers (global indexes) in config order; bit `i` of every set below is `members[i]`.
    members: Box<[u32]>,
    /// `u64` words per bitset.
    words: usize,
    /// For each state code, which bitset in `sets` holds its candidates.
    state_set: Box<[u16]>,
    /// Bitsets, `words` words each, back to back. Set 0 is the buyers without a state filter,
    /// used for leads without a usable state and for states no buyer names.
    sets: Box<[u64]>,
    /// Buyers that accept the campaign's own vertical.
    vertical_ok: Box<[u64]>,
    /// Distinct fields the members' predicates read, looked up once per lead.
    fields: Box<[Box<str>]>,
    /// Per member, per predicate: its slot in `fields`, or `NO_SLOT`.
    member_slots: Box<[Box<[u16]>]>,
}

/// The eligibility index of one config snapshot. Immutable, `Send + Sync`: share it as an `Arc`.
pub struct Matcher {
    campaigns: Box<[Campaign]>,
    buyers: Box<[Buyer]>,
}

/// Per-lead values shared by every candidate buyer.
struct LeadView<'a> {
    lead: &'a Fields,
    zip: Option<ZipKey>,
    values: [Option<Field<'a>>; MAX_FIELD_SLOTS],
    /// Slots whose value is a nested string with escapes, which only a decoded copy holds:
    /// read again at each test (rare; it keeps `values` plain borrows, with nothing to drop).
    decoded: u64,
    clocks: [Option<LocalClock>; MAX_TZ_SLOTS],
    now: DateTime<Utc>,
}

impl Matcher {
    /// Index `buyers` (config order) under `campaigns` (config order). Campaign names a buyer
    /// lists that are not in `campaigns` are ignored, and so are buyers beyond
    /// [`MAX_BUYERS`](crate::caps::MAX_BUYERS), which the cap table does not hold either.
    pub fn new(campaigns: &[CampaignRules], buyers: &[BuyerRules]) -> Matcher {
        let mut zones: Vec<Tz> = Vec::new();
        let compiled: Vec<Buyer> = buyers
            .iter()
            .map(|b| {
                let tz = b.schedule.tz();
                let tz_slot = match zones.iter().position(|z| *z == tz) {
                    Some(i) => i as u16,
                    None if zones.len() < MAX_TZ_SLOTS => {
                        zones.push(tz);
                        (zones.len() - 1) as u16
                    }
                    None => NO_SLOT,
                };
                Buyer {
                    verticals: b.verticals.iter().map(|v| v.as_str().into()).collect(),
                    filters: b.filters.clone(),
                    schedule: b.schedule.clone(),
                    tz_slot,
                }
            })
            .collect();
        let campaigns = campaigns
            .iter()
            .map(|c| Campaign::build(c, buyers, &compiled))
            .collect();
        Matcher {
            campaigns,
            buyers: compiled.into_boxed_slice(),
        }
    }

    /// Buyers (indexes into the `buyers` given to [`Matcher::new`]) of campaign `campaign_idx`
    /// whose filters, consent vertical, hours, pause state and caps allow this lead now; pushed
    /// into `out` (cleared first), in config order. `consent_vertical` = `None` compares the
    /// campaign's own vertical. Buyers missing from `caps` are never eligible.
    pub fn eligible(
        &self,
        campaign_idx: usize,
        lead: &Fields,
        consent_vertical: Option<&str>,
        now: DateTime<Utc>,
        caps: &CapTable,
        out: &mut Vec<usize>,
    ) {
        out.clear();
        let Some(c) = self.campaigns.get(campaign_idx) else {
            return;
        };
        let set = match StateCode::of_lead(lead) {
            Some(s) => usize::from(c.state_set[s.index()]),
            None => 0,
        };
        let mut view = LeadView::new(c, lead, now);
        let own_vertical = consent_vertical.is_none_or(|v| v == &*c.vertical);
        let bits = &c.sets[set * c.words..(set + 1) * c.words];
        for (wi, &word) in bits.iter().enumerate() {
            let mut w = if own_vertical {
                word & c.vertical_ok[wi]
            } else {
                word
            };
            while w != 0 {
                let m = wi * BITS + w.trailing_zeros() as usize;
                w &= w - 1;
                let vertical_checked = own_vertical;
                if self
                    .check_member(c, m, consent_vertical, vertical_checked, &mut view, caps)
                    .is_ok()
                {
                    out.push(c.members[m] as usize);
                }
            }
        }
    }

    /// Why `buyer` is or is not eligible for this lead now (`Ok` = eligible), for the operator.
    /// Slower than [`Matcher::eligible`]; meant for one buyer at a time.
    pub fn explain(
        &self,
        campaign_idx: usize,
        buyer: usize,
        lead: &Fields,
        consent_vertical: Option<&str>,
        now: DateTime<Utc>,
        caps: &CapTable,
    ) -> Result<(), Skip> {
        let c = self
            .campaigns
            .get(campaign_idx)
            .ok_or(Skip::NotInCampaign)?;
        let m = c
            .members
            .iter()
            .position(|&b| b as usize == buyer)
            .ok_or(Skip::NotInCampaign)?;
        let b = &self.buyers[buyer];
        if !b.filters.state_allows(StateCode::of_lead(lead)) {
            return Err(Skip::Filter(FilterMiss::State));
        }
        let mut view = LeadView::new(c, lead, now);
        self.check_member(c, m, consent_vertical, false, &mut view, caps)
    }

    /// Number of campaigns indexed.
    pub fn campaign_count(&self) -> usize {
        self.campaigns.len()
    }

    /// The buyers of a campaign, in config order (before any per-lead check).
    pub fn campaign_buyers(&self, campaign_idx: usize) -> impl Iterator<Item = usize> + '_ {
        self.campaigns
            .get(campaign_idx)
            .into_iter()
            .flat_map(|c| c.members.iter().map(|&b| b as usize))
    }

    /// Everything but the state (which the index already applied).
    fn check_member(
        &self,
        c: &Campaign,
        m: usize,
        consent_vertical: Option<&str>,
        vertical_checked: bool,
        view: &mut LeadView<'_>,
        caps: &CapTable,
    ) -> Result<(), Skip> {
        let buyer = c.members[m] as usize;
        let b = &self.buyers[buyer];
        if !vertical_checked && !b.verticals.is_empty() {
            let v = consent_vertical.unwrap_or(&c.vertical);
            if !b.verticals.iter().any(|x| &**x == v) {
                return Err(Skip::Vertical);
            }
        }
        let clock = view.clock(b);
        if !b.schedule.is_open_on(&clock) {
            return Err(Skip::Closed);
        }
        if !b.filters.zip_allows(view.zip.as_ref()) {
            return Err(Skip::Filter(FilterMiss::Zip));
        }
        for (i, (p, &slot)) in b
            .filters
            .fields()
            .iter()
            .zip(c.member_slots[m].iter())
            .enumerate()
        {
            if !view.test(p, slot) {
                return Err(Skip::Filter(FilterMiss::Field(i)));
            }
        }
        if caps.is_paused(buyer) {
            return Err(Skip::Paused);
        }
        if !caps.has_room_above(buyer, &clock, c.min_price_cents) {
            return Err(Skip::AtCap);
        }
        Ok(())
    }
}

impl<'a> LeadView<'a> {
    fn new(c: &Campaign, lead: &'a Fields, now: DateTime<Utc>) -> LeadView<'a> {
        let mut values = [None; MAX_FIELD_SLOTS];
        let mut decoded = 0u64;
        for (i, (v, name)) in values.iter_mut().zip(c.fields.iter()).enumerate() {
            match lead.get_path(name) {
                Some(PathValue::Field(f)) => *v = Some(f),
                Some(PathValue::Decoded(_)) => decoded |= 1 << i,
                None => {}
            }
        }
        LeadView {
            lead,
            decoded,
            zip: ZipKey::of_lead(lead),
            values,
            clocks: [None; MAX_TZ_SLOTS],
            now,
        }
    }

    /// The lead's time on `b`'s local calendar, computed once per zone per lead.
    fn clock(&mut self, b: &Buyer) -> LocalClock {
        let tz = b.schedule.tz();
        let Some(cached) = self.clocks.get_mut(usize::from(b.tz_slot)) else {
            return LocalClock::at(tz, self.now);
        };
        match cached {
            Some(c) => *c,
            None => {
                let c = LocalClock::at(tz, self.now);
                *cached = Some(c);
                c
            }
        }
    }

    fn test(&self, p: &FieldPredicate, slot: u16) -> bool {
        let s = usize::from(slot);
        match self.values.get(s) {
            // `s` < MAX_FIELD_SLOTS <= 64 here.
            Some(v) if self.decoded & (1 << s) == 0 => p.test(*v),
            _ => p.test(self.lead.get_path(p.field()).as_ref().map(PathValue::field)),
        }
    }
}

impl Campaign {
    fn build(rules: &CampaignRules, raw: &[BuyerRules], buyers: &[Buyer]) -> Campaign {
        let members: Vec<u32> = raw
            .iter()
            .enumerate()
            .take(MAX_BUYERS)
            .filter(|(_, b)| b.campaigns.contains(&rules.id))
            .map(|(i, _)| i as u32)
            .collect();
        let words = members.len().div_ceil(BITS).max(1);

        // Set 0: buyers without a state filter. Then one set per state some buyer names.
        let mut state_set = vec![0u16; STATE_CODES];
        let mut any = vec![0u64; words];
        for (m, &b) in members.iter().enumerate() {
            if buyers[b as usize].filters.states().is_empty() {
                any[m / BITS] |= 1 << (m % BITS);
            }
        }
        let mut sets = any.clone();
        for (m, &b) in members.iter().enumerate() {
            for s in buyers[b as usize].filters.states() {
                let mut k = usize::from(state_set[s.index()]);
                if k == 0 {
                    k = sets.len() / words;
                    sets.extend_from_slice(&any);
                    state_set[s.index()] = k as u16;
                }
                sets[k * words + m / BITS] |= 1 << (m % BITS);
            }
        }

        let mut vertical_ok = vec![0u64; words];
        for (m, &b) in members.iter().enumerate() {
            let v = &buyers[b as usize].verticals;
            if v.is_empty() || v.iter().any(|x| **x == *rules.vertical) {
                vertical_ok[m / BITS] |= 1 << (m % BITS);
            }
        }

        let mut fields: Vec<Box<str>> = Vec::new();
        let member_slots = members
            .iter()
            .map(|&b| {
                buyers[b as usize]
                    .filters
                    .fields()
                    .iter()
                    .map(|p| match fields.iter().position(|f| **f == *p.field()) {
                        Some(i) => i as u16,
                        None if fields.len() < MAX_FIELD_SLOTS => {
                            fields.push(p.field().into());
                            (fields.len() - 1) as u16
                        }
                        None => NO_SLOT,
                    })
                    .collect()
            })
            .collect();

        Campaign {
            vertical: rules.vertical.as_str().into(),
            min_price_cents: rules.min_price_cents.max(1),
            members: members.into_boxed_slice(),
            words,
            state_set: state_set.into_boxed_slice(),
            sets: sets.into_boxed_slice(),
            vertical_ok: vertical_ok.into_boxed_slice(),
            fields: fields.into_boxed_slice(),
            member_slots,
        }
    }
}
