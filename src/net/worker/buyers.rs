//! Buyer pools: connections, writing pings and posts, reading their answers.

use super::*;

impl Worker {
    /// Jobs waiting for a connection of pool `p`, which lost one: each still wanted gets a
    /// new connection while the pool has room. Otherwise a buyer that closes after its
    /// answers would leave them waiting for a release that never comes.
    pub(super) fn refill(&mut self, p: usize) {
        while self.pools[p].total < self.pools[p].max_connections && !self.pools[p].retired {
            let Some(job) = self.next_waiter(p) else {
                return;
            };
            self.dispatch(job);
        }
    }

    /// The waiting job of pool `p` that a free connection serves next, taken from the queue:
    /// its first post; else the oldest ping while it still has half its window (`ping_timeout_ms`
    /// as first told) left; else, the queue standing longer than the buyer can drain it, the
    /// newest ping, which has the most time for the buyer to bid in, the older ones expiring
    /// unsent at their close. A ping with less than [`MIN_PING_LEFT`] left is never written.
    /// Jobs no longer wanted are dropped on the way. `None`: nothing worth a connection.
    pub(super) fn next_waiter(&mut self, p: usize) -> Option<Job> {
        if self.drop_waiters_if_paused(p) {
            return None;
        }
        while let Some(job) = self.pools[p].waiters.front() {
            if self.job_still_wanted(job) {
                break;
            }
            self.pools[p].waiters.pop_front();
        }
        let front = self.pools[p].waiters.front()?;
        if front.kind == JobKind::Post {
            return self.pools[p].waiters.pop_front();
        }
        // Posts wait ahead of every ping, so from here on the queue holds pings only.
        let (left, window) = self.ping_left(front)?;
        if left >= MIN_PING_LEFT && left * 2 >= window {
            return self.pools[p].waiters.pop_front();
        }
        while let Some(job) = self.pools[p].waiters.back() {
            if !self.job_still_wanted(job) {
                self.pools[p].waiters.pop_back();
                continue;
            }
            let (left, _) = self.ping_left(job)?;
            // The newest has the most time left: none older is worth writing either.
            return if left >= MIN_PING_LEFT {
                self.pools[p].waiters.pop_back()
            } else {
                None
            };
        }
        None
    }

    /// A pause holds at once, for requests already waiting for a connection to the buyer
    /// too: when the operator paused the pool's buyer, each of its waiting pings ends now as
    /// a timeout never sent, and each waiting post as not sent for the pause (its lead
    /// cascades, its cap reservation is given back). True when the buyer is paused.
    pub(super) fn drop_waiters_if_paused(&mut self, p: usize) -> bool {
        let pool = &self.pools[p];
        if pool.retired || !self.gen.rt.caps.is_paused(pool.buyer) {
            return false;
        }
        let now = self.now;
        while let Some(job) = self.pools[p].waiters.pop_front() {
            if !self.job_still_wanted(&job) {
                continue;
            }
            let Some(lead) = self.leads.get_mut(job.lead) else {
                continue;
            };
            match job.kind {
                JobKind::Ping => {
                    lead.journaled[job.slot] |= PING_PAUSED;
                    lead.auction
                        .on_ping_result(job.slot, now, PingOutcome::Timeout);
                }
                JobKind::Post => {
                    lead.cascade_in_rotation();
                    lead.auction
                        .on_post_result(job.slot, now, PostOutcome::Paused);
                }
            }
            self.dirty.push(job.lead);
        }
        true
    }

    /// A waiting ping's time left for its buyer and its lead's whole ping window.
    pub(super) fn ping_left(&self, job: &Job) -> Option<(Duration, Duration)> {
        let lead = self.leads.get(job.lead)?;
        Some((
            lead.auction.ping_time_left(self.now),
            Duration::from_millis(lead.ping_timeout_ms),
        ))
    }

    /// Serve pool `p`'s waiting posts at `at`, when one of its idle connections will have been
    /// idle `REUSE_AFTER` (the earlier time is kept when one is already set).
    pub(super) fn cool_at(&mut self, p: usize, at: Instant) {
        match self.cooling.iter_mut().find(|c| c.1 == p) {
            Some(c) => c.0 = c.0.min(at),
            None => self.cooling.push((at, p)),
        }
    }

    /// When the first of pool `p`'s idle connections has been (or will have been) idle
    /// `REUSE_AFTER`; `None` with none idle.
    pub(super) fn first_cooled(&self, p: usize) -> Option<Instant> {
        self.pools[p]
            .idle
            .iter()
            .filter_map(|k| self.conns.get(*k))
            .map(|c| c.idle_since + REUSE_AFTER)
            .min()
    }

