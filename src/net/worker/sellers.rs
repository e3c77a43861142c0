//! Seller connections: accepting and placing them, reading requests, answering, closing.

use super::*;

impl Worker {
    /// Take the config now in force for new leads: map its buyers onto pools (kept where a
    /// buyer's endpoint did not change), retire the pools nobody in the new config uses (their
    /// idle connections close now, busy ones after the running leads' last request), and apply
    /// the worker-level limits. Leads in flight keep their own generation.
    pub(super) fn adopt(&mut self) {
        let rt = self.shared.runtime();
        if rt.generation == self.gen.rt.generation {
            return;
        }
        let (mut gen, retired) = map_pools(&mut self.pools, Some(&self.gen), &rt);
        gen.stat_slots = stat_slots(&self.stats, &rt.snap);
        self.gen = Arc::new(gen);
        // A lowered `max_connections` holds at once: idle connections over it close now (busy
        // ones close instead of going idle, in `release_conn`).
        for p in 0..self.pools.len() {
            while self.pools[p].total > self.pools[p].max_connections {
                let Some(ck) = self.pools[p].idle.pop() else {
                    break;
                };
                if let Some(c) = self.conns.get_mut(ck) {
                    c.in_idle = false;
                }
                self.close_conn(ck);
            }
        }
        for p in retired {
            let pool = &mut self.pools[p];
            pool.retired = true;
            pool.min_idle = 0;
            let idle = std::mem::take(&mut pool.idle);
            for ck in idle {
                if let Some(c) = self.conns.get_mut(ck) {
                    c.in_idle = false;
                }
                self.close_conn(ck);
            }
        }
        let server = &rt.snap.server;
        self.limits = Limits::with_max_body_bytes(server.max_body_bytes);
        // New connections take a reloaded certificate and key; open sessions keep theirs.
        // (A reload cannot turn TLS on or off: the listener's, a restart's.)
        if rt.snap.seller_tls.is_some() {
            self.seller_tls = rt.snap.seller_tls.clone();
        }
        // A lowered `max_connections` closes nothing: connections over it stay until they end
        // (or, idle, make room for a new one), and no new one is taken while over it.
        self.leads
            .set_capacity(MAX_LEADS_PER_WORKER.min(server.max_in_flight + 1));
    }

    // ----- seller side -------------------------------------------------------------------

    pub(super) fn accept(&mut self) {
        // This worker's idle connections, oldest last, listed once per burst of accepts.
        let mut idle: Option<Vec<(bool, Key)>> = None;
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    let limit = self.gen.rt.snap.server.max_connections;
                    if let Some(place) = self.shared.seller_conns.take(limit) {
                        self.admit(stream, place);
                        continue;
                    }
                    // At `server.max_connections`: a stalled stranger makes room, this
                    // worker's or another's; else this worker's connection idle the longest,
                    // else another worker's; else the new one is refused.
                    let idle = idle.get_or_insert_with(|| self.idle_sellers());
                    if let Some(place) = self.evict_idle(idle, true) {
                        self.admit(stream, place);
                        continue;
                    }
                    let ticket = self.next_ticket;
                    self.next_ticket += 1;
                    self.ask_for_place(WaitingConn {
                        ticket,
                        stream,
                        asked: 0,
                        strangers_only: true,
                        since: self.now,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors or a connection reset before accept: try again on the next event.
                Err(_) => break,
            }
        }
    }

