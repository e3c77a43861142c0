//! A lead's start: validation, compliance, eligibility, held bids and fixed-price plans.

use super::*;

impl Worker {
    pub(super) fn start_lead(&mut self, key: Key, head: &RequestHead, body: &[u8], flow: Flow) {
        let arrival = self.now;
        steps::mark_after(Step::SellerRecv, Step::SellerDecode);
        let seller = match self.authenticate(head) {
            Ok(s) => s,
            Err(r) => return self.refuse(key, &r, None, &[]),
        };
        self.authorised(key);
        // A retry under a key already used is answered from the first request, before it
        // counts against the seller's rate. A `/v1/post` needs no key: its ping id is one.
        let mut keyed: Option<(u128, u64, &str)> = None;
        if let (Some(k), false) = (head.idempotency_key.as_deref(), flow == Flow::Post) {
            if let Err(m) = idempotency::check_key(k) {
                let r = Refusal {
                    status: 400,
                    code: "invalid_idempotency_key",
                    message: m.to_string(),
                    field: None,
                };
                return self.refuse(key, &r, None, &[]);
            }
            let idem = &self.shared.idempotency;
            let id = idem.id(&self.gen.rt.snap.sellers[seller].id, k);
            let fp = idem.fingerprint(flow.journal().code(), body);
            match idem.get(id, fp, self.shared.clock.now_us()) {
                Seen::New => keyed = Some((id, fp, k)),
                seen => return self.answer_keyed_retry(key, seller, seen, flow),
            }
        }
        // A `/v1/post` completes a ping that was counted: one lead, counted once.
        if flow != Flow::Post && !self.gen.rt.admit_rate(seller, self.now) {
            let r = Refusal {
                status: 429,
                code: "rate_limited",
                message: "over this seller's max_leads_per_second".into(),
                field: None,
            };
            return self.refuse(key, &r, None, &[("Retry-After", "1")]);
        }
        steps::mark_after(Step::SellerDecode, Step::AuthRate);
        let gen = self.gen.clone();
        let snap = &gen.rt.snap;
        // A post completes a held ping: it names the ping, and the ping names the campaign.
        let mut held: Option<(String, Vec<HeldBid>, crate::lead::Fields)> = None;
        let mut held_rule: Option<crate::config::Payout> = None;
        let mut ping_bids: Option<u32> = None;
        let mut priced_by_ping: Vec<usize> = Vec::new();
        let mut post_test_mismatch: Option<Refusal> = None;
        let mut req = if flow == Flow::Post {
            let mut post = match lead::parse_post_request(body) {
                Ok(p) => p,
                Err(r) => return self.refuse(key, &r, None, &[]),
            };
            // The id in either case, as a lookup takes it.
            if let Some(id) = lookup::canonical_lead_id(&post.ping_id) {
                post.ping_id = id;
            }
            let Claimed {
                campaign,
                test,
                bids,
                fields,
                rule,
                bids_received: received,
                source,
                priced,
            } = match self.claim_held(&post.ping_id, snap, seller) {
                Ok(h) => h,
                Err(r) if r.code == "in_progress" => {
                    return self.refuse(key, &r, None, &[("Retry-After", "1")])
                }
                Err(r) => return self.refuse(key, &r, None, &[]),
            };
            post_test_mismatch = lead::check_post_test(test, post.test).err();
            held = Some((post.ping_id, bids, fields));
            held_rule = rule;
            ping_bids = Some(received);
            priced_by_ping = priced;
            LeadRequest {
                campaign: snap.campaigns[campaign].id.clone(),
                source,
                test,
                lead: post.lead,
                consent: post.consent,
            }
        } else {
            match lead::parse_request(body) {
                Ok(r) => r,
                Err(r) => return self.refuse(key, &r, None, &[]),
            }
        };
        // Buyers get a state as its USPS code, however the seller spelt it (` tx`).
        lead::normalize_codes(&mut req.lead);
        steps::mark_after(Step::AuthRate, Step::Parse);
        // Whatever refuses a post below gives its ping back, so the seller may post again
        // (its hold may have run out meanwhile: a later post is then told 410, not 409).
        let unclaim = |w: &Self, held: &Option<(String, Vec<HeldBid>, crate::lead::Fields)>| {
            if let Some((id, _, _)) = held {
                w.shared.held.lock().set_posted(id, false);
            }
        };
        let Some(campaign) = snap.campaign_by_id(&req.campaign) else {
            let r = Refusal {
                status: 404,
                code: "unknown_campaign",
                message: format!("no campaign {:?}", req.campaign),
                field: Some("campaign".into()),
            };
            return self.refuse(key, &r, None, &[]);
        };
        if !snap.sellers[seller].campaigns.contains(&campaign) {
            // A reload took the campaign from the seller since its ping.
            unclaim(self, &held);
            let r = Refusal {
                status: 403,
                code: "forbidden",
                message: format!(
                    "seller {} may not post to campaign {}",
                    snap.sellers[seller].id, req.campaign
                ),
                field: Some("campaign".into()),
            };
            return self.refuse(key, &r, None, &[]);
        }
        let in_flight = self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
        if in_flight >= snap.server.max_in_flight || self.leads.is_full() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            unclaim(self, &held);
            let r = Refusal {
                status: 503,
                code: "overloaded",
                message: "too many auctions in flight".into(),
                field: None,
            };
            return self.refuse(key, &r, None, &[("Retry-After", "1")]);
        }
        // A ping with no room to hold its bids is turned away before its buyers are pinged
        // for nothing (the room is looked at again when the bids are held).
        if flow == Flow::Ping && !self.shared.held.lock().has_room(Instant::now()) {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return self.refuse(key, &held_full(), None, &[("Retry-After", "1")]);
        }
        // A post keeps its ping's id, so the journal tells the whole story under one lead id.
        let ulid = ulid::Ulid::new();
        let lead_id = match &held {
            Some((id, _, _)) => id.clone(),
            None => ulid.to_string(),
        };
        // The key names this lead from now on, unless a retry racing this one on another
        // connection took it first.
        if let Some((id, fp, _)) = keyed {
            let now_us = self.shared.clock.now_us();
            let seen = self.shared.idempotency.claim(id, fp, ulid.0, now_us);
            if seen != Seen::New {
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                return self.answer_keyed_retry(key, seller, seen, flow);
            }
        }
        let forget_key = |w: &Self| {
            if let Some((id, _, _)) = keyed {
                w.shared.idempotency.forget(id, ulid.0);
            }
        };
        let c = &snap.campaigns[campaign];
        let seller_id = snap.sellers[seller].id.as_str();
        steps::mark_after(Step::Parse, Step::Admit);
        // Nothing is auctioned that the journal did not take: no record, no sale. Nor is a
        // lead taken whose later records (posts, sales) might find no room: on a full disk
        // the journal keeps what room is left for the leads already running.
        let record = RecordRef::LeadReceived {
            lead_id: &lead_id,
            seller: seller_id,
            campaign: &c.id,
            // An over-long source is refused just below; the record keeps its start (and the
            // body, all of it).
            source: req
                .source
                .as_deref()
                .map(|s| lead::clip_str(s, lead::MAX_SOURCE_BYTES)),
            test: req.test,
            lead_json: body,
            flow: Some(flow.journal()),
            idempotency_key: keyed.map(|k| k.2),
        };
        let received = if self.shared.journal.accepts_leads() {
            self.journal(&record)
        } else {
            None
        };
        if received.is_none() {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            unclaim(self, &held);
            forget_key(self);
            let r = Refusal {
                status: 503,
                code: "journal_unavailable",
                message: "the journal cannot record leads right now".into(),
                field: None,
            };
            return self.refuse(key, &r, None, &[("Retry-After", "1")]);
        }
        steps::mark_after(Step::Admit, Step::JournalReceived);
        let valid = match (&held, flow) {
            (_, Flow::Ping) => lead::validate_ping(&req, c),
            (Some((_, _, fields)), _) => lead::validate(&req, c)
                .and_then(|()| lead::check_ping_match(fields, &req.lead))
                .and_then(|()| post_test_mismatch.map_or(Ok(()), Err)),
            (None, _) => lead::validate(&req, c),
        };
        // Compliance, for leads that carry the consumer (a ping does not): suppression first,
        // so that a suppressed consumer takes no room in the dedupe index.
        let valid = match valid {
            Ok(()) if flow != Flow::Ping => self.compliance(c, &req),
            other => other,
        };
        if let Err(r) = valid {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            unclaim(self, &held);
            if let Some(pos) = self.journal(&RecordRef::Rejected {
                lead_id: &lead_id,
                seller: seller_id,
                campaign: &c.id,
                http_status: r.status,
                code: r.code,
                field: r.field.as_deref(),
                message: Some(lead::clip_str(&r.message, MAX_JOURNALED_MESSAGE)),
            }) {
                self.sync_journal(pos);
            }
            {
                let mut st = self.stats.lock();
                let cs = st.campaign(&c.id);
                if held.is_some() {
                    // The ping stays postable: a refused post is an attempt, not a lead.
                    cs.posts_refused += 1;
                } else if flow == Flow::Ping {
                    cs.pings_refused += 1;
                } else {
                    cs.leads += 1;
                    cs.rejected += 1;
                    cs.test_leads += u64::from(req.test);
                }
            }
            return self.refuse(key, &r, Some((&lead_id, req.test)), &[]);
        }
        // The post is taken: the ping is posted for good.
        if let Some((id, _, _)) = &held {
            if let Some(h) = self.shared.held.lock().get_mut(id) {
                h.checking = false;
            }
        }