    /// Jobs waiting for pools whose idle connections have cooled (see [`Worker::cool_at`]):
    /// in queue order, a post once a connection has been idle `REUSE_AFTER` (or the pool has
    /// room for a new one), a ping behind it on any idle connection.
    pub(super) fn serve_cooled(&mut self) {
        if self.cooling.is_empty() {
            return;
        }
        let now = Instant::now();
        self.now = now;
        let mut i = 0;
        while i < self.cooling.len() {
            if self.cooling[i].0 > now {
                i += 1;
                continue;
            }
            let p = self.cooling.swap_remove(i).1;
            // Each waiting job is looked at once at most.
            for _ in 0..self.pools[p].waiters.len() {
                let Some(job) = self.pools[p].waiters.front() else {
                    break;
                };
                if !self.job_still_wanted(job) {
                    self.pools[p].waiters.pop_front();
                    continue;
                }
                let pool = &self.pools[p];
                let cools = self.first_cooled(p);
                let ready = match job.kind {
                    JobKind::Post => {
                        pool.total < pool.max_connections || cools.is_some_and(|t| t <= now)
                    }
                    JobKind::Ping => !pool.idle.is_empty(),
                };
                if !ready {
                    // Still cooling: `dispatch` is not asked, the post keeps its place.
                    if let Some(at) = cools {
                        self.cool_at(p, at);
                    }
                    break;
                }
                match self.next_waiter(p) {
                    Some(job) => self.dispatch(job),
                    None => break,
                }
            }
        }
    }

    pub(super) fn pool_of(&self, job: &Job) -> Option<usize> {
        let lead = self.leads.get(job.lead)?;
        let buyer = lead.auction.buyer(job.slot);
        match job.kind {
            JobKind::Ping => lead.gen.ping_pool.get(buyer).copied().flatten(),
            JobKind::Post => lead.gen.post_pool.get(buyer).copied().flatten(),
        }
    }

