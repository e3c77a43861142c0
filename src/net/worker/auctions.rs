//! Driving an auction to its answer: the journal's progress, timers, the sale or fallback.

use super::*;

impl Worker {
    /// Append a record; `None` (and an error counted) when the journal refuses it.
    pub(super) fn journal(&self, rec: &RecordRef<'_>) -> Option<Position> {
        match self.shared.journal.append(unix_micros(), rec) {
            Ok(pos) => Some(pos),
            Err(_) => {
                self.stats.lock().journal_errors += 1;
                None
            }
        }
    }

    /// With `sync = "always"`, make the record durable before the seller hears of it.
    pub(super) fn sync_journal(&self, pos: Position) {
        if self.shared.journal.sync_to(pos).is_err() {
            self.stats.lock().journal_errors += 1;
        }
    }

    /// Journal what happened to a lead since the last call: each ping's answer as it comes
    /// (while the lead waits on its other buyers, not on the close's path), at the close the
    /// timeouts and the ranking, then each post's result and sale as it becomes known.
    pub(super) fn journal_progress(&mut self, key: Key) {
        let Some(lead) = self.leads.get_mut(key) else {
            return;
        };
        let snap = &lead.gen.rt.snap;
        // Bids from a held ping or fixed prices were journaled by the auction they came from.
        let results = lead.auction.ping_results();
        if !lead.close_from_plan && lead.pings_journaled < results {
            // The usual case, one answer since the last call, is that answer's slot; otherwise
            // (timeouts at the close, failures) every slot is looked at.
            let hint = lead.ping_hint.take();
            let one = hint.filter(|_| lead.pings_journaled + 1 == results);
            let slots = match one {
                Some(s) => s..s + 1,
                None => 0..lead.auction.slots(),
            };
            for s in slots {
                let Some((o, rt)) = lead.auction.ping_result(s) else {
                    continue;
                };
                if lead.journaled[s] & PING_JOURNALED != 0 {
                    continue;
                }
                lead.journaled[s] |= PING_JOURNALED;
                lead.pings_journaled += 1;
                let (outcome, reason) = match o {
                    PingOutcome::Bid { cents, bid_id } => (
                        journal::PingOutcome::Bid {
                            cents: *cents,
                            bid_id: bid_id.as_deref(),
                        },
                        None,
                    ),
                    PingOutcome::NoBid => (journal::PingOutcome::NoBid, None),
                    PingOutcome::Timeout if lead.journaled[s] & PING_PAUSED != 0 => (
                        journal::PingOutcome::Timeout,
                        Some(crate::net::NOT_SENT_PAUSED),
                    ),
                    PingOutcome::Timeout if lead.journaled[s] & PING_SENT == 0 => (
                        journal::PingOutcome::Timeout,
                        Some("not sent: no free connection to the buyer before the close"),
                    ),
                    PingOutcome::Timeout => (journal::PingOutcome::Timeout, None),
                    PingOutcome::Error(r) => (journal::PingOutcome::Error, Some(r.as_str())),
                    PingOutcome::Invalid(r) => (journal::PingOutcome::Invalid, Some(r.as_str())),
                };
                let buyer = lead.auction.buyer(s);
                if lead.journaled[s] & PING_SENT == 0 {
                    // A ping never written (no free connection before the close, or no way
                    // to the buyer): counted with its result, as it has no `ping_sent`.
                    if let Some(b) = self.stats.lock().buyer_at(lead.gen.stat_slots[buyer]) {
                        b.pings += 1;
                    }
                }
                let rec = RecordRef::PingResult {
                    lead_id: &lead.id,
                    buyer: &snap.buyers[buyer].id,
                    outcome,
                    reason,
                    // 0: never written. A ping written gets at least 1 µs.
                    response_us: rt.map_or(0, |d| (d.as_micros() as u64).max(1)),
                };
                append(&self.shared, &self.stats, &rec);
            }
        }
        if lead.auction.is_closed() && !lead.close_journaled {
            lead.close_journaled = true;
            let ranked: Vec<(&str, i64)> = lead
                .auction
                .ranking()
                .iter()
                .map(|&s| {
                    (
                        snap.buyers[lead.auction.buyer(s)].id.as_str(),
                        bid_of(&lead.auction, s),
                    )
                })
                .collect();
            let bids = lead.auction.outcome_bids();
            append(
                &self.shared,
                &self.stats,
                &RecordRef::AuctionClosed {
                    lead_id: &lead.id,
                    bids,
                    ranked: &ranked,
                },
            );
        }
        let payout_rule = lead.payout_rule;
        let campaign = &snap.campaigns[lead.campaign].id;
        let seller = &snap.sellers[lead.seller].id;
        let post_slots = if lead.posts_journaled < lead.auction.post_results() {
            0..lead.journaled.len()
        } else {
            0..0
        };
        for slot in post_slots {
            if lead.journaled[slot] & POST_JOURNALED != 0 {
                continue;
            }
            let Some(o) = lead.auction.post_result(slot) else {
                continue;
            };
            lead.journaled[slot] |= POST_JOURNALED;
            lead.posts_journaled += 1;
            let buyer = &snap.buyers[lead.auction.buyer(slot)].id;
            let price = lead.auction.post_price(slot);
            let (accepted, reason, buyer_lead_id) = match o {
                PostOutcome::Accepted { buyer_lead_id } => (
                    true,
                    None,
                    buyer_lead_id
                        .as_deref()
                        .map(|b| lead::clip_str(b, journal::MAX_POST_TEXT_BYTES)),
                ),
                PostOutcome::Rejected { reason } | PostOutcome::Failed { reason } => {
                    (false, Some(reason.as_str()), None)
                }
                PostOutcome::TimedOut => (false, Some("timeout"), None),
                PostOutcome::Capped => (false, Some(crate::net::POST_NOT_SENT_CAPPED), None),
                PostOutcome::Paused => (false, Some(crate::net::NOT_SENT_PAUSED), None),
                PostOutcome::Unjournaled => {
                    (false, Some(crate::net::POST_NOT_SENT_UNJOURNALED), None)
                }
                PostOutcome::NotWritten => {
                    (false, Some(crate::net::POST_NOT_SENT_NO_CONNECTION), None)
                }
            };
            let reason = reason.map(|r| lead::clip_str(r, journal::MAX_POST_TEXT_BYTES));
            // A post sent promised its result and sale room: they may use it (a post never
            // sent, capped or paused, promised none).
            let promised = lead.journaled[slot] & POST_PROMISED != 0;
            let append = if promised { append_money } else { append };
            append(
                &self.shared,
                &self.stats,
                &RecordRef::PostResult {
                    lead_id: &lead.id,
                    buyer,
                    accepted,
                    reason,
                    response_us: lead.auction.post_response(slot).as_micros() as u64,
                    price_cents: price,
                    buyer_lead_id,
                },
            );
            if accepted {
                let payout = payout_rule.for_sale(lead.sold_cents, price, lead.sales == 0);
                lead.sales += 1;
                lead.sold_cents += price;
                lead.payout_cents += payout;
                append(
                    &self.shared,
                    &self.stats,
                    &RecordRef::Sale {
                        lead_id: &lead.id,
                        campaign,
                        seller,
                        buyer,
                        price_cents: price,
                        payout_cents: payout,
                        test: lead.req.test,
                    },
                );
                let home = lead.reservations[slot].as_ref().and_then(|r| r.1.as_ref());
                settle_after_reload(&self.shared, lead, slot, true, price, home);
            }
        }
    }