    /// Serve a new seller connection that holds a place.
    pub(super) fn admit(&mut self, stream: TcpStream, place: Place) {
        let _ = stream.set_nodelay(true);
        let tls = match &self.seller_tls {
            Some(config) => match rustls::ServerConnection::new(config.clone()) {
                Ok(mut session) => {
                    session.set_buffer_limit(Some(SELLER_TLS_BUFFER));
                    Some(Box::new(session))
                }
                Err(_) => return,
            },
            None => None,
        };
        // The first request's head (and a TLS handshake before it) runs under the head timeout
        // from the accept: a client that connects and sends nothing is closed like one that
        // stalls in a head. Between requests a keep-alive connection may then idle for
        // `idle_timeout`.
        let request_started = Some(self.now);
        let conn = SellerConn {
            stream,
            // Reads go through the worker's buffer; this one grows to what a connection leaves
            // unparsed, not to a read's size.
            rbuf: Vec::new(),
            decoder: RequestDecoder::new(self.limits),
            body: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            pending: VecDeque::new(),
            first_seq: 0,
            no_more_requests: false,
            announce_keep_alive: false,
            close_after_flush: false,
            peer_closed: false,
            request_started,
            last_active: self.now,
            write_interest: false,
            unsent_since: None,
            tls,
            continue_sent: false,
            read_full: false,
            output_held: false,
            place,
            authorised: false,
        };
        // Full only at `MAX_SELLER_CONNS_PER_WORKER`, which the count of places keeps it under;
        // the connection (and its place) is dropped then.
        let Some(key) = self.sellers.insert(conn) else {
            return;
        };
        let token = seller_token(key.index);
        let registered = match self.sellers.get_mut(key) {
            Some(c) => self
                .poll
                .registry()
                .register(&mut c.stream, token, Interest::READABLE)
                .is_ok(),
            None => false,
        };
        if !registered {
            self.sellers.remove(key);
        }
    }

    /// This worker's connections that may be closed for a new one, the first to close last:
    /// idle ones, the one idle the longest last, and after them (so before them when taken
    /// from the end) stalled strangers, the one stalled the longest last.
    pub(super) fn idle_sellers(&self) -> Vec<(bool, Key)> {
        let now = self.now;
        let mut idle: Vec<(bool, Instant, Key)> = self
            .sellers
            .iter()
            .filter_map(|(k, c)| {
                if c.is_stalled(now) {
                    Some((true, c.last_active, k))
                } else if c.is_idle() && !c.just_accepted(now) {
                    Some((false, c.last_active, k))
                } else {
                    None
                }
            })
            .collect();
        idle.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        idle.into_iter()
            .map(|(stranger, _, k)| (stranger, k))
            .collect()
    }

    /// Close the connection idle the longest of `idle` (from [`Worker::idle_sellers`]; one
    /// that has turned busy since is passed over) and take its place for a new one. With
    /// `strangers_only`, only a stalled stranger.
    pub(super) fn evict_idle(
        &mut self,
        idle: &mut Vec<(bool, Key)>,
        strangers_only: bool,
    ) -> Option<Place> {
        let now = self.now;
        while let Some(&(stranger, key)) = idle.last() {
            if strangers_only && !stranger {
                // Strangers are listed last: none is left.
                return None;
            }
            idle.pop();
            if strangers_only && !self.sellers.get(key).is_some_and(|c| c.is_stalled(now)) {
                continue;
            }
            // Bytes waiting in the socket are a request arriving (its event not handled yet):
            // closing would reset it. An end of stream waiting there is a fine one to close, and
            // so are the requests a client that stopped taking its answers still sends.
            let arriving = |c: &SellerConn| matches!(c.stream.peek(&mut [0u8; 1]), Ok(n) if n > 0);
            if !self.sellers.get(key).is_some_and(|c| {
                c.is_stalled_reader(now)
                    || ((c.is_idle() || c.is_stalled_stranger(now)) && !arriving(c))
            }) {
                continue;
            }
            if let Some(place) = self.remove_seller(key) {
                self.shared.seller_conns.count_eviction();
                return Some(place);
            }
        }
        None
    }

