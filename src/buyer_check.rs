//! `gavel buyer-check`: send test pings to a buyer endpoint and report whether it speaks the
//! buyer protocol (PROTOCOL.md §2) the way the exchange needs, with its response times.
//!
//! An operator tool, not the hot path: blocking std sockets, one connection at a time, every
//! connect, write and read bounded by a timeout. What goes on the wire and how answers are read
//! is the exchange's own code: the ping body from `lead::write_ping` (or the buyer's adapter),
//! the request from `http::write_request`, the answer through `http::ResponseDecoder` and
//! `lead::parse_bid` (or the adapter's `parse_bid`). "Conformant" therefore means "the exchange
//! would read these answers as bids or no-bids, in time, on a kept-alive connection".

/// `println!`/`print!` that do not panic when stdout cannot be written (see [`crate::out`]).
macro_rules! println {
    ($($arg:tt)*) => { $crate::out_println!($($arg)*) };
}
macro_rules! print {
    ($($arg:tt)*) => { $crate::out_print!($($arg)*) };
}

/// A line to stderr. `std`'s `eprintln!` panics when stderr is a closed pipe or a full disk;
/// the exchange must go on (and still take its signals) when whoever reads its log goes away.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use crate::adapter::{Adapter, Ctx, ResponseKind};
use crate::auction::PingOutcome;
use crate::config::{self, Campaign, Endpoint, Method, SaleKind, Scheme, Snapshot};
use crate::http::{self, Decoded, Limits, ResponseDecoder, ResponseHead};
use crate::lead::{self, LeadRequest};
use crate::money::{dollars_string, Cents};
use crate::net::{CONNECT_TIMEOUT, MAX_BUYER_ANSWER_BYTES};

/// Bytes read from a buyer's socket at a time.
const READ_CHUNK: usize = 4096;
use crate::stats::{histogram, Percentiles};
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pings sent when `--count` is not given.
pub const DEFAULT_COUNT: u32 = 20;
/// Most pings one run may send.
pub const MAX_COUNT: u32 = 1000;
/// The ping window without `--timeout-ms` or a campaign: the config's default `ping_timeout_ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 800;
/// Longest ping window: the config's own bound on `ping_timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = config::MAX_TIMEOUT_MS;
/// How often a kept-alive connection is looked at between two pings, to tell when the buyer
/// closed it.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// The shortest `idle_timeout_ms` the exchange takes for a buyer: a buyer that closes kept-alive
/// connections after longer idle can be served by setting it under that.
const MIN_BUYER_IDLE_TIMEOUT: Duration = Duration::from_millis(100);
/// Pause between two pings when `--interval-ms` is not given.
pub const DEFAULT_INTERVAL_MS: u64 = 50;
/// Longest pause between two pings.
pub const MAX_INTERVAL_MS: u64 = 10_000;
/// Time the exchange keeps for itself out of the ping window when no config says otherwise
/// (the default `server.engine_margin_ms`): the ping's `timeout_ms` is the window less this.
pub const DEFAULT_ENGINE_MARGIN_MS: u64 = 0;
/// Most `--header` options.
pub const MAX_EXTRA_HEADERS: usize = 32;
/// Longest `--lead` text.
pub const MAX_LEAD_BYTES: usize = 64 * 1024;
/// Examples of a failure kept per check, so a report stays readable over a thousand pings.
pub const MAX_EXAMPLES: usize = 3;

/// The campaign and vertical named in pings when no `--campaign` is given.
pub const SAMPLE_CAMPAIGN: &str = "buyer-check";
pub const SAMPLE_VERTICAL: &str = "auto_insurance";
/// The fields pinged without a campaign: the contract's example ping.
pub const SAMPLE_PING_FIELDS: &[&str] = &["state", "zip", "lead_type", "age", "insured"];

/// A test lead. Personal fields are here so that a campaign's ping is built from a whole lead,
/// as in the exchange, and can be seen to leave them out.
const SAMPLE_LEAD: &str = r#"{"first_name": "Test", "last_name": "Lead", "email": "test@example.com",
 "phone": "5555550100", "street": "1 Test St", "city": "Houston", "state": "TX", "zip": "77002",
 "lead_type": "auto", "age": 34, "insured": true, "home_owner": true, "credit": "good",
 "roof_type": "asphalt", "monthly_bill": 150}"#;