    // ----- leads -------------------------------------------------------------------------

    pub(super) fn drive_dirty(&mut self) {
        loop {
            while let Some(k) = self.dirty.pop() {
                self.drive_lead(k);
            }
            let Some(p) = self.short_pools.pop() else {
                return;
            };
            self.refill(p);
        }
    }

    /// Give back the cap reservations of posts that ended without a sale.
    pub(super) fn release_unsold(&mut self, key: Key) {
        let Some(lead) = self.leads.get_mut(key) else {
            return;
        };
        for slot in 0..lead.reservations.len() {
            let unsold = lead
                .auction
                .post_result(slot)
                .is_some_and(|o| !o.accepted());
            if unsold {
                if let Some((r, home)) = lead.reservations[slot].take() {
                    home.as_ref().unwrap_or(&lead.gen.rt).caps.release(r);
                    settle_after_reload(&self.shared, lead, slot, false, 0, home.as_ref());
                }
            }
        }
    }

    /// Carry out the auction's actions until it waits on a buyer or a deadline.
    pub(super) fn drive_lead(&mut self, key: Key) {
        self.release_unsold(key);
        self.journal_progress(key);
        loop {
            let Some(lead) = self.leads.get_mut(key) else {
                return;
            };
            let Some(action) = lead.auction.poll_action() else {
                break;
            };
            if matches!(action, Action::SendPost { .. } | Action::Answer) {
                // The close (and earlier posts' results) go in the journal before what follows.
                self.journal_progress(key);
            }
            let Some(lead) = self.leads.get_mut(key) else {
                return;
            };
            match action {
                Action::SendPing { slot, timeout_ms } => {
                    if lead.ping_body.is_empty() {
                        let snap = &lead.gen.rt.snap;
                        let c = &snap.campaigns[lead.campaign];
                        lead::write_ping(&mut lead.ping_body, &lead.id, c, &lead.req, timeout_ms);
                        lead.ping_timeout_ms = timeout_ms;
                        lead.pings_to_attach = (0..lead.auction.slots())
                            .filter(|&s| {
                                snap.buyers[lead.auction.buyer(s)]
                                    .templated(false)
                                    .is_none()
                            })
                            .count();
                    }
                    // `ping_sent` is journaled when the ping is handed to a connection
                    // (`attach`); one that waits for a free connection past the close is
                    // journaled as a timeout that was never sent. The buyer's `pings` counts
                    // it at either record, as a restart rebuilds it from them.
                    self.dispatch(Job {
                        lead: key,
                        slot,
                        kind: JobKind::Ping,
                        retried: false,
                        waited_since: None,
                    });
                }
                Action::SendPost { slot, price_cents } => {
                    let buyer = lead.auction.buyer(slot);
                    let home = cap_home(&self.shared, lead, buyer);
                    let (caps, cap_buyer) = match &home {
                        Some((rt, b)) => (&rt.caps, *b),
                        None => (&lead.gen.rt.caps, buyer),
                    };
                    // A buyer the operator paused since its bid gets no post: the pause is
                    // meant to stop leads at once, running auctions' included.
                    if caps.is_paused(cap_buyer) {
                        let now = self.now;
                        lead.cascade_in_rotation();
                        lead.auction.on_post_result(slot, now, PostOutcome::Paused);
                        continue;
                    }
                    // The cap is taken before the post goes out, so no interleaving of workers
                    // can sell past it; it is given back if the post does not end in a sale.
                    // A test lead is not paid for, so it takes nothing from caps or budgets;
                    // where they would turn a real lead away, it is turned away too, so that
                    // its answer is the one the same real lead would get.
                    let reserved = if lead.req.test {
                        let room = caps.has_room_for(cap_buyer, Utc::now(), price_cents);
                        (!room).then_some(None)
                    } else {
                        Some(caps.reserve(cap_buyer, Utc::now(), price_cents))
                    };
                    match reserved {
                        None => {}
                        Some(Some(r)) => {
                            lead.reservations[slot] = Some((r, home.map(|(rt, _)| rt)));
                        }
                        Some(None) => {
                            let now = self.now;
                            lead.cascade_in_rotation();
                            lead.auction.on_post_result(slot, now, PostOutcome::Capped);
                            continue;
                        }
                    }
                    // `post_sent` is journaled, with its promise, when the post gets a
                    // connection (`attach`): one that waits for a connection the whole of its
                    // time is never sent, and a crash meanwhile must not leave it for a post
                    // the buyer has.
                    // A round robin's first offers take turns, its cascades' posts a rotation
                    // of their own (`RoundRobin`).
                    // The plan's first offers had their turns taken when the plan was ordered
                    // (`RoundRobin::order`): for a seller's post, at its ping, and other
                    // leads may have had turns since.
                    if lead.round_robin() && lead.auction.post_results() > 0 {
                        if let Some(rr) = lead.gen.rt.round_robin.get(lead.campaign) {
                            rr.took(buyer, true);
                        }
                    }
                    self.dispatch(Job {
                        lead: key,
                        slot,
                        kind: JobKind::Post,
                        retried: false,
                        waited_since: None,
                    });
                }
                Action::AbandonPing { slot } | Action::AbandonPost { slot } => {
                    self.abandon(key, slot)
                }
                Action::Answer => {
                    self.finish_lead(key);
                    return;
                }
            }
        }
        let Some(lead) = self.leads.get_mut(key) else {
            return;
        };
        let Some(t) = lead.auction.next_timeout() else {
            return;
        };
        if lead.timer_at == Some(t) {
            return;
        }
        lead.timer_at = Some(t);
        let leads = &self.leads;
        self.timers.push(t, key, |at, k| {
            leads.get(*k).is_some_and(|l| l.timer_at == Some(at))
        });
    }