    /// A new connection at the limit with no idle connection here: ask the next other worker
    /// for a place (it waits for the answer, unread), or refuse it when every worker has been
    /// asked or too many wait already.
    pub(super) fn ask_for_place(&mut self, mut w: WaitingConn) {
        let conns = &self.shared.seller_conns;
        let workers = conns.workers();
        if self.waiting.len() < MAX_WAITING_FOR_PLACE {
            while w.asked + 1 < workers {
                let to = (self.id + 1 + w.asked) % workers;
                w.asked += 1;
                let ask = Ask {
                    from: self.id,
                    ticket: w.ticket,
                    strangers_only: w.strangers_only,
                };
                if conns.ask(to, ask) {
                    self.shared.wake(to);
                    self.waiting.push_back(w);
                    return;
                }
            }
        }
        if w.strangers_only {
            // No stalled stranger anywhere: this worker's connection idle the longest, else
            // the other workers' are asked again, for any idle one.
            let mut idle = self.idle_sellers();
            if let Some(place) = self.evict_idle(&mut idle, false) {
                self.admit(w.stream, place);
                return;
            }
            w.strangers_only = false;
            w.asked = 0;
            self.ask_for_place(w);
            return;
        }
        self.refuse_connection(w.stream);
    }

    /// Refuse a new connection at `server.max_connections`: a 503 `overloaded` the client can
    /// tell from a network fault, written only if the socket takes it at once (the worker never
    /// waits on it), then closed. Under TLS a plaintext answer means nothing: closed only.
    pub(super) fn refuse_connection(&mut self, mut stream: TcpStream) {
        self.shared.seller_conns.count_refusal();
        if self.seller_tls.is_some() {
            return;
        }
        // A 503 a seller reads, as one for `max_in_flight` is (a TLS listener's refusal is
        // a close, before any session: counted by the connection counters only).
        self.count_refusal(503);
        let mut body = Vec::with_capacity(96);
        lead::write_error(
            &mut body,
            None,
            "overloaded",
            "too many seller connections",
            None,
        );
        let mut answer = Vec::with_capacity(body.len() + 128);
        http::write_response(
            &mut answer,
            503,
            &[("Content-Type", "application/json"), ("Retry-After", "1")],
            &body,
            false,
        );
        let mut sent = 0;
        while sent < answer.len() {
            match io::Write::write(&mut stream, &answer[sent..]) {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut self.read_buf) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    }

    /// Connections that waited `PLACE_WAIT` for another worker's answer are refused.
    pub(super) fn expire_waiting(&mut self, now: Instant) {
        if self.waiting.is_empty() {
            return;
        }
        let (expired, waiting): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| now.duration_since(w.since) >= PLACE_WAIT);
        self.waiting = waiting;
        for w in expired {
            self.refuse_connection(w.stream);
        }
    }

    pub(super) fn on_seller_event(
        &mut self,
        index: usize,
        readable: bool,
        read_closed: bool,
        writable: bool,
    ) {
        let Some((key, _)) = self.sellers.at(index) else {
            return;
        };
        if writable {
            self.write_seller(key);
            self.resume_if_room(key);
        }
        if readable {
            self.read_seller(key, read_closed);
        }
    }

    /// A connection that stopped reading with a full buffer, or stopped taking requests for
    /// answers unsent, is read again (next turn) once the buffer has room, the pipeline takes
    /// more requests and its answers are written.
    pub(super) fn resume_if_room(&mut self, key: Key) {
        let cap = self.limits.max_head_bytes + self.limits.max_body_bytes + READ_CHUNK;
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        if (c.read_full || c.output_held)
            && c.rbuf.len() < cap
            && c.pending.len() < MAX_PIPELINED
            && !c.no_more_requests
            && c.all_sent()
        {
            c.read_full = false;
            c.output_held = false;
            self.resume_sellers.push(key);
        }
    }