#[derive(clap::Args, Debug)]
pub struct BuyerCheckArgs {
    /// The buyer's ping URL (http:// or https://).
    #[arg(long)]
    pub url: String,
    /// Build the pings exactly as the exchange does for this campaign: its ping_fields, its
    /// ping_timeout_ms. Needs --config.
    #[arg(long, requires = "config", value_name = "ID")]
    pub campaign: Option<String>,
    /// The exchange's config: campaigns, [tls] ca_files, and the headers and adapter of the
    /// buyer whose ping_url is --url.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The configured buyer whose headers and adapter are used, when several share the URL
    /// (default: the first in the config whose ping_url is --url). Needs --config.
    #[arg(long, requires = "config", value_name = "ID")]
    pub buyer: Option<String>,
    /// Pings to send, one after another.
    #[arg(long, default_value_t = DEFAULT_COUNT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_COUNT)))]
    pub count: u32,
    /// The ping window in milliseconds: an answer later than this is a timeout (default: the
    /// campaign's ping_timeout_ms, else 800). Pings tell the buyer this less the engine margin.
    #[arg(long, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_MS))]
    pub timeout_ms: Option<u64>,
    /// Pause between pings in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(0..=MAX_INTERVAL_MS))]
    pub interval_ms: u64,
    /// An extra request header, "Name: value" (repeatable), after any configured ones.
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Lead fields for the pings as a JSON object, merged over the built-in sample.
    #[arg(long, value_name = "JSON")]
    pub lead: Option<String>,
    /// A PEM file of CA certificates trusted for an https URL (repeatable), beside the web
    /// roots and the config's [tls] ca_files.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Everything a run needs, resolved from the arguments and the config.
pub struct Plan {
    pub endpoint: Endpoint,
    pub url: String,
    pub campaign: Campaign,
    pub lead: LeadRequest,
    /// Lead fields the campaign pings that neither the sample nor `--lead` gives.
    pub missing_fields: Vec<String>,
    pub headers: Vec<(String, String)>,
    /// The configured buyer whose `ping_url` is the URL.
    pub buyer: Option<String>,
    /// What the report says about how the buyer was chosen and what was not checked.
    pub notes: Vec<String>,
    pub codec: Option<Arc<Adapter>>,
    pub window: Duration,
    pub timeout_ms: u64,
    pub count: u32,
    pub interval: Duration,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Plan {
    /// The adapter whose template builds the ping, when one does: a form adapter always, a
    /// JSON one with a ping template (without one it gets the native ping, as from the
    /// exchange). Such a ping carries no `timeout_ms` unless its template puts one in.
    fn ping_template(&self) -> Option<&Arc<Adapter>> {
        self.codec
            .as_ref()
            .filter(|c| c.request_kind() == crate::adapter::RequestKind::Form || c.has_ping_body())
    }
}

/// Run the command; returns the exit code (0 conformant, 1 not, 2 usage).
pub fn run(args: &BuyerCheckArgs) -> i32 {
    let plan = match plan(args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let report = check(&plan);
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{}", s),
            Err(e) => {
                eprintln!("gavel: cannot write the report: {}", e);
                return 1;
            }
        }
    } else {
        print!("{}", report.text());
    }
    if report.conformant {
        0
    } else {
        1
    }
}

fn usage(message: impl std::fmt::Display) -> i32 {
    eprintln!("gavel: {}", message);
    2
}

/// Resolve the arguments; a usage problem is reported (one line) and gives its exit code.
fn plan(args: &BuyerCheckArgs) -> Result<Plan, i32> {
    let endpoint = Endpoint::parse(&args.url).map_err(|e| usage(format!("--url: {}", e)))?;
    let snap: Option<Snapshot> = match &args.config {
        Some(path) => Some(crate::cli::load(path)?),
        None => None,
    };
    let campaign = match (&args.campaign, &snap) {
        (Some(id), Some(s)) => match s.campaign_by_id(id) {
            Some(i) => s.campaigns[i].clone(),
            None => {
                return Err(usage(format!(
                    "--campaign: no campaign {:?} in {}",
                    id,
                    args.config
                        .as_deref()
                        .map_or(String::new(), |p| p.display().to_string())
                )))
            }
        },
        _ => sample_campaign(),
    };
    let mut fields = lead::Fields::from_map(&sample_lead());
    if let Some(text) = &args.lead {
        if text.len() > MAX_LEAD_BYTES {
            return Err(usage(format!(
                "--lead: longer than {} bytes",
                MAX_LEAD_BYTES
            )));
        }
        match serde_json::from_str::<Value>(text) {
            // Its values as written (a 23-digit number keeps its digits), as the exchange
            // keeps a seller's.
            Ok(Value::Object(m)) if m.len() <= lead::MAX_LEAD_FIELDS => {
                match lead::Fields::from_json(text) {
                    Ok(given) => {
                        for (k, v) in given.iter() {
                            fields.insert_field(k, v);
                        }
                    }
                    Err(e) => return Err(usage(format!("--lead: not JSON: {}", e))),
                }
            }
            Ok(Value::Object(_)) => {
                return Err(usage(format!(
                    "--lead: more than {} fields",
                    lead::MAX_LEAD_FIELDS
                )))
            }
            Ok(_) => return Err(usage("--lead: must be a JSON object")),
            Err(e) => return Err(usage(format!("--lead: not JSON: {}", e))),
        }
    }
    let missing_fields = campaign
        .ping_fields
        .iter()
        .filter(|f| !config::is_personal_field(f))
        .filter(|f| !fields.contains_key(f.as_str()))
        .cloned()
        .collect();

    let mut notes = Vec::new();
    let buyer = match (&snap, &args.buyer) {
        (Some(s), Some(id)) => match s.buyers.iter().find(|b| &b.id == id) {
            Some(b) => {
                if b.ping.as_ref() != Some(&endpoint) {
                    notes.push(format!(
                        "buyer {}'s ping_url is not --url: its headers and adapter are used \
                         at --url",
                        crate::text::shown(id)
                    ));
                }
                Some(b)
            }
            None => return Err(usage(format!("--buyer: no buyer {id:?} in the config"))),
        },
        (Some(s), None) => {
            let mut sharing = s
                .buyers
                .iter()
                .filter(|b| b.ping.as_ref() == Some(&endpoint));
            let first = sharing.next();
            let others: Vec<&str> = sharing.map(|b| b.id.as_str()).collect();
            match first {
                Some(b) if !others.is_empty() => notes.push(format!(
                    "buyers {}, {} share this ping_url: checked as {} (the first in the \
                     config); --buyer ID checks another",
                    b.id,
                    others.join(", "),
                    b.id
                )),
                Some(_) => {}
                None => notes.push(
                    "no buyer in the config has this ping_url (compared as scheme, host, port \
                     and path): the native protocol, no configured headers or adapter; \
                     --buyer ID names one"
                        .to_string(),
                ),
            }
            first
        }
        _ => None,
    };
    if let (Some(b), Some(s), Some(id)) = (buyer, &snap, &args.campaign) {
        if s.campaign_by_id(id)
            .is_some_and(|c| !b.campaigns.contains(&c))
        {
            notes.push(format!(
                "buyer {} is not in campaign {}: the exchange never pings it for that \
                 campaign's leads",
                crate::text::shown(&b.id),
                crate::text::shown(id)
            ));
        }
    }
    notes.push(
        "posts are not sent (a post carries a consumer): 'conformant' speaks of pings only; \
         the post endpoint is first tried by a real lead"
            .to_string(),
    );
    let mut headers: Vec<(String, String)> = buyer.map_or_else(Vec::new, |b| b.headers.clone());
    if args.headers.len() > MAX_EXTRA_HEADERS {
        return Err(usage(format!(
            "--header: at most {} headers",
            MAX_EXTRA_HEADERS
        )));
    }
    for h in &args.headers {
        let parsed = h
            .split_once(':')
            .map(|(n, v)| (n.trim(), v.trim()))
            .filter(|(n, v)| http::is_valid_header(n, v));
        match parsed {
            Some((n, v)) => {
                if let Some(why) = config::written_by_the_exchange(n) {
                    return Err(usage(format!(
                        "--header: {n:?} is written by buyer-check itself, as the exchange writes it, {why}"
                    )));
                }
                headers.push((n.to_string(), v.to_string()));
            }
            None => return Err(usage(format!("--header: {:?} is not \"Name: value\"", h))),
        }
    }

    let window_ms = args
        .timeout_ms
        .or_else(|| {
            args.campaign
                .as_ref()
                .map(|_| campaign.ping_timeout.as_millis() as u64)
        })
        .unwrap_or(DEFAULT_TIMEOUT_MS)
        .clamp(1, MAX_TIMEOUT_MS);
    let margin_ms = snap.as_ref().map_or(DEFAULT_ENGINE_MARGIN_MS, |s| {
        s.server.engine_margin.as_millis() as u64
    });
    // The same arithmetic as the auction's: the buyer is told what is left of the window.
    let timeout_ms = window_ms.saturating_sub(margin_ms).max(1);

    // A --ca-file is read whatever the scheme: a missing or unreadable one is a usage error
    // for an http URL too, not silently ignored.
    for f in &args.ca_files {
        if !f.is_file() {
            return Err(usage(format!("--ca-file: cannot read {}", f.display())));
        }
    }
    let ca_files_given = !args.ca_files.is_empty();
    let tls = match endpoint.scheme {
        Scheme::Http if !ca_files_given => None,
        scheme => {
            let mut files = snap
                .as_ref()
                .map_or_else(Vec::new, |s| s.tls_ca_files.clone());
            files.extend(args.ca_files.iter().cloned());
            match crate::net::tls::client_config(&files) {
                Ok(c) => (scheme == Scheme::Https).then_some(c),
                Err(e) => return Err(usage(format!("--ca-file: {}", e))),
            }
        }
    };
    // As the exchange sends it: a state as its USPS code, however `--lead` spelt it.
    lead::normalize_codes(&mut fields);
    Ok(Plan {
        url: args.url.clone(),
        endpoint,
        lead: LeadRequest {
            campaign: campaign.id.clone(),
            source: None,
            test: true,
            lead: fields,
            consent: None,
        },
        campaign,
        missing_fields,
        headers,
        buyer: buyer.map(|b| b.id.clone()),
        notes,
        codec: buyer.and_then(|b| b.codec.clone()),
        window: Duration::from_millis(window_ms),
        timeout_ms,
        count: args.count,
        interval: Duration::from_millis(args.interval_ms),
        tls,
    })
}

fn sample_lead() -> Map<String, Value> {
    match serde_json::from_str::<Value>(SAMPLE_LEAD) {
        Ok(Value::Object(m)) => m,
        // A constant; the unit tests parse it.
        _ => Map::new(),
    }
}

/// The campaign pings name without `--campaign`: the contract's example ping fields.
fn sample_campaign() -> Campaign {
    Campaign {
        id: SAMPLE_CAMPAIGN.to_string(),
        vertical: SAMPLE_VERTICAL.to_string(),
        method: Method::PingPost,
        sale: SaleKind::Exclusive,
        ping_timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS),
        post_timeout: Duration::from_millis(2000),
        answer_timeout: None,
        reserve_cents: 0,
        ping_fields: SAMPLE_PING_FIELDS.iter().map(|s| s.to_string()).collect(),
        required_fields: Vec::new(),
        require_consent: false,
        disclosed_buyers_only: false,
        consent_max_age: None,
        dedupe_days: 0,
        fallback: None,
        hold: Duration::ZERO,
        suppression_file: None,
        suppression: None,
        buyers: Vec::new(),
    }
}