    /// Give a job a connection: an idle one, a new one, or a place in the pool's queue.
    pub(super) fn dispatch(&mut self, job: Job) {
        let now = self.now;
        let Some(p) = self.pool_of(&job) else {
            return self.fail_job(job, "buyer has no endpoint for this request");
        };
        if self.pools[p].addr.is_none() {
            return self.fail_job(job, "buyer endpoint unreachable (unresolved host or TLS)");
        }
        // A post waiting for a connection to cool is not overtaken by a new ping taking it:
        // the ping queues behind the post (pings go to the queue's end anyway).
        let post_waiting = job.kind == JobKind::Ping
            && self.pools[p]
                .waiters
                .front()
                .is_some_and(|w| w.kind == JobKind::Post);
        if !job.retried && !post_waiting {
            loop {
                let conns = &self.conns;
                let pool = &self.pools[p];
                let cool = |k: &Key| {
                    conns
                        .get(*k)
                        .is_some_and(|c| now.duration_since(c.idle_since) >= REUSE_AFTER)
                };
                // The idle connection to take, and whether it has been idle `REUSE_AFTER`: a
                // second answer a buyer sends to a ping it just answered may still be on its
                // way to one idle for less, and would pass for this request's answer. When it
                // has not, a new one while the pool has room.
                let pick = match job.kind {
                    // The one idle the shortest of those idle `REUSE_AFTER`, else the one idle
                    // the shortest.
                    JobKind::Ping => pool
                        .idle
                        .iter()
                        .rposition(cool)
                        .map(|i| (i, true))
                        .or_else(|| pool.idle.len().checked_sub(1).map(|i| (i, false))),
                    // A post, the sale, takes the connection idle the longest. Not the one
                    // that carried this lead's ping, though, while there is another or the
                    // pool may open one.
                    JobKind::Post => pool
                        .idle
                        .iter()
                        .position(|k| conns.get(*k).is_none_or(|c| c.last_lead != Some(job.lead)))
                        .map(|i| (i, pool.idle.get(i).is_some_and(cool)))
                        .or_else(|| (!pool.idle.is_empty()).then_some((0, false))),
                };
                let room = pool.total < pool.max_connections;
                // A post is never written on a connection that answered less than
                // `REUSE_AFTER` ago: a buyer that closes right after an answer (without
                // `Connection: close`) would have the sale written into a closed connection
                // and lost, where a ping is asked again. With no room for a new connection it
                // takes one that has cooled (the one that carried its ping, if no other has),
                // or waits for one to cool, or for a new one if the buyer closes it.
                let pick = match pick {
                    Some((_, false)) if job.kind == JobKind::Post && !room => {
                        match pool.idle.iter().position(cool) {
                            Some(i) => Some((i, true)),
                            None => {
                                let at = self.first_cooled(p).unwrap_or(now + REUSE_AFTER);
                                self.cool_at(p, at);
                                break;
                            }
                        }
                    }
                    pick => pick,
                };
                if pick.is_some_and(|(_, cool)| !cool) && room {
                    if let Some(ck) = self.open_conn(p) {
                        self.buyer_wait_begins(&job);
                        let job = Job {
                            waited_since: job.waited_since.or(Some(now)),
                            ..job
                        };
                        return self.attach(ck, job);
                    }
                }
                let ck = pick.map(|(i, _)| self.pools[p].idle.remove(i));
                let Some(ck) = ck else { break };
                let quiet = match self.conns.get_mut(ck) {
                    // Bytes that arrived since the last event-loop turn are not an answer to
                    // the post about to be written: one read (a syscall, so for the post, the
                    // sale, only; a ping's connection is closed by them at the next turn).
                    Some(c) if !c.busy() && job.kind == JobKind::Post => {
                        c.in_idle = false;
                        matches!(c.read_in(&mut self.read_buf, false), Ok(false))
                            && c.rbuf.is_empty()
                    }
                    Some(c) if !c.busy() => {
                        c.in_idle = false;
                        true
                    }
                    Some(c) => {
                        c.in_idle = false;
                        continue;
                    }
                    None => continue,
                };
                if quiet {
                    return self.attach(ck, job);
                }
                self.close_conn(ck);
            }
        }
        let pool = &self.pools[p];
        if pool.is_down(now) {
            let why = format!("buyer unreachable (reconnecting): {}", pool.down_reason);
            return self.fail_job(job, &why);
        }
        if pool.total < pool.max_connections || job.retried {
            match self.open_conn(p) {
                Some(ck) => {
                    self.buyer_wait_begins(&job);
                    let job = Job {
                        waited_since: job.waited_since.or(Some(now)),
                        ..job
                    };
                    return self.attach(ck, job);
                }
                None => return self.fail_job(job, "cannot connect to buyer"),
            }
        }
        if self.pools[p].waiters.len() < MAX_WAITERS_PER_POOL {
            self.buyer_wait_begins(&job);
            let pool = &mut self.pools[p];
            let job = Job {
                waited_since: job.waited_since.or(Some(now)),
                ..job
            };
            // A winner's post goes ahead of pings (a sale waiting costs more than a bid), and
            // after the posts already waiting: each waits its own `post_timeout` at most.
            match job.kind {
                JobKind::Post => {
                    let at = pool
                        .waiters
                        .iter()
                        .position(|j| j.kind == JobKind::Ping)
                        .unwrap_or(pool.waiters.len());
                    pool.waiters.insert(at, job);
                }
                JobKind::Ping => pool.waiters.push_back(job),
            }
        } else {
            self.fail_job(job, "all connections to the buyer are busy");
        }
    }

    /// A ping waits for a connection (a connect, or a free one in the pool) from now: the
    /// wait is the buyer's, its bid or timeout coming whether or not the ping is ever written.
    pub(super) fn buyer_wait_begins(&mut self, job: &Job) {
        if job.kind == JobKind::Ping && job.waited_since.is_none() {
            if let Some(lead) = self.leads.get_mut(job.lead) {
                lead.auction.ping_waiting(self.now);
            }
        }
    }