    /// `read_closed`: the event says the client closed its side (or failed): read to the end
    /// of the stream, since with edge-triggered events no later one will come for it.
    pub(super) fn read_seller(&mut self, key: Key, read_closed: bool) {
        let now = self.now;
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        if c.tls.is_some() {
            return self.read_seller_tls(key);
        }
        if c.no_more_requests {
            // Still read to notice a close, but discard: nothing more will be answered.
            loop {
                match c.stream.read(&mut self.read_buf) {
                    Ok(0) => {
                        c.peer_closed = true;
                        break;
                    }
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.peer_closed = true;
                        break;
                    }
                }
            }
        } else {
            // Read while there is room for more pipelined requests; the rest waits in the socket.
            let cap = self.limits.max_head_bytes + self.limits.max_body_bytes + READ_CHUNK;
            while c.rbuf.len() < cap {
                match c.stream.read(&mut self.read_buf) {
                    Ok(0) => {
                        c.peer_closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.rbuf.extend_from_slice(&self.read_buf[..n]);
                        c.last_active = now;
                        if c.request_started.is_none() {
                            c.request_started = Some(now);
                        }
                        if n < self.read_buf.len() && !read_closed {
                            // A short read drained the socket: skip the read that would say so.
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.peer_closed = true;
                        break;
                    }
                }
            }
            c.read_full = c.rbuf.len() >= cap;
        }
        steps::mark_after(Step::TurnWait, Step::SellerRecv);
        self.process_seller(key);
        self.finish_seller_io(key);
    }

    /// `read_seller` for a TLS connection: records from the socket through the session, its
    /// plaintext into `rbuf`; then the same request handling as plain HTTP.
    pub(super) fn read_seller_tls(&mut self, key: Key) {
        let now = self.now;
        let cap = self.limits.max_head_bytes + self.limits.max_body_bytes + READ_CHUNK;
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let Some(tls) = c.tls.as_mut() else {
            return;
        };
        let handshaking = tls.is_handshaking();
        let discard = c.no_more_requests;
        let (got, state) = tls_read(
            tls,
            &mut c.stream,
            &mut c.rbuf,
            &mut self.read_buf,
            cap,
            discard,
        );
        if state == TlsRead::Broken {
            // Not TLS (plain HTTP, garbage) or a TLS error: send the session's alert if it has
            // one and close this connection only.
            let _ = tls.write_tls(&mut c.stream);
            c.tls = None;
            self.close_seller(key);
            return;
        }
        if state == TlsRead::Closed {
            c.peer_closed = true;
        }
        c.read_full = !discard && c.rbuf.len() >= cap;
        if handshaking && !tls.is_handshaking() {
            // From here the connection is a keep-alive HTTP connection with no request yet.
            c.request_started = None;
            c.last_active = now;
        }
        if got > 0 && !discard {
            c.last_active = now;
            if c.request_started.is_none() {
                c.request_started = Some(now);
            }
        }
        self.process_seller(key);
        self.finish_seller_io(key);
    }