        let params = Params {
            ping_only: flow == Flow::Ping,
            ..campaign_params(c, snap)
        };
        steps::mark_after(Step::JournalReceived, Step::Validate);
        let fixed_price = c.method != Distribution::PingPost && flow == Flow::Direct;
        // Bids already collected (a held ping) or fixed prices: nothing to ping, and the
        // ping results are not journaled again.
        let from_plan = held.is_some() || fixed_price;
        // Posts down a list in its order, not re-ranked by price.
        let in_order = Params {
            in_order: true,
            ..params
        };
        let auction = match &held {
            Some((_, bids, _)) => {
                // The full lead and its consent decide again who may have it: the ping carried
                // neither the consumer nor, often, the consent (its disclosed buyers and
                // vertical), and caps, hours and pauses may have changed since.
                let eligible = self.eligible_buyers(&gen.rt, campaign, &req, |_| true);
                // A bidder the operator paused, or whose cap or budget other leads used up,
                // since its bid stays in the list: its turn finds it paused or capped, the
                // journal says so, and the seller hears `buyers_paused` or `buyers_capped`,
                // not that nobody was eligible.
                let bids: Vec<HeldBid> = bids
                    .iter()
                    .filter(|(b, _, _)| {
                        eligible.contains(b)
                            || self.only_paused_or_at_cap(&gen.rt, campaign, &req, *b)
                    })
                    .cloned()
                    .collect();
                // Down the held list: bids were held best first, fixed prices in their
                // method's order.
                Auction::from_held(in_order, arrival, self.now, &bids)
            }
            // Fixed-price distribution: no pings, posts in the method's order at each price.
            None if fixed_price => {
                let plan = self.fixed_price_plan(&gen.rt, campaign, &req, c.method, &[]);
                Auction::from_held(in_order, arrival, self.now, &plan)
            }
            // A fixed-price campaign's ping pings nobody: it is answered from its buyers'
            // prices (`hold_bids`), whether or not they also take pings elsewhere.
            None if c.method != Distribution::PingPost => {
                Auction::new(params, arrival, self.now, &[])
            }
            None => {
                let mut eligible =
                    self.eligible_buyers(&gen.rt, campaign, &req, |b| b.ping.is_some());
                if eligible.len() > MAX_PINGS_PER_LEAD {
                    self.ping_a_run_of(&mut eligible);
                    let beyond = eligible.len() - MAX_PINGS_PER_LEAD;
                    self.stats.lock().campaign(&c.id).buyers_not_pinged += beyond as u64;
                    eligible.truncate(MAX_PINGS_PER_LEAD);
                }
                Auction::new(params, arrival, self.now, &eligible)
            }
        };
        steps::mark_after(Step::Validate, Step::Match);
        let slots = auction.slots();
        let Some(conn) = self.sellers.get_mut(key) else {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return;
        };
        let close = conn.no_more_requests;
        let seq = conn.first_seq + conn.pending.len() as u64;
        conn.pending.push_back(Reply::Waiting { close });
        let lead = Lead {
            id: lead_id,
            flow,
            seller,
            campaign,
            gen: gen.clone(),
            req,
            ping_body: Vec::new(),
            ping_timeout_ms: 0,
            pings_to_attach: 0,
            auction,
            slot_conn: vec![None; slots],
            reservations: (0..slots).map(|_| None).collect(),
            close_journaled: from_plan,
            journaled: vec![0; slots],
            pings_journaled: 0,
            posts_journaled: 0,
            promised: 0,
            answer_promised: false,
            ping_hint: None,
            fallback_done: false,
            priced_by_ping,
            prior: None,
            ping_bids,
            close_from_plan: from_plan,
            payout_cents: 0,
            payout_rule: held_rule.unwrap_or(snap.sellers[seller].payout),
            idempotency_key: keyed.map(|(id, _, _)| id),
            sold_cents: 0,
            sales: 0,
            origin: (key, seq),
            timer_at: None,
        };
        match self.leads.insert(lead) {
            Some(lk) => self.dirty.push(lk),
            None => {
                // Unreachable: fullness was checked above; answer 503 rather than lose the request.
                self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                if let Some((id, _, _)) = keyed {
                    self.shared.idempotency.forget(id, ulid.0);
                }
                if let Some(conn) = self.sellers.get_mut(key) {
                    conn.pending.pop_back();
                }
                let r = Refusal {
                    status: 503,
                    code: "overloaded",
                    message: "too many auctions in flight".into(),
                    field: None,
                };
                self.refuse(key, &r, None, &[("Retry-After", "1")]);
            }
        }
    }

    /// A request whose `Idempotency-Key` already names a lead: the same request again gets
    /// that lead's answer (read back from the journal, in this request's place), a different
    /// one 422 `idempotency_key_reused`.
    pub(super) fn answer_keyed_retry(&mut self, key: Key, seller: usize, seen: Seen, flow: Flow) {
        match seen {
            Seen::Same(e) => {
                let lead_id = ulid::Ulid(e.lead_id).to_string();
                self.queue_lookup(key, seller, lead_id, Some(flow));
            }
            Seen::Different(e) => {
                let r = Refusal {
                    status: 422,
                    code: "idempotency_key_reused",
                    message: format!(
                        "this Idempotency-Key was first sent with another request (lead {}); \
                         a new request takes a new key",
                        ulid::Ulid(e.lead_id)
                    ),
                    field: None,
                };
                self.refuse(key, &r, None, &[]);
            }
            Seen::New => {}
        }
    }

    /// Fixed-price buyers of the campaign that may take this lead, in the order the method
    /// posts to them: waterfall by `priority`, round robin rotating one place per lead across
    /// all workers, weighted by a draw without replacement in proportion to `weight`.
    pub(super) fn fixed_price_plan(
        &self,
        rt: &Runtime,
        campaign: usize,
        req: &LeadRequest,
        method: Distribution,
        exclude: &[usize],
    ) -> Vec<HeldBid> {
        let snap = &rt.snap;
        // A price under the campaign's reserve is never posted to: such a buyer takes no turn
        // of the round robin and no share of the weighted draw, which would otherwise pass to
        // the buyer after it. Nor does a buyer left out of this lead's plan (`exclude`: a
        // fallback's buyers the auction pinged).
        let reserve = snap.campaigns[campaign].reserve_cents;
        let mut buyers = self.eligible_buyers(rt, campaign, req, |b| {
            b.price_cents.is_some_and(|p| p >= reserve) && b.post.is_some()
        });
        buyers.retain(|b| !exclude.contains(b));
        buyers.sort_by_key(|&b| (snap.buyers[b].priority, b));
        match method {
            Distribution::RoundRobin => {
                let firsts = snap.campaigns[campaign].sale.max_sales();
                rt.round_robin[campaign].order(&mut buyers, firsts)
            }
            Distribution::Weighted => {
                // Weight 0: never drawn.
                buyers.retain(|&b| snap.buyers[b].weight > 0);
                let mut drawn = Vec::with_capacity(buyers.len());
                while !buyers.is_empty() {
                    let total: u64 = buyers
                        .iter()
                        .map(|&b| u64::from(snap.buyers[b].weight))
                        .sum();
                    let mut pick = self.next_random() % total.max(1);
                    let mut at = 0;
                    for (i, &b) in buyers.iter().enumerate() {
                        let w = u64::from(snap.buyers[b].weight);
                        if pick < w {
                            at = i;
                            break;
                        }
                        pick -= w;
                    }
                    drawn.push(buyers.remove(at));
                }
                buyers = drawn;
            }
            _ => {}
        }
        buyers
            .into_iter()
            .map(|b| (b, snap.buyers[b].price_cents.unwrap_or(0), None))
            .collect()
    }

    /// xorshift64*: the weighted draw needs no cryptographic quality, only spread.
    /// More buyers eligible than a lead pings: put first a run of [`MAX_PINGS_PER_LEAD`] of
    /// them that starts at a random place in the list (wrapping past its end), in config
    /// order, so that from lead to lead each buyer is pinged as often as any other rather
    /// than the ones late in the config never.
    #[cold]
    fn ping_a_run_of(&self, eligible: &mut [usize]) {
        let start = (self.next_random() % eligible.len() as u64) as usize;
        eligible.rotate_left(start);
        eligible[..MAX_PINGS_PER_LEAD].sort_unstable();
    }

    pub(super) fn next_random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 422 `suppressed` for a phone on the campaign's suppression list; 422 `duplicate` for a
    /// phone or email already seen in the campaign within `dedupe_days` (atomically across
    /// workers: of two identical leads at once, exactly one passes).
    pub(super) fn compliance(
        &mut self,
        c: &crate::config::Campaign,
        req: &LeadRequest,
    ) -> Result<(), Refusal> {
        if let Some(list) = &c.suppression {
            let phone = req.lead.get("phone").and_then(lead::normalized_phone);
            if phone.is_some_and(|p| list.contains(&p)) {
                return Err(Refusal {
                    status: 422,
                    code: "suppressed",
                    message: "this phone number is on the suppression list".into(),
                    field: Some("lead.phone".into()),
                });
            }
        }
        // A test lead is neither checked against the index nor put in it: a seller testing its
        // integration with a real consumer's data must not make that consumer's real lead a
        // duplicate.
        if c.dedupe_days > 0 && !req.test {
            crate::compliance::dedupe_keys(&c.id, &req.lead, &mut self.dedupe_keys);
            let window_us = u64::from(c.dedupe_days) * 86_400_000_000;
            // The exchange's own clock, as for `Idempotency-Key`s: a wall clock stepped a day
            // forward must not let the consumer just sold through again.
            let now_us = self.shared.clock.now_us();
            if let Some(seen) = self
                .shared
                .dedupe
                .first_seen(&self.dedupe_keys, now_us, window_us)
            {
                // The phone's key comes first when the lead has one (`dedupe_keys`).
                let has_phone = req
                    .lead
                    .get("phone")
                    .and_then(lead::normalized_phone)
                    .is_some();
                let field = if seen == 0 && has_phone {
                    "phone"
                } else {
                    "email"
                };
                return Err(Refusal {
                    status: 422,
                    code: "duplicate",
                    message: format!(
                        "the same {} was received in this campaign within {} day{}",
                        field,
                        c.dedupe_days,
                        if c.dedupe_days == 1 { "" } else { "s" }
                    ),
                    field: Some(format!("lead.{field}")),
                });
            }
        }
        Ok(())
    }

    /// Claim a held ping for its post: 404 when unknown (or another seller's), 410 when
    /// expired, 409 when already posted. A ping held under an earlier config is mapped onto
    /// `snap` by id: its campaign (404 when gone) and its bids (those of buyers still
    /// configured).
    pub(super) fn claim_held(
        &self,
        ping_id: &str,
        snap: &Snapshot,
        seller: usize,
    ) -> Result<Claimed, Refusal> {
        let refusal = |status, code: &'static str, message: &str| Refusal {
            status,
            code,
            message: message.to_string(),
            field: Some("ping_id".into()),
        };
        let same_seller = |id: Option<&str>| id == snap.sellers.get(seller).map(|s| s.id.as_str());
        let mut held = self.shared.held.lock();
        // A hold a start could not map (its campaign not in that config), held again now
        // that a reload has brought its campaign back.
        held.revive(ping_id, &self.gen.rt.snap, Instant::now());
        let h = match held.lookup(ping_id, Instant::now()) {
            crate::net::held::Lookup::Live(h)
                if same_seller(h.snap.sellers.get(h.seller).map(|s| s.id.as_str())) =>
            {
                h
            }
            crate::net::held::Lookup::Expired {
                seller: s,
                posted,
                campaign_gone,
            } if same_seller(Some(s)) => {
                return Err(if posted {
                    refusal(409, "already_posted", "this ping was already posted")
                } else if let Some(campaign) = campaign_gone {
                    if snap.campaign_by_id(campaign).is_some() {
                        // Its campaign is back but it could not be held again: no room.
                        refusal(503, "overloaded", "too many pings held")
                    } else {
                        refusal(404, "unknown_ping", CAMPAIGN_GONE)
                    }
                } else {
                    refusal(410, "ping_expired", "the bids held for this ping expired")
                });
            }
            // A ping still in its auction holds nothing yet (its id is learnt early only
            // from an `Idempotency-Key` retry's 409 `in_progress`).
            _ => {
                return Err(refusal(
                    404,
                    "unknown_ping",
                    "no such ping holds bids (or its auction has not answered yet)",
                ))
            }
        };
        if h.posted && h.checking {
            // Another post of it is being checked right now: whether it takes the ping is
            // not known yet (a refusal gives it back).
            return Err(refusal(
                409,
                "in_progress",
                "another post of this ping is being checked; send again in a moment \
                 (it stays postable if that post is refused)",
            ));
        }
        if h.posted {
            return Err(refusal(
                409,
                "already_posted",
                "this ping was already posted",
            ));
        }
        let rule = Some(h.payout);
        if std::ptr::eq(&*h.snap, snap) {
            h.posted = true;
            h.checking = true;
            return Ok(Claimed {
                campaign: h.campaign,
                test: h.test,
                bids: h.bids.clone(),
                fields: h.fields.clone(),
                rule,
                bids_received: h.bids_received,
                source: h.source.clone(),
                priced: h.priced.clone(),
            });
        }
        // Held before a reload.
        let Some(campaign) = h
            .snap
            .campaigns
            .get(h.campaign)
            .and_then(|c| snap.campaign_by_id(&c.id))
        else {
            return Err(refusal(404, "unknown_ping", CAMPAIGN_GONE));
        };
        h.posted = true;
        h.checking = true;
        // Each bid under the buyer that answers to its id now: one per buyer, its best
        // (bids are held best first), where a reload made two buyers one. A hold read back
        // at a start maps its journaled ids, which may name a buyer that config lacked.
        let (bid_ids, priced_ids): (Vec<_>, Vec<&str>) = match &h.journaled {
            Some(j) => (
                j.bids
                    .iter()
                    .map(|(id, cents, bid_id)| (id.as_str(), *cents, *bid_id))
                    .collect(),
                j.priced.iter().map(String::as_str).collect(),
            ),
            None => (
                h.bids
                    .iter()
                    .filter_map(|(b, cents, bid_id)| {
                        Some((h.snap.buyers.get(*b)?.id.as_str(), *cents, *bid_id))
                    })
                    .collect(),
                h.priced
                    .iter()
                    .filter_map(|b| Some(h.snap.buyers.get(*b)?.id.as_str()))
                    .collect(),
            ),
        };
        let bids =
            crate::net::held::one_bid_per_buyer(bid_ids.into_iter().filter_map(
                |(id, cents, bid_id)| Some((snap.buyer_of_record(id)?, (cents, bid_id))),
            ))
            .into_iter()
            .map(|(b, (cents, bid_id))| (b, cents, bid_id))
            .collect();
        let priced = crate::net::held::each_buyer_once(
            priced_ids
                .into_iter()
                .filter_map(|id| snap.buyer_of_record(id)),
        );
        Ok(Claimed {
            campaign,
            test: h.test,
            bids,
            fields: h.fields.clone(),
            rule,
            bids_received: h.bids_received,
            source: h.source.clone(),
            priced,
        })
    }

    /// Buyers of the campaign that may take this lead: filters, consent vertical, hours, pause
    /// and caps (the matcher), the consumer's disclosed buyers when the campaign has
    /// `disclosed_buyers_only`, and `keep` (a ping URL for an auction, a fixed price for
    /// fixed-price distribution).
    pub(super) fn eligible_buyers(
        &self,
        rt: &Runtime,
        campaign: usize,
        req: &LeadRequest,
        keep: impl Fn(&crate::config::Buyer) -> bool,
    ) -> Vec<usize> {
        let snap = &rt.snap;
        let mut out = Vec::with_capacity(snap.campaigns[campaign].buyers.len());
        snap.matcher.eligible(
            campaign,
            &req.lead,
            lead::consent_vertical(req),
            Utc::now(),
            &rt.caps,
            &mut out,
        );
        let disclosed = if snap.campaigns[campaign].disclosed_buyers_only {
            lead::disclosed_buyers(req)
        } else {
            None
        };
        out.retain(|&b| {
            let buyer = &snap.buyers[b];
            keep(buyer) && disclosed.as_ref().is_none_or(|d| d.contains(&buyer.id))
        });
        out
    }

    /// Whether `buyer` would be eligible for the lead but for an operator's pause or a cap or
    /// budget used up.
    #[cold]
    pub(super) fn only_paused_or_at_cap(
        &self,
        rt: &Runtime,
        campaign: usize,
        req: &LeadRequest,
        buyer: usize,
    ) -> bool {
        use crate::eligibility::index::Skip;
        let snap = &rt.snap;
        let held_back = matches!(
            snap.matcher.explain(
                campaign,
                buyer,
                &req.lead,
                lead::consent_vertical(req),
                Utc::now(),
                &rt.caps,
            ),
            Err(Skip::Paused | Skip::AtCap)
        );
        held_back
            && (!snap.campaigns[campaign].disclosed_buyers_only
                || lead::disclosed_buyers(req).is_none_or(|d| d.contains(&snap.buyers[buyer].id)))
    }

    /// Hold a ping's bids for its post, and journal the answer (`PingAnswered`, with its
    /// position). The offer is what the seller would earn from the top `max_sales` bids; `None`
    /// when nobody bid (nothing is held).
    pub(super) fn hold_bids(
        &self,
        lead: &Lead,
    ) -> Result<(Option<i64>, Option<Position>), Refusal> {
        let snap = &lead.gen.rt.snap;
        let campaign = &snap.campaigns[lead.campaign];
        let seller = &snap.sellers[lead.seller].id;
        // No offer on a bid the buyer's budget cannot pay now.
        let affordable = |bids: &mut Vec<HeldBid>| {
            if !lead.req.test {
                let caps = &lead.gen.rt.caps;
                let now = Utc::now();
                bids.retain(|&(b, cents, _)| caps.has_room_for(b, now, cents));
            }
        };
        let mut bids = lead.auction.ranked_bids();
        affordable(&mut bids);
        if bids.is_empty() {
            // Fixed prices answer a ping as they would take the lead: a fixed-price campaign's
            // buyers, or a ping-post campaign's fallback when no bid is left, in the method's
            // order at each buyer's price, above the campaign's floor. The post goes down
            // that order (`in_order`).
            let method = match campaign.method {
                Distribution::PingPost => campaign.fallback,
                fixed => Some(fixed),
            };
            if let Some(method) = method {
                // A buyer pinged for this lead priced it itself (no bid, or under the reserve).
                // One whose ping never got a connection before the close did not see it, and
                // keeps its place, as in a lead's fallback.
                let pinged: Vec<usize> = (0..lead.auction.slots())
                    .filter(|s| ping_reached(lead, *s))
                    .map(|s| lead.auction.buyer(s))
                    .collect();
                bids =
                    self.fixed_price_plan(&lead.gen.rt, lead.campaign, &lead.req, method, &pinged);
                bids.retain(|&(_, cents, _)| cents > 0 && cents >= campaign.reserve_cents);
                affordable(&mut bids);
            }
        }
        if bids.is_empty() {
            let pos = self.journal(&RecordRef::PingAnswered {
                lead_id: &lead.id,
                campaign: &campaign.id,
                seller,
                payout_cents: 0,
                hold_ms: 0,
                held: &[],
                terms: None,
            });
            return Ok((None, pos));
        }
        let rule = snap.sellers[lead.seller].payout;
        let price: i64 = bids
            .iter()
            .take(campaign.sale.max_sales())
            .map(|&(_, cents, _)| cents)
            .sum();
        let offer = rule.for_price(price, true);
        let fields = lead
            .req
            .lead
            .select(campaign.ping_fields.iter().map(String::as_str));
        let held_ms = campaign.hold.as_millis().min(u64::MAX as u128) as u64;
        let listed: Vec<(&str, i64, Option<&str>)> = bids
            .iter()
            .map(|(b, cents, id)| {
                (
                    snap.buyers[*b].id.as_str(),
                    *cents,
                    id.as_ref().map(|t| t.as_str()),
                )
            })
            .collect();
        let record = RecordRef::PingAnswered {
            lead_id: &lead.id,
            campaign: &campaign.id,
            seller,
            payout_cents: offer,
            hold_ms: held_ms,
            held: &listed,
            terms: Some(crate::net::payout_terms(rule)),
        };
        let now = Instant::now();
        let mut held = self.shared.held.lock();
        if !held.has_room(now) {
            return Err(held_full());
        }
        // Journaled under the lock, so the record precedes any post's claim of the hold.
        let pos = self.journal(&record);
        held.insert(
            lead.id.clone(),
            crate::net::HeldPing {
                snap: snap.clone(),
                seller: lead.seller,
                campaign: lead.campaign,
                test: lead.req.test,
                bids,
                bids_received: lead.auction.bids(),
                fields,
                expires: now + campaign.hold,
                posted: false,
                checking: false,
                payout: rule,
                source: lead.req.source.clone(),
                // The buyers that saw the ping: one whose ping never got a connection did
                // not price the lead.
                priced: (0..lead.auction.slots())
                    .filter(|s| ping_reached(lead, *s))
                    .map(|s| lead.auction.buyer(s))
                    .collect(),
                journaled: None,
            },
            now,
        );
        Ok((Some(offer), pos))
    }

    // ----- buyer side --------------------------------------------------------------------
}

/// 503 for a ping when `MAX_HELD_PINGS` are held (see `HeldPings::has_room`).
fn held_full() -> Refusal {
    Refusal {
        status: 503,
        code: "overloaded",
        message: "too many pings held".into(),
        field: None,
    }
}

/// A post's answer for a held ping whose campaign the config no longer has.
const CAMPAIGN_GONE: &str = "the campaign of this ping is no longer configured";