    pub(super) fn open_conn(&mut self, p: usize) -> Option<Key> {
        let now = self.now;
        let addr = self.pools[p].addr?;
        let stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                self.pools[p].connect_failed(now, &connect_failure(Some(&e)));
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = match &self.pools[p].tls_host {
            None => None,
            Some(host) => {
                let session = self.pools[p]
                    .tls_config
                    .as_ref()
                    .and_then(|cfg| crate::net::tls::connect(cfg, host).ok());
                match session {
                    Some(s) => Some(Box::new(s)),
                    None => {
                        self.pools[p].connect_failed(now, "TLS session could not be set up");
                        return None;
                    }
                }
            }
        };
        let key = self.conns.insert(BuyerConn::new(p, stream, now, tls))?;
        let ok = match self.conns.get_mut(key) {
            Some(c) => self
                .poll
                .registry()
                .register(
                    &mut c.stream,
                    buyer_token(key.index),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_ok(),
            None => false,
        };
        if !ok {
            self.conns.remove(key);
            return None;
        }
        self.pools[p].total += 1;
        self.pools[p].opened += 1;
        Some(key)
    }

    /// Put a job's request on a connection and start writing it.
    pub(super) fn attach(&mut self, ck: Key, job: Job) {
        let Some(lead) = self.leads.get_mut(job.lead) else {
            return self.release_conn(ck);
        };
        if job.kind == JobKind::Post
            && lead.journaled[job.slot] & POST_PROMISED == 0
            && !journal_post_sent(&self.shared, &self.stats, lead, job.slot)
        {
            // No post the journal does not have: its sale could not be replayed into the
            // caps after a restart. The reservation is given back with the result.
            self.release_conn(ck);
            let now = self.now;
            if let Some(lead) = self.leads.get_mut(job.lead) {
                lead.cascade_in_rotation();
                lead.auction
                    .on_post_result(job.slot, now, PostOutcome::Unjournaled);
            }
            self.dirty.push(job.lead);
            return;
        }
        let Some(lead) = self.leads.get_mut(job.lead) else {
            return self.release_conn(ck);
        };
        let buyer = lead.auction.buyer(job.slot);
        let b = &lead.gen.rt.snap.buyers[buyer];
        let templated = b.templated(job.kind == JobKind::Post);
        let plain_ping = job.kind == JobKind::Ping && templated.is_none();
        let (endpoint, body): (_, &[u8]) = match (job.kind, templated) {
            // A buyer with its own API: its request is built from its templates.
            (kind, Some(codec)) => {
                self.scratch.clear();
                let price = lead_price(&lead.auction, job.slot);
                let ctx = crate::adapter::Ctx {
                    ping_id: &lead.id,
                    bid_id: lead.auction.bid_id(job.slot),
                    price_cents: (kind == JobKind::Post).then_some(price),
                    campaign: &lead.gen.rt.snap.campaigns[lead.campaign].id,
                    test: lead.req.test,
                    lead: &lead.req.lead,
                    consent: lead.req.consent.as_ref(),
                };
                match kind {
                    JobKind::Ping => {
                        let c = &lead.gen.rt.snap.campaigns[lead.campaign];
                        codec.write_ping(&mut self.scratch, &ctx, &c.ping_fields);
                        (b.ping.as_ref(), &self.scratch)
                    }
                    JobKind::Post => {
                        codec.write_post(&mut self.scratch, &ctx);
                        (b.post.as_ref(), &self.scratch)
                    }
                }
            }
            (JobKind::Ping, None) => {
                let c = &lead.gen.rt.snap.campaigns[lead.campaign];
                let timeout_ms = lead.auction.ping_timeout_ms_at(self.now);
                if timeout_ms + STALE_TIMEOUT_MS < lead.ping_timeout_ms {
                    // This ping waited for a connection (or is a retry): it tells the buyer
                    // the time it really has, not the time it had when the lead was matched.
                    self.scratch.clear();
                    lead::write_ping(&mut self.scratch, &lead.id, c, &lead.req, timeout_ms);
                    (b.ping.as_ref(), &self.scratch)
                } else {
                    if lead.ping_body.is_empty() {
                        // A retry after every request took its copy: the same body again.
                        let timeout_ms = lead.ping_timeout_ms;
                        lead::write_ping(&mut lead.ping_body, &lead.id, c, &lead.req, timeout_ms);
                    }
                    (b.ping.as_ref(), &lead.ping_body)
                }
            }
            (JobKind::Post, None) => {
                self.scratch.clear();
                let price = match lead.auction.post_result(job.slot) {
                    None => lead_price(&lead.auction, job.slot),
                    Some(_) => 0,
                };
                let c = &lead.gen.rt.snap.campaigns[lead.campaign];
                lead::write_post(
                    &mut self.scratch,
                    &lead.id,
                    lead.auction.bid_id(job.slot),
                    price,
                    c,
                    &lead.req,
                );
                (b.post.as_ref(), &self.scratch)
            }
        };
        if endpoint.is_none() {
            self.release_conn(ck);
            return self.fail_job(job, "buyer has no endpoint for this request");
        }
        let Some(c) = self.conns.get_mut(ck) else {
            return self.fail_job(job, "connection lost");
        };
        c.wbuf.clear();
        c.wpos = 0;
        c.on_wire = false;
        c.sent_marked = false;
        c.last_lead = Some(job.lead);
        // The head up to `Content-Length` was built with the config (`Runtime::ping_heads`).
        let rt = &lead.gen.rt;
        let head = match job.kind {
            JobKind::Ping => rt.ping_heads.get(buyer),
            JobKind::Post => rt.post_heads.get(buyer),
        };
        let Some(head) = head.filter(|h| !h.is_empty()) else {
            self.release_conn(ck);
            return self.fail_job(job, "buyer has no endpoint for this request");
        };
        let need = head.len() + http::finish_request_len(body.len());
        if c.wbuf.capacity() < need {
            // One allocation of the request's size, not a doubling series from 8 bytes.
            c.wbuf
                .reserve_exact(need.next_multiple_of(REQUEST_BUFFER_GRAIN));
        }
        c.wbuf.extend_from_slice(head);
        http::finish_request(&mut c.wbuf, body);
        c.job = Some(job);
        lead.slot_conn[job.slot] = Some(ck);
        if job.kind == JobKind::Ping && lead.journaled[job.slot] & PING_SENT == 0 {
            lead.journaled[job.slot] |= PING_SENT;
            if let Some(b) = self.stats.lock().buyer_at(lead.gen.stat_slots[buyer]) {
                b.pings += 1;
            }
            append(
                &self.shared,
                &self.stats,
                &RecordRef::PingSent {
                    lead_id: &lead.id,
                    buyer: &rt.snap.buyers[buyer].id,
                },
            );
        }
        if plain_ping {
            // This request holds its own copy; a lead waiting on its buyers keeps no other.
            lead.pings_to_attach = lead.pings_to_attach.saturating_sub(1);
            if lead.pings_to_attach == 0 {
                lead.ping_body = Vec::new();
            }
        }
        if c.connected {
            self.write_buyer(ck);
        }
    }

    pub(super) fn write_buyer(&mut self, ck: Key) {
        // The moment the request goes out: the buyer's time starts here, not at the poll
        // wake-up (everything before it, parsing and matching included, is the engine's).
        let now = Instant::now();
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        let first_byte = c.wpos == 0 && !c.wbuf.is_empty();
        if first_byte {
            steps::mark_after(Step::Match, Step::FirstPing);
        }
        let result = c.write_out();
        if let Some(job) = c.job.filter(|_| first_byte) {
            let step = match job.kind {
                JobKind::Ping => Step::PingWrite,
                JobKind::Post => Step::PostWrite,
            };
            steps::span(step, now);
        }
        if !c.sent_marked && c.request_written() {
            c.sent_marked = true;
            if let Some(job) = c.job {
                if let Some(lead) = self.leads.get_mut(job.lead) {
                    // The wait for a free connection is the buyer's capacity, not the
                    // engine's time; the buyer's response time starts at this write.
                    let sent = job.waited_since.unwrap_or(now);
                    match job.kind {
                        JobKind::Ping => lead.auction.ping_sent(job.slot, sent),
                        JobKind::Post => lead.auction.post_sent(job.slot, sent),
                    }
                    lead.auction
                        .written(job.slot, job.kind == JobKind::Post, now);
                }
            }
        }
        let registry = self.poll.registry();
        let token = buyer_token(ck.index);
        match result {
            Flush::Blocked => {
                want_write(registry, &mut c.stream, token, &mut c.write_interest, true)
            }
            Flush::Failed => self.conn_broken(ck, "write failed"),
            Flush::Done if c.connected && !c.tls_wants_write() => {
                want_write(registry, &mut c.stream, token, &mut c.write_interest, false)
            }
            Flush::Done => {}
        }
    }

    pub(super) fn on_buyer_event(
        &mut self,
        index: usize,
        readable: bool,
        read_closed: bool,
        writable: bool,
        error: bool,
    ) {
        let now = self.now;
        let Some((ck, c)) = self.conns.at(index) else {
            return;
        };
        if !c.connected {
            if !(writable || error || readable) {
                return;
            }
            let failed = match c.stream.take_error() {
                Ok(Some(e)) | Err(e) => Some(connect_failure(Some(&e))),
                Ok(None) => c.stream.peer_addr().is_err().then(|| connect_failure(None)),
            };
            if let Some(why) = failed {
                let p = c.pool;
                self.pools[p].connect_failed(now, &why);
                return self.conn_broken(ck, &why);
            }
            c.connected = true;
            let p = c.pool;
            let has_job = c.job.is_some();
            // Over TLS the connect has succeeded once the handshake has: at the first answer.
            if c.tls.is_none() {
                self.pools[p].connect_succeeded();
            }
            // Writes the waiting request, if any, and drops the interest in writability.
            self.write_buyer(ck);
            if !has_job {
                self.release_conn(ck);
            }
        } else if writable {
            self.write_buyer(ck);
        }
        if readable {
            self.read_buyer(ck, read_closed);
        }
    }

    /// `read_closed`: the buyer's FIN (or RST) is in: read to the end of the stream, since
    /// with edge-triggered events no later one will come for it.
    pub(super) fn read_buyer(&mut self, ck: Key, read_closed: bool) {
        let (eof, broken) = match self.conns.get_mut(ck) {
            Some(c) => match c.read_in(&mut self.read_buf, read_closed) {
                Ok(eof) => {
                    // An answer read along with the close is still taken, but the
                    // connection gets no other request.
                    c.peer_closed |= eof;
                    (eof, None)
                }
                Err(reason) => (false, Some(reason)),
            },
            None => return,
        };
        steps::mark_after(Step::TurnWait, Step::BuyerRecv);
        loop {
            let Some(c) = self.conns.get_mut(ck) else {
                return;
            };
            if c.rbuf.is_empty() {
                break;
            }
            if !c.busy() {
                // Bytes nobody asked for: this connection cannot be trusted with the next lead.
                // On a connection that never carried an answer (a port that greets every
                // client: an SSH or SMTP banner) it is a failed connect, backed off like one,
                // not a connection to open again at the next housekeeping tick.
                if c.served == 0 {
                    return self.conn_broken(ck, "bytes before any request: not an HTTP server");
                }
                return self.close_conn(ck);
            }
            match c.decoder.decode(&c.rbuf, &mut c.body) {
                Ok(Decoded::NeedMore { consumed }) => {
                    c.rbuf.drain(..consumed);
                    break;
                }
                Ok(Decoded::Complete { head, consumed }) => {
                    c.rbuf.drain(..consumed);
                    let keep = head.keep_alive;
                    // An answer that closes the connection (`Connection: close`, HTTP/1.0):
                    // the connection is not handed to a waiting request as the answer is
                    // taken (`release_conn`), as the buyer reads nothing more on it.
                    c.peer_closed |= !keep;
                    self.on_answer(ck, head.status);
                    if !keep {
                        return self.close_conn(ck);
                    }
                }
                Err(e) => {
                    let limits = crate::http::Limits::with_max_body_bytes(
                        crate::net::buyer::MAX_BUYER_ANSWER_BYTES,
                    );
                    return self.conn_broken(ck, &e.answer_reason(&limits));
                }
            }
        }
        if self.conns.get(ck).is_some_and(|c| c.tls_wants_write()) {
            // The TLS session has records to answer with (handshake, plaintext queued in it).
            self.write_buyer(ck);
        }
        if eof {
            let ended = match self.conns.get_mut(ck) {
                Some(c) if c.busy() => c.decoder.on_eof().ok().flatten().map(|h| h.status),
                Some(_) => None,
                // Closed once its last answer was taken.
                None => return,
            };
            match ended {
                Some(status) => {
                    self.on_answer(ck, status);
                    self.close_conn(ck);
                }
                None => self.conn_broken(ck, "connection closed by buyer"),
            }
        } else if let Some(reason) = broken {
            self.conn_broken(ck, &reason);
        }
    }

    /// A whole answer arrived on a connection: hand it to the lead that waits on it, if any.
    pub(super) fn on_answer(&mut self, ck: Key, status: u16) {
        let now = self.now;
        steps::mark_after(Step::BuyerRecv, Step::BuyerDecode);
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        c.served += 1;
        if c.served == 1 {
            let pool = &mut self.pools[c.pool];
            pool.answered();
            pool.connect_succeeded();
        }
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        c.wbuf.clear();
        c.wpos = 0;
        c.decoder.reset();
        let body = std::mem::take(&mut c.body);
        let job = c.job.take();
        c.draining_since = None;
        if job.is_some_and(|j| j.kind == JobKind::Post) {
            // A post carries the full lead: give its buffer back, or every connection that ever
            // carried one would keep a post-sized buffer. The next request reserves its own size.
            c.wbuf = Vec::new();
        }
        // The answer was not of the kind asked for: see `lead::answer_out_of_step`.
        let mut out_of_step = false;
        if let Some(job) = job {
            if let Some(lead) = self.leads.get_mut(job.lead) {
                if lead.slot_conn[job.slot] == Some(ck) {
                    lead.slot_conn[job.slot] = None;
                    let codec = lead.gen.rt.snap.buyers[lead.auction.buyer(job.slot)]
                        .codec
                        .clone();
                    let results = lead.auction.ping_results();
                    if job.kind == JobKind::Post {
                        lead.cascade_in_rotation();
                    }
                    match job.kind {
                        JobKind::Ping => {
                            let outcome = match &codec {
                                None => lead::parse_bid(status, &body),
                                Some(c) => c.parse_bid(status, &body),
                            };
                            out_of_step = matches!(
                                &outcome,
                                PingOutcome::Invalid(r) if lead::answer_out_of_step(r)
                            );
                            lead.auction.on_ping_result(job.slot, now, outcome);
                        }
                        JobKind::Post => {
                            let outcome = match &codec {
                                None => lead::parse_post_answer(status, &body),
                                Some(c) => c.parse_post(status, &body),
                            };
                            out_of_step = matches!(
                                &outcome,
                                PostOutcome::Rejected { reason } if lead::answer_out_of_step(reason)
                            );
                            lead.auction.on_post_result(job.slot, now, outcome);
                        }
                    }
                    if lead.auction.ping_results() == results + 1 {
                        lead.ping_hint = Some(job.slot);
                    }
                    self.dirty.push(job.lead);
                }
            }
        }
        if let Some(c) = self.conns.get_mut(ck) {
            let mut body = body;
            body.clear();
            c.body = body;
        }
        if out_of_step {
            return self.close_conn(ck);
        }
        self.release_conn(ck);
    }

    /// A connection with nothing outstanding: give it to a waiting job or make it idle.
    pub(super) fn release_conn(&mut self, ck: Key) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        if c.busy() || !c.connected || c.in_idle {
            return;
        }
        // Bytes already read past the answer just taken (a second answer sent with it) are
        // an answer nobody asked for: a waiting request given this connection would take them
        // for its own.
        if c.peer_closed || !c.rbuf.is_empty() {
            return self.close_conn(ck);
        }
        let p = c.pool;
        if self.pools[p].total > self.pools[p].max_connections && !self.pools[p].retired {
            // A reload lowered the buyer's connection limit: this one is over it.
            return self.close_conn(ck);
        }
        self.drop_waiters_if_paused(p);
        while let Some(job) = self.pools[p].waiters.front() {
            if !self.job_still_wanted(job) {
                self.pools[p].waiters.pop_front();
                continue;
            }
            if job.kind == JobKind::Post && !self.pools[p].retired {
                // Not on a connection that has just answered: see `dispatch`. It goes idle,
                // and the post takes it once it has cooled, if the buyer has not closed it.
                self.cool_at(p, now + REUSE_AFTER);
                break;
            }
            match self.next_waiter(p) {
                Some(job) => return self.attach(ck, job),
                None => break,
            }
        }
        if self.pools[p].retired {
            // The buyer left the config (or moved): its last leads are done with it.
            return self.close_conn(ck);
        }
        if let Some(c) = self.conns.get_mut(ck) {
            c.in_idle = true;
            c.idle_since = now;
            self.pools[p].idle.push(ck);
        }
    }