/// A blocking connection to the buyer, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    decoder: ResponseDecoder,
    /// Pings answered on this connection.
    served: u32,
}

/// Open a connection to the endpoint: every resolved address in turn, each within
/// `CONNECT_TIMEOUT`; for https the TLS handshake too, within the same bound.
fn connect(plan: &Plan) -> Result<(Conn, SocketAddr), String> {
    let ep = &plan.endpoint;
    let addrs: Vec<SocketAddr> = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {}", ep.host, e))?
        .collect();
    let mut last = format!("{} resolves to no address", ep.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(tcp) => {
                // Small requests and answers: do not let Nagle hold them back.
                let _ = tcp.set_nodelay(true);
                let stream = match &plan.tls {
                    None => Stream::Plain(tcp),
                    Some(cfg) => {
                        let mut tcp = tcp;
                        let mut session = crate::net::tls::connect(cfg, &ep.host)
                            .map_err(|e| format!("TLS to {}: {}", ep.host, e))?;
                        // The handshake belongs to connecting, not to the first ping's time.
                        let _ = tcp.set_read_timeout(Some(CONNECT_TIMEOUT));
                        let _ = tcp.set_write_timeout(Some(CONNECT_TIMEOUT));
                        while session.is_handshaking() {
                            if let Err(e) = session.complete_io(&mut tcp) {
                                let why = match e.kind() {
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
                                        "did not complete within {} s",
                                        CONNECT_TIMEOUT.as_secs()
                                    ),
                                    io::ErrorKind::UnexpectedEof => {
                                        "connection closed by the buyer".to_string()
                                    }
                                    _ => match e
                                        .get_ref()
                                        .and_then(|i| i.downcast_ref::<rustls::Error>())
                                    {
                                        Some(t) => crate::net::tls::reason(t),
                                        None => e.to_string(),
                                    },
                                };
                                return Err(format!("TLS handshake with {addr}: {why}"));
                            }
                        }
                        Stream::Tls(Box::new(rustls::StreamOwned::new(session, tcp)))
                    }
                };
                let conn = Conn {
                    stream,
                    rbuf: Vec::with_capacity(READ_CHUNK),
                    decoder: ResponseDecoder::new(Limits::with_max_body_bytes(
                        MAX_BUYER_ANSWER_BYTES,
                    )),
                    served: 0,
                };
                return Ok((conn, addr));
            }
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                last = format!(
                    "connect to {} timed out after {} ms",
                    addr,
                    CONNECT_TIMEOUT.as_millis()
                );
            }
            Err(e) => last = format!("cannot connect to {}: {}", addr, e),
        }
    }
    Err(last)
}