    /// Parse and start every complete request in the buffer, up to the pipeline limit.
    pub(super) fn process_seller(&mut self, key: Key) {
        loop {
            let Some(c) = self.sellers.get_mut(key) else {
                return;
            };
            if c.pending.len() >= MAX_PIPELINED && !c.no_more_requests {
                // The client waits on the exchange, not the other way round: the requests
                // held in the buffer are not slow heads.
                c.request_started = None;
                return;
            }
            if c.wbuf.len().saturating_sub(c.wpos) >= MAX_SELLER_UNSENT_BYTES && !c.no_more_requests
            {
                // The client is not taking its answers: no more are made for it until it
                // does (or it is closed for it, `housekeeping`).
                c.request_started = None;
                c.output_held = true;
                return;
            }
            if c.no_more_requests || c.rbuf.is_empty() {
                return;
            }
            let result = c.decoder.decode(&c.rbuf, &mut c.body);
            match result {
                Ok(Decoded::NeedMore { consumed }) => {
                    c.rbuf.drain(..consumed);
                    // Blank lines before a request (RFC 9112 §2.2) are skipped but do not end
                    // the wait for it: the head timeout still runs from their arrival, so a
                    // client sending only them is closed like one sending a head too slowly.
                    if c.request_started.is_none() {
                        c.request_started = Some(self.now);
                    }
                    // A client waiting for `100 Continue` with credentials that name no seller
                    // hears 401 at once instead, and does not send the body (RFC 9110 §10.1.1);
                    // the connection closes after it, the body's bytes unread.
                    let waiting = !c.continue_sent
                        && c.pending.is_empty()
                        && !c.no_more_requests
                        && c.decoder.pending_head().is_some_and(|h| {
                            h.expect_continue
                                && h.version_minor >= 1
                                && matches!(
                                    h.path.split('?').next(),
                                    Some("/v1/leads" | "/v1/ping" | "/v1/post")
                                )
                        });
                    let auth = if waiting {
                        c.decoder.pending_head().map(|h| h.authorization.clone())
                    } else {
                        None
                    };
                    if let Some(auth) = auth {
                        if let Err(r) = self.authenticate_value(auth.as_deref()) {
                            if let Some(c) = self.sellers.get_mut(key) {
                                c.no_more_requests = true;
                                c.rbuf.clear();
                                c.request_started = None;
                            }
                            self.refuse(key, &r, None, &[]);
                            return;
                        }
                    }
                    if let Some(c) = self.sellers.get_mut(key) {
                        c.continue_if_expected();
                    }
                    return;
                }
                Ok(Decoded::Complete { head, consumed }) => {
                    c.rbuf.drain(..consumed);
                    c.continue_sent = false;
                    c.request_started = if c.rbuf.is_empty() {
                        None
                    } else {
                        Some(self.now)
                    };
                    let body = std::mem::take(&mut c.body);
                    if head.keep_alive && head.version_minor == 0 {
                        c.announce_keep_alive = true;
                    }
                    if !head.keep_alive {
                        // Whatever the client sent after it is not read.
                        c.no_more_requests = true;
                        c.rbuf.clear();
                        c.request_started = None;
                    }
                    self.handle_request(key, &head, &body);
                    self.answering_head = false;
                    if let Some(c) = self.sellers.get_mut(key) {
                        let mut body = body;
                        body.clear();
                        c.body = body;
                    }
                }
                Err(e) => {
                    c.rbuf.clear();
                    c.no_more_requests = true;
                    let mut out = Vec::new();
                    let limit;
                    let message = match e {
                        // Which limit: the seller sizes its batches by it.
                        http::Error::BodyTooLarge => {
                            limit = format!(
                                "body is larger than the limit of {} bytes",
                                self.limits.max_body_bytes
                            );
                            limit.as_str()
                        }
                        _ => e.message(),
                    };
                    lead::write_error(&mut out, None, e.code(), message, None);
                    let status = e.status();
                    self.count_refusal(status);
                    self.push_reply(key, status, &[], &out, true);
                    return;
                }
            }
        }
    }

    pub(super) fn count_refusal(&self, status: u16) {
        *self.stats.lock().refused.entry(status).or_default() += 1;
    }

    /// Queue a ready answer for the request being handled (it goes after earlier answers).
    pub(super) fn push_reply(
        &mut self,
        key: Key,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
        close: bool,
    ) {
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let close = close || c.no_more_requests;
        let persist = c.persist(close);
        let mut bytes = Vec::with_capacity(body.len() + 160);
        let mut hs: Vec<(&str, &str)> = Vec::with_capacity(headers.len() + 1);
        hs.push(("Content-Type", "application/json"));
        hs.extend_from_slice(headers);
        if self.answering_head {
            // The headers a GET would get, no body.
            http::write_response_head(&mut bytes, status, &hs, body.len(), persist);
        } else {
            http::write_response(&mut bytes, status, &hs, body, persist);
        }
        c.pending.push_back(Reply::Ready { bytes, close });
    }