    pub(super) fn job_still_wanted(&self, job: &Job) -> bool {
        let Some(lead) = self.leads.get(job.lead) else {
            return false;
        };
        if lead.slot_conn.get(job.slot).is_none_or(Option::is_some) {
            return false;
        }
        match job.kind {
            JobKind::Ping => lead.auction.ping_result(job.slot).is_none(),
            JobKind::Post => lead.auction.post_result(job.slot).is_none(),
        }
    }

    /// The lead no longer waits on this slot's request.
    pub(super) fn abandon(&mut self, lead_key: Key, slot: usize) {
        let now = self.now;
        let Some(lead) = self.leads.get_mut(lead_key) else {
            return;
        };
        let Some(ck) = lead.slot_conn.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        c.job = None;
        if c.wpos == 0 && c.wbuf.is_empty() {
            return self.release_conn(ck);
        }
        if c.wpos == 0 {
            // Not a byte written yet: simply forget the request.
            c.wbuf.clear();
            return self.release_conn(ck);
        }
        // Partly or wholly written: the buyer will answer; read that answer and discard it.
        c.draining_since = Some(now);
    }

    /// A job could not be carried out: its slot gets an error (ping) or a failure (post).
    pub(super) fn fail_job(&mut self, job: Job, reason: &str) {
        let now = self.now;
        let Some(lead) = self.leads.get_mut(job.lead) else {
            return;
        };
        if lead.slot_conn[job.slot].is_some() {
            lead.slot_conn[job.slot] = None;
        }
        match job.kind {
            JobKind::Ping => {
                lead.auction
                    .on_ping_result(job.slot, now, PingOutcome::Error(reason.to_string()))
            }
            JobKind::Post => {
                lead.cascade_in_rotation();
                lead.auction.on_post_result(
                    job.slot,
                    now,
                    PostOutcome::Failed {
                        reason: reason.to_string(),
                    },
                )
            }
        }
        self.dirty.push(job.lead);
    }