/// What an idle kept-alive connection holds before the next ping.
enum Idle {
    /// Nothing: it can carry the ping.
    Quiet,
    /// The buyer closed it (or it failed) while idle: the ping goes on a new one, as from
    /// the exchange.
    Closed,
    /// Bytes nobody asked for (this many read): an answer sent twice, or garbage.
    Bytes(usize),
}

/// Look at an idle connection without waiting: what it holds before a ping is written.
fn unasked_bytes(c: &mut Conn) -> Idle {
    if !c.rbuf.is_empty() {
        return Idle::Bytes(c.rbuf.len());
    }
    if c.stream.tcp().set_nonblocking(true).is_err() {
        return Idle::Closed;
    }
    let mut chunk = [0u8; READ_CHUNK];
    let mut got = 0;
    let idle = loop {
        match c.stream.read(&mut chunk) {
            Ok(0) if got == 0 => break Idle::Closed,
            Ok(0) => break Idle::Bytes(got),
            Ok(n) => {
                got += n;
                if got >= MAX_BUYER_ANSWER_BYTES {
                    break Idle::Bytes(got);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Nothing more there (for TLS: no data in what came, a session ticket say).
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got == 0 => break Idle::Quiet,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Idle::Bytes(got),
            Err(_) => break Idle::Closed,
        }
    };
    if c.stream.tcp().set_nonblocking(false).is_err() {
        return Idle::Closed;
    }
    idle
}

/// Why one request got no answer.
enum TripError {
    /// No whole answer by the end of the window.
    Timeout,
    /// The connection ended before a single byte of the answer: on a reused connection, the
    /// buyer dropped a kept-alive connection. `written`: the ping went out whole first (the
    /// buyer may have read it), rather than its write failing.
    ClosedBeforeAnswer { why: String, written: bool },
    /// Anything else: a malformed answer, a reset in the middle, a TLS failure.
    Failed(String),
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Write one request and read its answer (head, body into `body`) before `deadline`.
fn round_trip(
    c: &mut Conn,
    request: &[u8],
    deadline: Instant,
    body: &mut Vec<u8>,
) -> Result<ResponseHead, TripError> {
    let left = |now: Instant| deadline.saturating_duration_since(now);
    let w = left(Instant::now());
    if w.is_zero() {
        return Err(TripError::Timeout);
    }
    let _ = c.stream.tcp().set_write_timeout(Some(w));
    let _ = c.stream.tcp().set_read_timeout(Some(w));
    if let Err(e) = c.stream.write_all(request).and_then(|_| c.stream.flush()) {
        return Err(if is_timeout(&e) {
            TripError::Timeout
        } else if is_closed(&e) {
            TripError::ClosedBeforeAnswer {
                why: format!("writing the ping: {}", e),
                written: false,
            }
        } else {
            TripError::Failed(format!("writing the ping: {}", e))
        });
    }
    let mut chunk = [0u8; READ_CHUNK];
    let mut got_any = !c.rbuf.is_empty();
    loop {
        if !c.rbuf.is_empty() {
            match c.decoder.decode(&c.rbuf, body) {
                Ok(Decoded::Complete { head, consumed }) => {
                    c.rbuf.drain(..consumed);
                    return Ok(head);
                }
                Ok(Decoded::NeedMore { consumed }) => {
                    c.rbuf.drain(..consumed);
                }
                Err(e) => {
                    let limits = Limits::with_max_body_bytes(MAX_BUYER_ANSWER_BYTES);
                    return Err(TripError::Failed(e.answer_reason(&limits)));
                }
            }
        }
        let now = Instant::now();
        let w = left(now);
        if w.is_zero() {
            return Err(TripError::Timeout);
        }
        let _ = c.stream.tcp().set_read_timeout(Some(w));
        let eof = match c.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                got_any = true;
                c.rbuf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Err(e) if is_timeout(&e) => return Err(TripError::Timeout),
            // TLS without close_notify: the transport ended.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => true,
            Err(e) if is_closed(&e) && !got_any => {
                return Err(TripError::ClosedBeforeAnswer {
                    why: e.to_string(),
                    written: true,
                })
            }
            Err(e) => return Err(TripError::Failed(e.to_string())),
        };
        if eof {
            return match c.decoder.on_eof() {
                Ok(Some(head)) => Ok(head),
                Ok(None) => Err(TripError::ClosedBeforeAnswer {
                    why: "the buyer closed the connection without answering".into(),
                    written: true,
                }),
                Err(e) => Err(TripError::Failed(e.to_string())),
            };
        }
    }
}

/// What became of one ping.
#[derive(Debug, Clone)]
pub enum PingResult {
    /// A whole HTTP answer.
    Answer {
        status: u16,
        version_minor: u8,
        keep_alive: bool,
        content_type: Option<String>,
        body_bytes: usize,
        outcome: PingOutcome,
    },
    Timeout,
    /// No connection could be opened.
    NoConnection(String),
    /// The connection failed or the answer was not HTTP the codec accepts.
    Failed(String),
}

/// One ping's record.
#[derive(Debug, Clone)]
pub struct PingRecord {
    /// 1-based.
    pub n: u32,
    pub result: PingResult,
    /// From the first byte of the request to the whole answer.
    pub elapsed: Duration,
    /// Sent on a connection that had answered an earlier ping.
    pub reused: bool,
    /// A connection was opened for this ping (the first, or after the last one ended).
    pub opened: bool,
    /// Why a kept-alive connection was found closed by the buyer, so that the ping went out
    /// again on a new one (empty when it was not).
    pub retried: String,
    /// The kept-alive connection was found closed while idle, this long (to within
    /// [`IDLE_POLL`]) after the answer before: a buyer's idle timeout when it is long enough
    /// for the exchange's `idle_timeout_ms` to be set under it.
    pub idle_closed_after: Option<Duration>,
    /// Bytes the kept-alive connection held before this ping was sent, after the answer to
    /// the one before (an answer sent twice): the connection was closed, as the exchange
    /// closes it, and the ping went out on a new one (0 when there were none).
    pub unasked: usize,
    /// The ping went out whole on a kept-alive connection that then closed without an
    /// answer, before the attempt on a new one: the buyer may have read it.
    pub delivered: bool,
}

/// Send the pings and gather the records.
fn send_pings(plan: &Plan) -> (Vec<PingRecord>, Option<SocketAddr>) {
    let mut records = Vec::with_capacity(plan.count as usize);
    let mut conn: Option<Conn> = None;
    let mut peer = None;
    let mut body = Vec::with_capacity(256);
    let mut ping = Vec::with_capacity(512);
    let mut request = Vec::with_capacity(1024);
    let content_type = plan
        .codec
        .as_ref()
        .map_or("application/json", |c| c.content_type());
    // When the last answer on the kept-alive connection was whole.
    let mut answered_at: Option<Instant> = None;
    for n in 1..=plan.count {
        // What the kept-alive connection did while idle, and when it was seen.
        let mut idle_seen: Option<(Idle, Instant)> = None;
        if n > 1 && !plan.interval.is_zero() {
            let until = Instant::now() + plan.interval;
            loop {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                std::thread::sleep((until - now).min(IDLE_POLL));
                if let (None, Some(c)) = (&idle_seen, conn.as_mut()) {
                    match unasked_bytes(c) {
                        Idle::Quiet => {}
                        other => idle_seen = Some((other, Instant::now())),
                    }
                }
            }
        }
        let ping_id = ulid::Ulid::new().to_string();
        ping.clear();
        match plan.ping_template() {
            Some(codec) => codec.write_ping(
                &mut ping,
                &Ctx {
                    ping_id: &ping_id,
                    bid_id: None,
                    price_cents: None,
                    campaign: &plan.campaign.id,
                    test: true,
                    lead: &plan.lead.lead,
                    consent: None,
                },
                &plan.campaign.ping_fields,
            ),
            None => lead::write_ping(
                &mut ping,
                &ping_id,
                &plan.campaign,
                &plan.lead,
                plan.timeout_ms,
            ),
        }
        request.clear();
        http::write_request(
            &mut request,
            "POST",
            &plan.endpoint.path,
            &plan.endpoint.host_header,
            plan.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            content_type,
            &ping,
        );
        let mut retried = String::new();
        let mut idle_closed_after = None;
        let mut delivered = false;
        let mut opened = false;
        let mut unasked = 0;
        if let Some(c) = conn.as_mut() {
            let (idle, seen) = idle_seen.unwrap_or_else(|| (unasked_bytes(c), Instant::now()));
            match idle {
                Idle::Quiet => {}
                Idle::Closed => {
                    let after = answered_at.map_or(Duration::ZERO, |t| seen.duration_since(t));
                    retried = format!(
                        "closed while idle, about {} ms after its answer",
                        after.as_millis()
                    );
                    idle_closed_after = Some(after);
                    conn = None;
                }
                Idle::Bytes(n) => {
                    unasked = n;
                    conn = None;
                }
            }
        }
        let record = loop {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match connect(plan) {
                    Ok((c, addr)) => {
                        peer = Some(addr);
                        opened = true;
                        conn.insert(c)
                    }
                    Err(e) => {
                        break PingRecord {
                            n,
                            result: PingResult::NoConnection(e),
                            elapsed: Duration::ZERO,
                            reused: false,
                            opened: false,
                            retried,
                            idle_closed_after,
                            unasked,
                            delivered,
                        };
                    }
                },
            };
            let reused = c.served > 0;
            let started = Instant::now();
            let trip = round_trip(c, &request, started + plan.window, &mut body);
            let elapsed = started.elapsed();
            let result = match trip {
                Ok(head) => {
                    c.served += 1;
                    answered_at = Some(Instant::now());
                    let keep_alive = head.keep_alive;
                    if !keep_alive {
                        conn = None;
                    }
                    let outcome = match &plan.codec {
                        Some(codec) => codec.parse_bid(head.status, &body),
                        None => lead::parse_bid(head.status, &body),
                    };
                    PingResult::Answer {
                        status: head.status,
                        version_minor: head.version_minor,
                        keep_alive,
                        content_type: head.content_type.as_ref().map(|t| t.as_str().to_string()),
                        body_bytes: body.len(),
                        outcome,
                    }
                }
                Err(TripError::ClosedBeforeAnswer { why, written })
                    if reused && retried.is_empty() =>
                {
                    // The exchange, too, sends a ping again on a fresh connection when a
                    // kept-alive one turns out to be closed. Closed as the ping was written:
                    // how long the connection had been idle tells a buyer's idle timeout
                    // meeting the ping from a close after its answer.
                    conn = None;
                    retried = why;
                    idle_closed_after = answered_at.map(|t| started.duration_since(t));
                    delivered = written;
                    continue;
                }
                Err(TripError::ClosedBeforeAnswer { why, .. }) | Err(TripError::Failed(why)) => {
                    conn = None;
                    PingResult::Failed(why)
                }
                Err(TripError::Timeout) => {
                    // The answer may still come: the connection cannot carry the next ping.
                    conn = None;
                    PingResult::Timeout
                }
            };
            break PingRecord {
                n,
                result,
                elapsed,
                reused,
                opened,
                retried,
                idle_closed_after,
                unasked,
                delivered,
            };
        };
        // Unreachable, at the first ping or after some were answered (the buyer went away).
        let unreachable = matches!(record.result, PingResult::NoConnection(_));
        records.push(record);
        if unreachable {
            // Not reachable now: more attempts would only repeat the same failure.
            break;
        }
    }
    (records, peer)
}

/// How a check came out. A warning does not make the endpoint non-conformant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub buyer: Option<String>,
    pub notes: Vec<String>,
    pub protocol: &'static str,
    pub campaign: String,
    pub ping_fields: Vec<String>,
    pub missing_fields: Vec<String>,
    pub window_ms: u64,
    pub timeout_ms: u64,
    /// Whether the pings carried `timeout_ms` (native pings do; an adapter's template does
    /// not).
    pub timeout_in_ping: bool,
    pub conformant: bool,
    pub checks: Vec<Check>,
    pub pings: u32,
    pub sent: u32,
    pub bids: u32,
    pub no_bids: u32,
    pub errors: u32,
    pub invalid: u32,
    pub timeouts: u32,
    pub bids_with_id: u32,
    /// Lowest and highest bid, dollars as exact JSON numbers.
    pub bid_min: Option<Box<RawValue>>,
    pub bid_max: Option<Box<RawValue>>,
    #[serde(skip)]
    pub bid_range_cents: Option<(Cents, Cents)>,
    pub connections: u32,
    pub reconnects: u32,
    /// Response times of whole answers, microseconds.
    pub response_us: Percentiles,
}