    pub(super) fn finish_lead(&mut self, key: Key) {
        steps::mark_after(Step::BuyerDecode, Step::PostResult);
        self.release_unsold(key);
        self.journal_progress(key);
        if self.start_fallback(key) {
            return;
        }
        let Some(mut lead) = self.leads.remove(key) else {
            return;
        };
        // The reservations left belong to accepted posts: they stay counted.
        for (r, _) in lead.reservations.iter_mut().filter_map(Option::take) {
            let _sold: Reservation = r;
        }
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut outcome = lead.auction.outcome();
        if let Some((wait, bids, intake)) = lead.prior {
            outcome.buyer_wait += wait;
            outcome.bids = bids;
            // The lead's intake was the first auction's; the fallback's is part of its close.
            outcome.intake = intake;
        } else if lead.close_from_plan && lead.flow == Flow::Direct {
            outcome.bids = 0; // fixed-price distribution takes no bids
        }
        if let Some(bids) = lead.ping_bids {
            // A post's bids were taken by its ping: the answer counts those, as the ping's
            // auction did, not the held ones still eligible.
            outcome.bids = bids;
        }
        let snap = &lead.gen.rt.snap;
        let campaign = &snap.campaigns[lead.campaign];
        let sold = outcome.status == Status::Sold;
        // The sum of the per-sale payouts journaled with each Sale, so the book adds up.
        let payout = lead.payout_cents;
        let mut status = 200;
        let mut body = Vec::with_capacity(256);
        let mut offered = false;
        if lead.flow == Flow::Ping {
            match self.hold_bids(&lead) {
                Ok((offer, pos)) => {
                    // The offer is on disk (with sync = "always") before the seller hears it.
                    if let Some(pos) = pos {
                        self.sync_journal(pos);
                    }
                    offered = offer.is_some();
                    lead::write_ping_answer(
                        &mut body,
                        &lead.id,
                        offer,
                        campaign.hold.as_millis() as u64,
                        lead.req.test,
                    )
                }
                Err(r) => {
                    // No room to hold the bids (503): journaled, so that a lookup gets this
                    // answer, not `pending`; its Idempotency-Key is given back, so that a
                    // retry under it, told to come back in a second, runs as a new ping (as
                    // one turned away before its auction does).
                    status = r.status;
                    if let (Some(k), Ok(u)) =
                        (lead.idempotency_key, ulid::Ulid::from_string(&lead.id))
                    {
                        self.shared.idempotency.forget(k, u.0);
                    }
                    if let Some(pos) = append(
                        &self.shared,
                        &self.stats,
                        &RecordRef::Rejected {
                            lead_id: &lead.id,
                            seller: &snap.sellers[lead.seller].id,
                            campaign: &campaign.id,
                            http_status: r.status,
                            code: r.code,
                            field: None,
                            message: Some(&r.message),
                        },
                    ) {
                        self.sync_journal(pos);
                    }
                    lead::write_refusal(
                        &mut body,
                        Some((&lead.id, lead.req.test)),
                        r.code,
                        &r.message,
                        None,
                    );
                }
            }
        }
        let answered = if lead.flow == Flow::Ping {
            None // a ping sells nothing: its story ends with the close already journaled
        } else {
            let rec = RecordRef::LeadAnswered {
                lead_id: &lead.id,
                campaign: &campaign.id,
                seller: &snap.sellers[lead.seller].id,
                status: if sold {
                    LeadStatus::Sold
                } else {
                    LeadStatus::Unsold
                },
                price_cents: outcome.price_cents,
                payout_cents: payout,
                elapsed_us: outcome.elapsed.as_micros() as u64,
                bids: Some(outcome.bids),
                reason: outcome.unsold_reason.map(|r| r.as_str()),
            };
            // A lead that sent a post was promised room for its answer.
            if lead.answer_promised {
                append_money(&self.shared, &self.stats, &rec)
            } else {
                append(&self.shared, &self.stats, &rec)
            }
        };
        // Every post's result and the answer are written: nothing promised is left to keep.
        if lead.promised > 0 {
            self.shared.journal.release(lead.promised);
            lead.promised = 0;
        }
        // The lead's final record is in the map (and with sync = "always", on disk) before
        // the seller's answer is written.
        if let Some(pos) = answered {
            self.sync_journal(pos);
        }
        let sales: Vec<AnswerSale> = outcome
            .sales
            .iter()
            .map(|s| AnswerSale {
                buyer: &snap.buyers[s.buyer].id,
                price_cents: s.price_cents,
            })
            .collect();
        if lead.flow != Flow::Ping {
            lead::write_answer(&mut body, &lead.id, &outcome, &sales, payout, lead.req.test);
        }

        // The operator's counters, before the seller has the answer: whoever reads
        // `/v1/stats` after an answer sees it counted.
        {
            let mut st = self.stats.lock();
            // Held or fixed-price "bids" were not pings of this auction: not counted again.
            count_answers(
                &mut st,
                &lead.auction,
                &lead.gen.stat_slots,
                &lead.journaled,
                !lead.close_from_plan,
            );
            // A test lead counts as the traffic it was, but moves no money.
            let paid = !lead.req.test;
            for s in &outcome.sales {
                if let Some(b) = st.buyer_at(lead.gen.stat_slots[s.buyer]) {
                    b.wins += 1;
                    if paid {
                        b.spent_cents += s.price_cents;
                    }
                }
            }
            // A ping turned away (no room to hold its bids): counted under `refused`, as a
            // lead turned away is, not as a ping answered.
            let turned_away = lead.flow == Flow::Ping && status != 200;
            if turned_away {
                *st.refused.entry(status).or_insert(0) += 1;
            }
            let cs = st.campaign(&campaign.id);
            cs.leads += u64::from(lead.flow != Flow::Ping);
            if lead.flow == Flow::Ping {
                // The lead is counted when posted.
                if !turned_away {
                    cs.pings += 1;
                    cs.pings_bid += u64::from(offered);
                }
            } else if sold {
                cs.sold += 1;
            } else {
                cs.unsold += 1;
            }
            if paid {
                cs.revenue_cents += outcome.price_cents;
                cs.payout_cents += payout;
            } else if lead.flow != Flow::Ping {
                cs.test_leads += 1;
            }
        }
        let (conn_key, seq) = lead.origin;
        // The engine's time ends when the answer is handed to the kernel, as a buyer's time
        // starts when its request is: the `send` itself (on loopback it also runs the
        // receiver's TCP input and wake-up) is measured on its own, `answer_write_us`.
        let mut handed = None;
        if let Some(c) = self.sellers.get_mut(conn_key) {
            if let Some(idx) = seq.checked_sub(c.first_seq).map(|i| i as usize) {
                if let Some(Reply::Waiting { close }) = c.pending.get(idx) {
                    let close = *close || closing_for_drain(self.drain_until, c, idx);
                    let persist = c.persist(close);
                    let mut bytes = Vec::with_capacity(body.len() + 128);
                    let json = ("Content-Type", "application/json");
                    let headers: &[(&str, &str)] = if status == 503 {
                        &[json, ("Retry-After", "1")]
                    } else {
                        &[json]
                    };
                    http::write_response(&mut bytes, status, headers, &body, persist);
                    c.pending[idx] = Reply::Ready { bytes, close };
                }
            }
            steps::mark_after(Step::PostResult, Step::AnswerBuild);
            handed = Some(Instant::now());
            self.finish_seller_io(conn_key);
            steps::mark_after(Step::AnswerBuild, Step::AnswerWrite);
        }
        let written = Instant::now();
        let handed = handed.unwrap_or(written);
        let elapsed = written.saturating_duration_since(lead.auction.arrival());
        let overhead = handed
            .saturating_duration_since(lead.auction.arrival())
            .saturating_sub(outcome.buyer_wait);
        let mut st = self.stats.lock();
        st.overhead_us
            .saturating_record(overhead.as_micros() as u64);
        st.elapsed_us.saturating_record(elapsed.as_micros() as u64);
        st.answer_write_us
            .saturating_record(written.saturating_duration_since(handed).as_micros() as u64);
        // A lead that went on to a fallback: its intake is the first auction's, the
        // fallback's posts are buyer time, and the engine's work between them is close.
        let answer = handed
            .saturating_duration_since(lead.auction.arrival())
            .saturating_sub(outcome.elapsed);
        let close = overhead
            .saturating_sub(outcome.intake)
            .saturating_sub(answer);
        st.overhead_intake_us
            .saturating_record(outcome.intake.as_micros() as u64);
        st.overhead_close_us
            .saturating_record(close.as_micros() as u64);
        st.overhead_answer_us
            .saturating_record(answer.as_micros() as u64);
    }