    /// A connection failed. Its job is retried once on a fresh connection when the connection
    /// was a reused one that the buyer had closed under us: no byte of the request was
    /// written, or, for a ping, the request went out and the connection ended without a byte
    /// of answer (the buyer's keep-alive timeout fired as it arrived; a ping only asks for a
    /// bid, so asking again is safe, where a post, which sells the consumer, is not sent
    /// twice). Otherwise the job fails.
    pub(super) fn conn_broken(&mut self, ck: Key, reason: &str) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(ck) else {
            return;
        };
        if c.served == 0 {
            let pool = &mut self.pools[c.pool];
            if c.connected && c.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
                // A TLS handshake that failed (an untrusted certificate, a peer that hung up
                // in it) is a failed connect, with its backoff. (A TCP connect that failed
                // was counted where it failed.) Every lead's ping to this buyer
                // fails the same way, so the operator is told, now and then.
                pool.connect_failed(now, reason);
                let quiet = pool
                    .tls_error_logged
                    .is_some_and(|t| now.saturating_duration_since(t) < TLS_ERROR_LOG_EVERY);
                if !quiet {
                    pool.tls_error_logged = Some(now);
                    let host = pool.tls_host.as_deref().unwrap_or("?");
                    let port = pool.addr.map_or(0, |a| a.port());
                    let why = reason.strip_prefix("TLS: ").unwrap_or(reason);
                    eprintln!(
                        "gavel: warning: https://{host}:{port}: TLS handshake failed: {why} \
                         (its pings fail until it succeeds; told at most once a minute)"
                    );
                }
            }
            if now.saturating_duration_since(c.opened_at) < YOUNG_CONN {
                pool.refill_failed(now);
            }
        }
        let job = c.job.take();
        let unanswered = c.decoder.is_idle() && c.rbuf.is_empty() && c.body.is_empty();
        let ping = job.is_some_and(|j| j.kind == JobKind::Ping);
        let retry = c.served > 0 && (!c.on_wire || (ping && unanswered));
        if let Some(lead) = job.and_then(|j| self.leads.get_mut(j.lead).map(|l| (l, j))) {
            let (lead, j) = lead;
            if lead.slot_conn[j.slot] == Some(ck) {
                lead.slot_conn[j.slot] = None;
            }
        }
        self.close_conn(ck);
        if let Some(job) = job {
            if retry && !job.retried {
                self.dispatch(Job {
                    retried: true,
                    ..job
                });
            } else {
                self.fail_job(job, reason);
            }
        }
    }

    pub(super) fn close_conn(&mut self, ck: Key) {
        let Some(mut c) = self.conns.remove(ck) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let pool = &mut self.pools[c.pool];
        pool.total = pool.total.saturating_sub(1);
        if c.in_idle {
            pool.idle.retain(|k| *k != ck);
        }
        if !pool.waiters.is_empty() && !self.short_pools.contains(&c.pool) {
            self.short_pools.push(c.pool);
        }
        if let Some(job) = c.job {
            if let Some(lead) = self.leads.get_mut(job.lead) {
                if lead.slot_conn[job.slot] == Some(ck) {
                    lead.slot_conn[job.slot] = None;
                    self.fail_job(job, "connection closed");
                }
            }
        }
    }

    // ----- housekeeping ------------------------------------------------------------------
}

/// A failed connect's reason as pings and the journal give it: `connect failed: ` and the
/// system's words for the error (`connection refused`, `no route to host`), without its number.
fn connect_failure(e: Option<&io::Error>) -> String {
    let Some(e) = e else {
        return "connect failed".to_string();
    };
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("connect failed: {}{}", first.to_lowercase(), chars.as_str()),
        None => "connect failed".to_string(),
    }
}