    /// Answer a refusal; `lead` is the lead's id and whether it is a test, once it has one.
    pub(super) fn refuse(
        &mut self,
        key: Key,
        r: &Refusal,
        lead: Option<(&str, bool)>,
        headers: &[(&str, &str)],
    ) {
        let mut out = Vec::with_capacity(160);
        lead::write_refusal(&mut out, lead, r.code, &r.message, r.field.as_deref());
        self.count_refusal(r.status);
        // RFC 9110 §11.6.1: a 401 names the scheme it wants.
        let bearer = [("WWW-Authenticate", "Bearer")];
        let headers = if r.status == 401 {
            &bearer[..]
        } else {
            headers
        };
        self.push_reply(key, r.status, headers, &out, false);
    }

    pub(super) fn handle_request(&mut self, key: Key, head: &RequestHead, body: &[u8]) {
        let path = head.path.split('?').next().unwrap_or("");
        // Every answer to a HEAD request is written synchronously, by `push_reply`.
        self.answering_head = head.method == Method::Head;
        if !http::host_ok(head) {
            let mut out = Vec::with_capacity(160);
            lead::write_error(
                &mut out,
                None,
                "bad_host",
                "an HTTP/1.1 request carries exactly one Host header",
                None,
            );
            self.count_refusal(400);
            if let Some(c) = self.sellers.get_mut(key) {
                c.no_more_requests = true;
                c.rbuf.clear();
            }
            return self.push_reply(key, 400, &[], &out, true);
        }
        if self.drain_until.is_some() && path != "/healthz" {
            let mut out = Vec::with_capacity(160);
            lead::write_error(
                &mut out,
                None,
                "shutting_down",
                "the exchange is shutting down; send the lead again in a moment",
                None,
            );
            self.count_refusal(503);
            if let Some(c) = self.sellers.get_mut(key) {
                c.no_more_requests = true;
            }
            return self.push_reply(key, 503, &[("Retry-After", "1")], &out, true);
        }
        match (head.method, path) {
            (Method::Post, "/v1/leads") => self.start_lead(key, head, body, Flow::Direct),
            (Method::Post, "/v1/ping") => self.start_lead(key, head, body, Flow::Ping),
            (Method::Post, "/v1/post") => self.start_lead(key, head, body, Flow::Post),
            (Method::Get | Method::Head, "/healthz") => {
                self.push_reply(key, 200, &[], b"{\"status\":\"ok\"}", false)
            }
            // `/v1/leads/` names no lead: an unknown endpoint below (a seller's stray slash on
            // a post is not told to use GET).
            (Method::Get, p) if p.len() > LEAD_PATH.len() && p.starts_with(LEAD_PATH) => {
                self.look_up(key, head, &p[LEAD_PATH.len()..])
            }
            (_, p)
                if matches!(p, "/v1/leads" | "/v1/ping" | "/v1/post" | "/healthz")
                    || (p.len() > LEAD_PATH.len() && p.starts_with(LEAD_PATH)) =>
            {
                let allow = match p {
                    "/healthz" => "GET, HEAD",
                    p if p.starts_with(LEAD_PATH) => "GET",
                    _ => "POST",
                };
                let r = Refusal {
                    status: 405,
                    code: "method_not_allowed",
                    message: format!("{} takes {}", path, allow),
                    field: None,
                };
                self.refuse(key, &r, None, &[("Allow", allow)]);
            }
            _ => {
                let r = Refusal {
                    status: 404,
                    code: "not_found",
                    message: format!("no such endpoint: {}", path),
                    field: None,
                };
                self.refuse(key, &r, None, &[]);
            }
        }
    }

    /// `GET /v1/leads/{id}`: queue the question for the journal's reader thread; its answer
    /// comes back as a letter ([`Worker::read_mail`]) and takes this request's place in the
    /// connection's answer order.
    pub(super) fn look_up(&mut self, key: Key, head: &RequestHead, id: &str) {
        let seller = match self.authenticate(head) {
            Ok(s) => s,
            Err(r) => return self.refuse(key, &r, None, &[]),
        };
        self.authorised(key);
        let Some(lead_id) = lookup::canonical_lead_id(id) else {
            let r = Refusal {
                status: 404,
                code: "not_found",
                message: format!("{id:?} is not a lead id"),
                field: Some("lead_id".into()),
            };
            return self.refuse(key, &r, None, &[]);
        };
        self.queue_lookup(key, seller, lead_id, None);
    }