    /// An unsold lead of a campaign with a `fallback` goes to its fixed-price buyers, in the
    /// fallback method's order, before the seller is answered. True when a fallback started.
    pub(super) fn start_fallback(&mut self, key: Key) -> bool {
        let Some(lead) = self.leads.get(key) else {
            return false;
        };
        let c = &lead.gen.rt.snap.campaigns[lead.campaign];
        let Some(method) = c.fallback else {
            return false;
        };
        if lead.fallback_done
            || lead.flow == Flow::Ping
            || lead.auction.outcome().status == Status::Sold
        {
            return false;
        }
        let rt = lead.gen.rt.clone();
        let snap = rt.snap.clone();
        // A buyer the first auction sent the lead to (one that bids and has a fixed price too)
        // is not sent it at its fixed price: it priced this lead itself, by no bid, a bid
        // under the reserve, or a post it rejected, or it bought. One whose ping never got a
        // connection before the close did not see it. A post's ping's auction likewise. It
        // takes no turn of a round robin either, which would pass to the buyer after it.
        let in_auction: Vec<usize> = (0..lead.auction.slots())
            .filter(|s| {
                lead.close_from_plan
                    || ping_reached(lead, *s)
                    || lead.auction.post_result(*s).is_some()
            })
            .map(|s| lead.auction.buyer(s))
            .chain(lead.priced_by_ping.iter().copied())
            .collect();
        let posted = (0..lead.auction.slots()).any(|s| lead.auction.post_result(s).is_some());
        let plan = self.fixed_price_plan(&rt, lead.campaign, &lead.req, method, &in_auction);
        let Some(lead) = self.leads.get_mut(key) else {
            return false;
        };
        lead.fallback_done = true;
        if plan.is_empty() {
            return false;
        }
        // The first auction's requests are done with: one still waiting for a connection, or
        // on one, names a place in it, and the fallback numbers its buyers afresh.
        let pools: Vec<usize> = (0..lead.auction.slots())
            .flat_map(|s| {
                let b = lead.auction.buyer(s);
                [lead.gen.ping_pool.get(b), lead.gen.post_pool.get(b)]
            })
            .filter_map(|p| p.copied().flatten())
            .collect();
        let on_conn: Vec<usize> = (0..lead.slot_conn.len())
            .filter(|s| lead.slot_conn[*s].is_some())
            .collect();
        for p in pools {
            if let Some(pool) = self.pools.get_mut(p) {
                pool.waiters.retain(|j| j.lead != key);
            }
        }
        for slot in on_conn {
            self.abandon(key, slot);
        }
        let Some(lead) = self.leads.get_mut(key) else {
            return false;
        };
        let first = lead.auction.outcome();
        lead.prior = Some((first.buyer_wait, first.bids, first.intake));
        // The first auction's pings and rejected posts, for the operator, before the auction
        // is replaced.
        count_answers(
            &mut self.stats.lock(),
            &lead.auction,
            &lead.gen.stat_slots,
            &lead.journaled,
            !lead.close_from_plan,
        );
        lead.close_from_plan = true;
        let c = &snap.campaigns[lead.campaign];
        // The campaign's floor holds for every sale, as for its auction. After posts that
        // failed, the fallback's posts are a cascade.
        let params = Params {
            in_order: true,
            posted_before: posted,
            ..campaign_params(c, &snap)
        };
        lead.auction = Auction::from_held(params, lead.auction.arrival(), Instant::now(), &plan);
        if let Some(until) = self.drain_until {
            lead.auction.stop_by(until);
        }
        let slots = lead.auction.slots();
        lead.slot_conn = vec![None; slots];
        lead.reservations = (0..slots).map(|_| None).collect();
        lead.journaled = vec![0; slots];
        lead.posts_journaled = 0;
        lead.ping_hint = None;
        lead.close_journaled = true;
        self.dirty.push(key);
        true
    }
}