/// Send the pings and judge them.
pub fn check(plan: &Plan) -> Report {
    let (records, peer) = send_pings(plan);
    judge(plan, &records, peer)
}

fn first_examples(list: &[String]) -> String {
    let mut s = list
        .iter()
        .take(MAX_EXAMPLES)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if list.len() > MAX_EXAMPLES {
        s.push_str(&format!("; and {} more", list.len() - MAX_EXAMPLES));
    }
    s
}

fn media_type(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Cents as a JSON number in dollars, written by the exchange's own money code (no floats).
fn dollars_json(c: Cents) -> Option<Box<RawValue>> {
    RawValue::from_string(dollars_string(c)).ok()
}

/// Turn the records into checks and counts. Pure: unit-tested without sockets.
pub fn judge(plan: &Plan, records: &[PingRecord], peer: Option<SocketAddr>) -> Report {
    let count = plan.count;
    // A ping that found no connection was never written to the buyer, unless it went out on
    // a kept-alive connection that closed under it before the new one failed.
    let sent = records
        .iter()
        .filter(|r| r.delivered || !matches!(r.result, PingResult::NoConnection(_)))
        .count() as u32;
    let mut hist: Histogram<u64> = histogram();
    let (mut bids, mut no_bids, mut errors, mut invalid, mut timeouts, mut with_id) =
        (0u32, 0u32, 0u32, 0u32, 0u32, 0u32);
    let mut bid_range: Option<(Cents, Cents)> = None;
    let mut http_fail = Vec::new();
    let mut http_warn = Vec::new();
    let mut parse_fail = Vec::new();
    let mut ct_warn = Vec::new();
    let mut content_types: Vec<String> = Vec::new();
    let mut keep_fail = Vec::new();
    let mut keep_warn = Vec::new();
    let mut late = Vec::new();
    let mut connect_fail = Vec::new();
    let mut reused = 0u32;
    let (mut connections, mut reconnects) = (0u32, 0u32);
    let expect_xml = plan
        .codec
        .as_ref()
        .is_some_and(|c| c.response_kind() == ResponseKind::Xml);
    for r in records {
        let n = r.n;
        if r.opened {
            connections += 1;
            if n > 1 || !r.retried.is_empty() {
                reconnects += 1;
            }
        }
        if r.reused {
            reused += 1;
        }
        if r.unasked > 0 {
            keep_fail.push(format!(
                "ping {}: the connection held {} byte(s) nobody asked for after the answer to \
                 ping {} (an answer sent twice?); closed, as the exchange closes it, and the \
                 ping sent on a new one",
                n,
                r.unasked,
                n - 1
            ));
        }
        if !r.retried.is_empty() {
            let then = if matches!(r.result, PingResult::NoConnection(_)) {
                "a new one could not be made"
            } else {
                "sent again on a new one"
            };
            match r.idle_closed_after {
                // An idle timeout the exchange can be told to keep under.
                Some(after) if after >= MIN_BUYER_IDLE_TIMEOUT => keep_warn.push(format!(
                    "ping {}: the buyer closes kept-alive connections idle about {} ms: set \
                     its idle_timeout_ms under that, so the exchange closes them first; {}",
                    n,
                    after.as_millis(),
                    then
                )),
                Some(_) => keep_fail.push(format!(
                    "ping {}: the kept-alive connection was closed by the buyer ({}), too soon \
                     after its answer for the exchange's idle_timeout_ms (at least {} ms): \
                     say Connection: close instead; {}",
                    n,
                    r.retried,
                    MIN_BUYER_IDLE_TIMEOUT.as_millis(),
                    then
                )),
                None => keep_fail.push(format!(
                    "ping {}: the kept-alive connection was closed by the buyer ({}); {}",
                    n, r.retried, then
                )),
            }
        }
        match &r.result {
            PingResult::Answer {
                status,
                version_minor,
                keep_alive,
                content_type,
                body_bytes,
                outcome,
            } => {
                hist.saturating_record((r.elapsed.as_micros() as u64).max(1));
                if r.elapsed > plan.window {
                    late.push(format!(
                        "ping {}: answered in {} ms",
                        n,
                        r.elapsed.as_millis()
                    ));
                }
                if !(200..300).contains(status) {
                    http_fail.push(format!("ping {}: status {}", n, status));
                } else if *status != 200 && *status != 204 {
                    http_warn.push(format!(
                        "ping {}: status {} (the exchange reads it; the contract answers 200 or 204)",
                        n, status
                    ));
                }
                if !keep_alive && n < count {
                    keep_fail.push(format!(
                        "ping {}: {}",
                        n,
                        if *version_minor == 0 {
                            "HTTP/1.0 answer without keep-alive"
                        } else {
                            "the answer closes the connection (Connection: close or body to end of stream)"
                        }
                    ));
                }
                if *body_bytes > 0 {
                    let ct = content_type.as_deref().map(media_type);
                    let ok = match ct.as_deref() {
                        Some(t) if expect_xml => t.ends_with("/xml") || t.ends_with("+xml"),
                        Some(t) => t == "application/json" || t.ends_with("+json"),
                        None => false,
                    };
                    if !ok {
                        ct_warn.push(format!(
                            "ping {}: Content-Type {}",
                            n,
                            content_type.as_deref().unwrap_or("missing")
                        ));
                    }
                    let key = ct.unwrap_or_default();
                    if !content_types.contains(&key) {
                        content_types.push(key);
                    }
                }
                match outcome {
                    PingOutcome::Bid { cents, bid_id } => {
                        bids += 1;
                        if bid_id.is_some() {
                            with_id += 1;
                        }
                        bid_range = Some(match bid_range {
                            None => (*cents, *cents),
                            Some((lo, hi)) => (lo.min(*cents), hi.max(*cents)),
                        });
                    }
                    PingOutcome::NoBid => no_bids += 1,
                    PingOutcome::Invalid(why) => {
                        invalid += 1;
                        parse_fail.push(format!("ping {}: {}", n, why));
                    }
                    PingOutcome::Error(why) => {
                        errors += 1;
                        if (200..300).contains(status) {
                            parse_fail.push(format!("ping {}: {}", n, why));
                        }
                    }
                    PingOutcome::Timeout => timeouts += 1,
                }
            }
            PingResult::Timeout => {
                timeouts += 1;
                late.push(format!(
                    "ping {}: no whole answer within {} ms",
                    n,
                    plan.window.as_millis()
                ));
            }
            PingResult::NoConnection(why) => {
                // Not an error of the buyer's answers: none was asked for (`connect` says why);
                // but a ping the buyer got on the connection it then closed went unanswered.
                connect_fail.push(format!("ping {}: {}", n, why));
                if r.delivered {
                    errors += 1;
                    http_fail.push(format!(
                        "ping {}: not answered: {}, and a new connection could not be made",
                        n, r.retried
                    ));
                }
            }
            PingResult::Failed(why) => {
                errors += 1;
                http_fail.push(format!("ping {}: {}", n, why));
            }
        }
    }

    let mut checks = Vec::new();
    let target = peer.map_or_else(
        || format!("{}:{}", plan.endpoint.host, plan.endpoint.port),
        |a| a.to_string(),
    );
    let reached = peer.is_some();
    checks.push(Check {
        name: "connect",
        verdict: if !reached || !connect_fail.is_empty() {
            Verdict::Fail
        } else {
            Verdict::Pass
        },
        detail: if !reached {
            first_examples(&connect_fail)
        } else if connect_fail.is_empty() {
            format!(
                "connected to {}{}",
                target,
                if plan.tls.is_some() {
                    " (TLS, certificate verified)"
                } else {
                    ""
                }
            )
        } else {
            format!(
                "connected to {}, but later: {}",
                target,
                first_examples(&connect_fail)
            )
        },
    });
    let skip = |name: &'static str| Check {
        name,
        verdict: Verdict::Skip,
        detail: "no connection to the buyer".into(),
    };
    if !reached {
        for name in [
            "http",
            "answer",
            "content_type",
            "timeout",
            "keep_alive",
            "consistent",
        ] {
            checks.push(skip(name));
        }
    } else {
        let whole = records
            .iter()
            .filter(|r| matches!(r.result, PingResult::Answer { .. }))
            .count();
        checks.push(if !http_fail.is_empty() {
            Check {
                name: "http",
                verdict: Verdict::Fail,
                detail: first_examples(&http_fail),
            }
        } else if !http_warn.is_empty() {
            Check {
                name: "http",
                verdict: Verdict::Warn,
                detail: first_examples(&http_warn),
            }
        } else {
            Check {
                name: "http",
                verdict: if whole > 0 {
                    Verdict::Pass
                } else {
                    Verdict::Skip
                },
                detail: if whole > 0 {
                    format!("{} well-formed HTTP answers, status 200 or 204", whole)
                } else {
                    "no whole answer to judge".to_string()
                },
            }
        });
        checks.push(if !parse_fail.is_empty() {
            Check {
                name: "answer",
                verdict: Verdict::Fail,
                detail: first_examples(&parse_fail),
            }
        } else if bids + no_bids == 0 {
            Check {
                name: "answer",
                verdict: Verdict::Skip,
                detail: "no 2xx answer to read".into(),
            }
        } else {
            Check {
                name: "answer",
                verdict: Verdict::Pass,
                detail: format!(
                    "{} bids, {} no-bids, all read as the exchange reads them",
                    bids, no_bids
                ),
            }
        });
        checks.push(if !ct_warn.is_empty() {
            Check {
                name: "content_type",
                verdict: Verdict::Warn,
                detail: format!(
                    "expected {}: {}",
                    if expect_xml {
                        "an XML type"
                    } else {
                        "application/json"
                    },
                    first_examples(&ct_warn)
                ),
            }
        } else if content_types.is_empty() {
            Check {
                name: "content_type",
                verdict: Verdict::Skip,
                detail: "no answer had a body".into(),
            }
        } else {
            Check {
                name: "content_type",
                verdict: Verdict::Pass,
                detail: content_types.join(", "),
            }
        });
        checks.push(if !late.is_empty() {
            Check {
                name: "timeout",
                verdict: Verdict::Fail,
                detail: format!(
                    "{} of {} pings late for the {} ms window: {}",
                    late.len(),
                    sent,
                    plan.window.as_millis(),
                    first_examples(&late)
                ),
            }
        } else if whole == 0 {
            // Nothing came back in time or late: no answer to time.
            Check {
                name: "timeout",
                verdict: Verdict::Skip,
                detail: "no whole answer to time".into(),
            }
        } else {
            Check {
                name: "timeout",
                verdict: Verdict::Pass,
                detail: match plan.ping_template() {
                    None => format!(
                        "every answer within the {} ms window (pings said timeout_ms {})",
                        plan.window.as_millis(),
                        plan.timeout_ms
                    ),
                    Some(_) => format!(
                        "every answer within the {} ms window",
                        plan.window.as_millis()
                    ),
                },
            }
        });
        checks.push(if !keep_fail.is_empty() {
            Check {
                name: "keep_alive",
                verdict: Verdict::Fail,
                detail: format!(
                    "{} connections for {} pings ({} reconnects): {}",
                    connections,
                    sent,
                    reconnects,
                    first_examples(&keep_fail)
                ),
            }
        } else if !keep_warn.is_empty() {
            Check {
                name: "keep_alive",
                verdict: Verdict::Warn,
                detail: format!(
                    "{} connections for {} pings ({} reconnects): {}",
                    connections,
                    sent,
                    reconnects,
                    first_examples(&keep_warn)
                ),
            }
        } else if reused == 0 {
            Check {
                name: "keep_alive",
                verdict: Verdict::Skip,
                detail: format!(
                    "no connection carried a second ping ({} connections for {} pings)",
                    connections, sent
                ),
            }
        } else {
            Check {
                name: "keep_alive",
                verdict: Verdict::Pass,
                detail: format!(
                    "{} of {} pings reused a kept-alive connection; {} connections, {} reconnects{}",
                    reused,
                    sent,
                    connections,
                    reconnects,
                    if reconnects > 0 {
                        " (after failed pings)"
                    } else {
                        ""
                    }
                ),
            }
        });
        let unusable = sent - bids - no_bids;
        checks.push(if sent < count {
            Check {
                name: "consistent",
                verdict: Verdict::Fail,
                detail: format!("only {} of {} pings could be sent", sent, count),
            }
        } else if unusable > 0 && bids + no_bids > 0 {
            Check {
                name: "consistent",
                verdict: Verdict::Fail,
                detail: format!(
                    "{} of {} pings got a bid or no-bid; the other {} failed (see above)",
                    bids + no_bids,
                    sent,
                    unusable
                ),
            }
        } else if unusable > 0 {
            Check {
                name: "consistent",
                verdict: Verdict::Fail,
                detail: format!("none of {} pings got a bid or no-bid", sent),
            }
        } else if content_types.len() > 1 {
            Check {
                name: "consistent",
                verdict: Verdict::Warn,
                detail: format!("answers came as {}", content_types.join(" and ")),
            }
        } else {
            Check {
                name: "consistent",
                verdict: Verdict::Pass,
                detail: format!("{} of {} pings got a bid or a no-bid", bids + no_bids, sent),
            }
        });
    }
    let conformant = reached && checks.iter().all(|c| c.verdict != Verdict::Fail);
    Report {
        url: plan.url.clone(),
        buyer: plan.buyer.clone(),
        notes: plan.notes.clone(),
        protocol: if plan.codec.is_some() {
            "adapter"
        } else {
            "native"
        },
        campaign: plan.campaign.id.clone(),
        ping_fields: plan
            .campaign
            .ping_fields
            .iter()
            .filter(|f| plan.lead.lead.contains_key(f.as_str()))
            .filter(|f| !config::is_personal_field(f))
            .cloned()
            .collect(),
        missing_fields: plan.missing_fields.clone(),
        window_ms: plan.window.as_millis() as u64,
        timeout_ms: plan.timeout_ms,
        timeout_in_ping: plan.ping_template().is_none(),
        conformant,
        checks,
        pings: count,
        sent,
        bids,
        no_bids,
        errors,
        invalid,
        timeouts,
        bids_with_id: with_id,
        bid_min: bid_range.and_then(|(lo, _)| dollars_json(lo)),
        bid_max: bid_range.and_then(|(_, hi)| dollars_json(hi)),
        bid_range_cents: bid_range,
        connections,
        reconnects,
        response_us: Percentiles::of(&hist),
    }
}