    /// Hand a question about `lead_id` to the journal's reader thread; its answer takes this
    /// request's place in the connection's answer order. `replay`: the kind of a request
    /// retried under an `Idempotency-Key`, answered as the first request was.
    pub(super) fn queue_lookup(
        &mut self,
        key: Key,
        seller: usize,
        lead_id: String,
        replay: Option<Flow>,
    ) {
        let Some(conn) = self.sellers.get_mut(key) else {
            return;
        };
        let close = conn.no_more_requests;
        let seq = conn.first_seq + conn.pending.len() as u64;
        let request = lookup::LookupRequest {
            lead_id,
            seller: self.gen.rt.snap.sellers[seller].id.clone(),
            worker: self.id,
            conn: key,
            seq,
            replay: replay.is_some(),
            ping: replay == Some(Flow::Ping),
        };
        if !self.shared.lookups.send(request) {
            let r = Refusal {
                status: 503,
                code: "overloaded",
                message: "too many lead lookups waiting".into(),
                field: None,
            };
            return self.refuse(key, &r, None, &[("Retry-After", "1")]);
        }
        conn.pending.push_back(Reply::Waiting { close });
    }

    /// A lookup's answer from the reader thread: written in its place in the answer order.
    pub(super) fn looked_up(&mut self, done: lookup::LookupDone) {
        let Some(c) = self.sellers.get_mut(done.conn) else {
            return; // the seller hung up meanwhile
        };
        let Some(idx) = done.seq.checked_sub(c.first_seq).map(|i| i as usize) else {
            return;
        };
        if let Some(Reply::Waiting { close }) = c.pending.get(idx) {
            let close = *close || closing_for_drain(self.drain_until, c, idx);
            let persist = c.persist(close);
            let mut bytes = Vec::with_capacity(done.body.len() + 160);
            let json = ("Content-Type", "application/json");
            let headers: &[(&str, &str)] = match (done.replay, done.status) {
                (true, 409) => &[json, ("Retry-After", "1")],
                (true, _) => &[json, ("Idempotent-Replayed", "true")],
                _ => &[json],
            };
            http::write_response(&mut bytes, done.status, headers, &done.body, persist);
            c.pending[idx] = Reply::Ready { bytes, close };
            self.finish_seller_io(done.conn);
        }
    }

    /// The connection's request named a seller: it is no stranger from now on.
    pub(super) fn authorised(&mut self, key: Key) {
        if let Some(c) = self.sellers.get_mut(key) {
            c.authorised = true;
        }
    }

    pub(super) fn authenticate(&self, head: &RequestHead) -> Result<usize, Refusal> {
        self.authenticate_value(head.authorization.as_deref())
    }