fn ms(us: u64) -> String {
    format!("{}.{:03} ms", us / 1000, us % 1000)
}

impl Report {
    /// The report for a person.
    pub fn text(&self) -> String {
        let mut s = format!(
            "buyer-check {}\n  {} protocol{}, campaign {}, {} pings, window {} ms ({})\n  ping fields: {}\n",
            self.url,
            self.protocol,
            self.buyer
                .as_deref()
                .map_or(String::new(), |b| {
                    format!(" (configured buyer {})", crate::text::shown(b))
                }),
            self.campaign,
            self.pings,
            self.window_ms,
            if self.timeout_in_ping {
                format!("timeout_ms {} in the ping", self.timeout_ms)
            } else {
                "the adapter's ping template carries no timeout_ms".to_string()
            },
            if self.ping_fields.is_empty() {
                "(none)".to_string()
            } else {
                self.ping_fields.join(", ")
            }
        );
        if !self.missing_fields.is_empty() {
            s.push_str(&format!(
                "  note: no sample value for ping field(s) {}; give them with --lead\n",
                self.missing_fields.join(", ")
            ));
        }
        for n in &self.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        s.push('\n');
        for c in &self.checks {
            s.push_str(&format!(
                "  {}  {:<13} {}\n",
                c.verdict.label(),
                c.name,
                c.detail
            ));
        }
        s.push_str(&format!(
            "\npings {} sent of {}: bids {}, no-bids {}, errors {}, invalid {}, timeouts {}\n",
            self.sent,
            self.pings,
            self.bids,
            self.no_bids,
            self.errors,
            self.invalid,
            self.timeouts
        ));
        if self.sent < self.pings {
            s.push_str(if self.sent == 0 {
                "the rest not sent: the buyer was never reached\n"
            } else {
                "the rest not sent: a connection to the buyer could not be made\n"
            });
        }
        if let Some((lo, hi)) = self.bid_range_cents {
            s.push_str(&format!(
                "bids {} .. {} ({} of {} with a bid_id)\n",
                crate::money::usd(lo),
                crate::money::usd(hi),
                self.bids_with_id,
                self.bids
            ));
        }
        s.push_str(&format!(
            "connections {} (reconnects {})\n",
            self.connections, self.reconnects
        ));
        let p = &self.response_us;
        if p.count > 0 {
            s.push_str(&format!(
                "response time over {} answers: p50 {}  p90 {}  p99 {}  max {}\n",
                p.count,
                ms(p.p50),
                ms(p.p90),
                ms(p.p99),
                ms(p.max)
            ));
        } else {
            s.push_str("response time: no answers\n");
        }
        s.push_str(if self.conformant {
            "result: conformant\n"
        } else {
            "result: NOT conformant\n"
        });
        s
    }
}

#[cfg(test)]
mod tests;