    /// The seller an `Authorization` value names.
    pub(super) fn authenticate_value(&self, authorization: Option<&str>) -> Result<usize, Refusal> {
        let unauthorized = |m: &str| Refusal {
            status: 401,
            code: "unauthorized",
            message: m.to_string(),
            field: None,
        };
        let Some(auth) = authorization else {
            return Err(unauthorized("missing Authorization: Bearer <api key>"));
        };
        let token = match auth.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => return Err(unauthorized("Authorization must be Bearer <api key>")),
        };
        self.gen
            .rt
            .snap
            .seller_by_key(token)
            .ok_or_else(|| unauthorized("unknown api key"))
    }

    /// Move ready answers to the write buffer, write, and close when due.
    pub(super) fn finish_seller_io(&mut self, key: Key) {
        self.flush_ready(key);
        self.write_seller(key);
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let all_written = c.all_sent();
        let done = (c.close_after_flush && all_written)
            || (c.peer_closed && c.pending.is_empty() && all_written);
        if done {
            self.close_seller(key);
        } else {
            self.resume_if_room(key);
        }
    }

    pub(super) fn flush_ready(&mut self, key: Key) {
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let mut resumed = false;
        while let Some(Reply::Ready { .. }) = c.pending.front() {
            if let Some(Reply::Ready { bytes, close }) = c.pending.pop_front() {
                c.first_seq += 1;
                if c.wpos == c.wbuf.len() {
                    c.wbuf.clear();
                    c.wpos = 0;
                }
                c.wbuf.extend_from_slice(&bytes);
                resumed = true;
                if close {
                    c.close_after_flush = true;
                    c.pending.clear();
                    break;
                }
            }
        }
        if resumed && !c.no_more_requests {
            // A request whose body waits on `100 Continue` may be told now.
            c.continue_if_expected();
        }
        if resumed && !c.rbuf.is_empty() && !c.no_more_requests {
            // Room freed in the pipeline: parse requests that were waiting in the buffer.
            if let Some(tls) = c.tls.as_mut() {
                // Plaintext the session held back while `rbuf` was full.
                let cap = self.limits.max_head_bytes + self.limits.max_body_bytes + READ_CHUNK;
                let (_, state) = tls_plaintext(tls, &mut c.rbuf, &mut self.read_buf, cap, false);
                if state == Some(TlsRead::Closed) {
                    c.peer_closed = true;
                }
            }
            self.process_seller(key);
            if let Some(c) = self.sellers.get_mut(key) {
                if matches!(c.pending.front(), Some(Reply::Ready { .. })) {
                    self.flush_ready(key);
                }
            }
        }
    }

    pub(super) fn write_seller(&mut self, key: Key) {
        let now = self.now;
        let Some(c) = self.sellers.get_mut(key) else {
            return;
        };
        let registry = self.poll.registry();
        let token = seller_token(key.index);
        let flushed = match c.tls.as_mut() {
            None => flush(&mut c.stream, &c.wbuf, &mut c.wpos),
            Some(tls) => tls_flush(tls, &mut c.stream, &c.wbuf, &mut c.wpos),
        };
        match flushed {
            Flush::Blocked => {
                c.unsent_since.get_or_insert(now);
                return want_write(registry, &mut c.stream, token, &mut c.write_interest, true);
            }
            Flush::Failed => {
                // The seller is gone: its pending answers are dropped (leads still settle).
                c.wbuf.clear();
                c.wpos = 0;
                c.close_after_flush = true;
                c.peer_closed = true;
            }
            Flush::Done => {}
        }
        c.unsent_since = None;
        want_write(registry, &mut c.stream, token, &mut c.write_interest, false);
        if !c.wbuf.is_empty() {
            // An answer written is activity too: a connection is idle from its last answer,
            // not from its last request, for the idle timeout and for making room.
            c.last_active = now;
        }
        c.wbuf.clear();
        c.wpos = 0;
        if c.close_after_flush {
            self.close_seller(key);
        }
    }

    pub(super) fn close_seller(&mut self, key: Key) {
        // The place goes back to the count here, as the connection is dropped.
        drop(self.remove_seller(key));
    }

    /// Close a seller connection and hand back its place (to give to a new connection, or to
    /// drop); `None` when there is no such connection.
    pub(super) fn remove_seller(&mut self, key: Key) -> Option<Place> {
        let mut c = self.sellers.remove(key)?;
        if let Some(tls) = c.tls.as_mut() {
            // Say goodbye properly when the socket takes it; never wait for it.
            tls.send_close_notify();
            while tls.wants_write() {
                match tls.write_tls(&mut c.stream) {
                    Ok(n) if n > 0 => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    _ => break,
                }
            }
        }
        let _ = self.poll.registry().deregister(&mut c.stream);
        Some(c.place)
    }

    // ----- journal -----------------------------------------------------------------------
}
