//! A Microsoft 365 emulator for tests, `make demo` and benchmarks: token endpoints,
//! the Reporting Web Service (OData v2 Atom) and Microsoft Graph message trace (JSON),
//! served over HTTPS on 127.0.0.1 with deterministic data and switchable faults.
//!
//! Test support only: it uses std, rustls and rcgen (a dev-dependency), never the
//! msgtrace library, so the collector is never checked against its own code and the
//! shipped binary does not grow. Must not: listen on anything but 127.0.0.1, run
//! unbounded (every connection thread polls the stop flag; `stop`/drop joins them).
//!
//! # API
//!
//! ```ignore
//! let emu = Emulator::start(EmuOptions { tenants: vec![TenantSpec::new("t1")], ..Default::default() });
//! emu.base_url()                      // "https://127.0.0.1:PORT" — auth, RWS and Graph base
//! emu.ca_pem() / emu.write_ca(path)   // trust anchor for the server certificate (IP SAN 127.0.0.1, DNS localhost)
//! emu.expected(tenant, start, end, now)       // RWS view: Received in [start, end), visible at `now`
//! emu.expected_graph(tenant, start, end, now) // Graph view: whole-second Received in [start, end]
//! emu.known_message(tenant)           // the message with exactly five recipients
//! emu.served_log() / emu.request_log() / emu.graph_requests_in_any_5min() / _for(tenant)
//! emu.set_faults(Faults { rate_429: 0.2, ..Default::default() })
//! emu.revoke_tokens()                 // every token issued so far now answers 401
//! emu.stop()                          // also on drop
//! ```
//!
//! # Endpoints (paths as Microsoft's; matched case-insensitively)
//!
//! HTTP/1.1 with keep-alive; every third response on a connection is chunked, the others
//! carry Content-Length. XML text uses three equivalent escapings (raw UTF-8, decimal and
//! hex character references), varying record by record.
//!
//! - `POST /{tenant}/oauth2/token` (v1; form `grant_type=client_credentials`, `client_id`,
//!   `client_secret`, `resource`) → 200 with `expires_in` as a STRING, as Microsoft's v1
//!   sends it. Wrong secret or unknown client → 401 `invalid_client` (AADSTS7000215 /
//!   AADSTS700016, the client id is not echoed); unknown tenant → 400 `invalid_request`
//!   (AADSTS90002); other grant types → 400 `unsupported_grant_type`.
//! - `POST /{tenant}/oauth2/v2.0/token` (`scope=…/.default`) → `expires_in` as a number;
//!   the token's `aud` is `https://graph.microsoft.com`.
//! - Tokens are JWT-shaped (`header.payload.sig`, base64url) with `aud`, `iss`, `tid`,
//!   `appid`, `roles`, `iat`, `nbf`, `exp`; they live `token_lifetime_secs`. A data request
//!   needs `Authorization: Bearer <token>`, unexpired, not revoked, with the right audience
//!   (a Graph token on RWS or the reverse is 401), else 401 with `WWW-Authenticate`.
//! - `GET /ecp/reportingwebservice/reporting.svc/MessageTrace?$filter=StartDate eq
//!   datetime'S' and EndDate eq datetime'E'[&$skiptoken=N]` → Atom feed. Records with
//!   `S <= Received < E` (start inclusive, end exclusive, compared with the fraction),
//!   newest first, at most `page_size` a page, `Index` = position in the result. The
//!   `next` link (after the entries, `&` written `&amp;`) carries `$skiptoken=<offset>`
//!   and is absolute on odd pages, relative to `xml:base` on even ones. A StartDate more
//!   than 10 days back → 400 OData error. `faults.rws_unavailable` → 400 OData error
//!   "Message trace is not available for this tenant via Reporting Web Service. Use
//!   Get-MessageTraceV2 or the Microsoft Graph API." Missing role
//!   `ReportingWebService.Read.All` → 403.
//! - `GET /v1.0/admin/exchange/tracing/messageTraces?$filter=receivedDateTime ge S and
//!   receivedDateTime le E&$top=N[&$skiptoken=T]` → Graph JSON, whole-second
//!   `receivedDateTime`, both bounds inclusive (`gt`/`lt` also understood), `$top` in
//!   1..=`graph_max_top` (5000; `graph_default_top` = 1000 when absent), newest first,
//!   `@odata.nextLink` absolute with an opaque `$skiptoken`, placed after `value` on
//!   some pages and before it on others; non-ASCII text alternates record by record
//!   between raw UTF-8 and `\uXXXX` escapes (surrogate pairs for emoji). 400 when the window is
//!   over 10 days, starts over 90 days back or ends in the future; 401 "Service
//!   principal-less authentication failed" when the tenant's `service_principal_missing`;
//!   403 without `ExchangeMessageTrace.Read.All`; 429 with `Retry-After` when more than
//!   `graph_limit_per_5min` (100) Graph requests of the tenant fall in the last 5 minutes
//!   (every Graph request counts, throttled and faulted ones included).
//! - `GET /v1.0/admin/exchange/tracing/messageTraces/{id}/getDetailsByRecipient(recipientAddress='{address}')`
//!   (`''` for a quote, percent-encoded) → `value: [{id, messageId, dateTime, event,
//!   action, description, data}]`, 2–6 events derived from (id, address) for every record
//!   served in a Graph page (`expected_details`), 404 for others; counted in the same
//!   budget (`graph_window_secs` long), with the same faults; `details_served` logs each
//!   complete answer, `budget_429s` the 429s for budget (marked `X-Emulator-Budget`).
//!
//! # Data
//!
//! Per tenant, seeded by (seed, tenant id): exactly `records_per_hour` records in every
//! hour from `origin - data_days` on (origin = start time unless given), in messages of
//! 1–5 recipients (one record per recipient; same MessageTraceId, MessageId and Received).
//! Each hour has one message exactly on a 15-minute edge and one on a whole minute (zero
//! fraction; served without a fraction for half of them), one message in five has
//! microsecond precision (6 digits), plus the known five-recipient message 2 h before the origin's hour
//! (`known_message`). A record is visible only from Received + lateness (0–30 min, 30% 0).
//! Data are generated lazily per hour bucket and are identical on every query.
//! Options: `settle_secs` makes `Pending`/`GettingStatus` records turn `Delivered` that
//! long after they become visible (a status changing during the settling time);
//! `lateness: Some((percent, secs))` makes that share of records visible exactly `secs`
//! after Received and the rest at once; `burst: Some((secs, n))` adds one message with
//! `n` recipients at one whole second (120,000 recipients of a distribution list);
//! `records_per_hour: 41_667` is a 1M-records/day flow (generated per hour bucket on
//! demand, so only the hours a query touches cost anything);
//! `graph_extra_field` adds a `"direction"` field unknown to the collector to every Graph
//! record (fields Graph adds later must be kept). Paging is
//! consistent: pages after the first use the visibility instant of the first page of the
//! same query, so late arrivals never shift offsets mid-paging.
//!
//! # Faults
//!
//! `Faults { rate_429, rate_503, rate_cut, .. }` apply to data requests (after a valid
//! token). The decision for the n-th request of a given URL is a hash of (seed, URL, n),
//! so it does not depend on thread timing. No URL is faulted more than
//! `max_consecutive` (default 2) times in a row: a collector with ≥ 2 retries always
//! gets through. A cut response announces the full Content-Length, sends the body up to
//! the middle of an entry and drops the TCP connection without TLS close_notify.
//! `rate_token_503` does the same for token requests (503). `set_faults` switches them
//! at runtime. Other fault-like behaviours are options: `token_lifetime_secs` (short-lived
//! tokens), `revoke_tokens()` (401 on the next data request), a tenant's
//! `service_principal_missing`, a tenant's `unavailable` (every data request of that
//! tenant answers 503, without the `max_consecutive` bound), a tenant's `slow_ms` (its
//! data requests are answered that late), `echo_token_form` / `echo_auth_header` (error
//! answers that echo the posted form / the request headers back, secrets included, with
//! control characters: what a hostile or debugging endpoint does), `foreign_origin`
//! (next links to another origin, through `xml:base` or absolute), `roles` without the needed permission (403), and the
//! 10-day RWS / 90-day Graph limits, which are always on.

#![allow(dead_code, unused_imports)]

mod data;
mod detail;
mod http;
mod routes;

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use data::{graph_status, DetailEvent};
use data::{Flow, Rec, KNOWN_MSG};

/// Required app roles.
pub const ROLE_RWS: &str = "ReportingWebService.Read.All";
pub const ROLE_GRAPH: &str = "ExchangeMessageTrace.Read.All";

/// One emulated tenant and its app registration.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Roles put in issued tokens.
    pub roles: Vec<String>,
    /// Graph answers 401 "Service principal-less authentication failed".
    pub service_principal_missing: bool,
    /// Every data request of this tenant answers 503 (a 503 storm of one tenant, not
    /// bounded by `max_consecutive`; the global `Faults` stay as they are for the others).
    pub unavailable: bool,
    /// Every data request of this tenant is answered this many milliseconds late (a
    /// slow tenant; the wait ends early when the emulator stops).
    pub slow_ms: u64,
    /// RWS: every next link names the second page (`$skiptoken=page_size`), so the
    /// second page links to itself — a next-link loop.
    pub repeat_next: bool,
    /// RWS: the first request with a `$skiptoken` answers this status (an expired
    /// skiptoken); later ones are served.
    pub next_fail_once: Option<u16>,
    /// RWS data answers of this tenant are an endless or a slowloris body.
    pub body: BodyFault,
    /// RWS: pages after the first hold a broken entry after their first two entries.
    pub malformed_next_pages: bool,
    /// RWS: next links carry a `pad` parameter of this many bytes (a 900 KB link).
    pub next_pad: usize,
    /// RWS entries per page for this tenant (`EmuOptions::page_size` when `None`).
    pub page_size: Option<usize>,
    /// RWS: a comment of this many bytes between the feed's head and its first entry.
    pub comment_bytes: usize,
}

/// A hostile response body (issue 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFault {
    #[default]
    None,
    /// A feed that never ends (chunked, junk comments after the head), as fast as the
    /// client reads; bounded by `MAX_FAULT_BODY_SECS`.
    Endless,
    /// The page one byte at a time, every `ms` milliseconds.
    Slowloris { ms: u64 },
}

/// A hostile body is written for at most this long (tests stay bounded).
pub const MAX_FAULT_BODY_SECS: u64 = 60;

impl TenantSpec {
    /// A tenant with client id `client-<id>`, secret `secret-<id>` and both roles.
    pub fn new(tenant_id: &str) -> TenantSpec {
        TenantSpec {
            tenant_id: tenant_id.to_string(),
            client_id: format!("client-{tenant_id}"),
            client_secret: format!("secret-{tenant_id}"),
            roles: vec![ROLE_RWS.to_string(), ROLE_GRAPH.to_string()],
            service_principal_missing: false,
            unavailable: false,
            slow_ms: 0,
            repeat_next: false,
            next_fail_once: None,
            body: BodyFault::None,
            malformed_next_pages: false,
            next_pad: 0,
            page_size: None,
            comment_bytes: 0,
        }
    }
    pub fn with_secret(mut self, secret: &str) -> TenantSpec {
        self.client_secret = secret.to_string();
        self
    }
}

/// Fault injection switches (see the module docs).
#[derive(Debug, Clone)]
pub struct Faults {
    /// Fraction of data requests answered 429 with `Retry-After: retry_after_secs`.
    pub rate_429: f64,
    /// Fraction answered 503.
    pub rate_503: f64,
    /// Fraction whose body is cut mid-entry, the connection then dropped.
    pub rate_cut: f64,
    /// RWS answers the retirement error for every query.
    pub rws_unavailable: bool,
    /// Most times in a row the same URL is faulted.
    pub max_consecutive: u32,
    /// `Retry-After` of injected 429s.
    pub retry_after_secs: u64,
    /// Fraction of token requests answered 503 (same bound on consecutive faults).
    pub rate_token_503: f64,
    /// Token requests answer 401 `invalid_client` whose `error_description` echoes the
    /// posted form (client secret included), with `\r\n` and an ANSI escape in it.
    pub echo_token_form: bool,
    /// Data requests (after a valid token) answer 400 `text/plain` echoing the request
    /// headers (the `Authorization: Bearer …` line included), with an ANSI escape.
    pub echo_auth_header: bool,
    /// Next links point to this origin (`https://127.0.0.1:PORT`) instead of the
    /// emulator's own: RWS through `xml:base` with a relative `next`, Graph with an
    /// absolute `@odata.nextLink`.
    pub foreign_origin: Option<String>,
    /// Token requests answer 200 with a JSON body of this many bytes (over any limit).
    pub token_body_bytes: Option<usize>,
    /// Data requests answer 302 with this `Location`.
    pub redirect_to: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rate_429: 0.0,
            rate_503: 0.0,
            rate_cut: 0.0,
            rws_unavailable: false,
            max_consecutive: 2,
            retry_after_secs: 1,
            rate_token_503: 0.0,
            echo_token_form: false,
            echo_auth_header: false,
            foreign_origin: None,
            token_body_bytes: None,
            redirect_to: None,
        }
    }
}

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct EmuOptions {
    pub tenants: Vec<TenantSpec>,
    /// 0 picks a free port.
    pub port: u16,
    /// RWS entries per page.
    pub page_size: usize,
    /// Largest Graph `$top`.
    pub graph_max_top: usize,
    /// Graph page size when no `$top` is given.
    pub graph_default_top: usize,
    /// Graph requests per tenant per 5 minutes before 429.
    pub graph_limit_per_5min: usize,
    /// The span of that budget in seconds (300; tests shorten it, with the collector's
    /// `MSGTRACE_PACER_SPAN_SECS`). `graph_requests_in_any_5min` counts over it too.
    pub graph_window_secs: u64,
    /// Use `https://` namespace URIs for `d:`/`m:` (Microsoft's examples differ).
    pub namespaces_https: bool,
    pub token_lifetime_secs: u64,
    pub records_per_hour: u32,
    /// How far back data exist, from `origin`.
    pub data_days: u32,
    /// Extra ASCII bytes appended to every subject (for 10-MB pages).
    pub subject_pad: usize,
    pub seed: u64,
    /// Data anchor (epoch secs); `None` = the start time.
    pub origin: Option<i64>,
    /// Keep `served_log` (turn off for long benchmarks).
    pub log_served: bool,
    /// `Pending`/`GettingStatus` records turn `Delivered` this long after they become
    /// visible; `None` (default) keeps every status fixed.
    pub settle_secs: Option<u32>,
    /// `(percent, secs)`: that share of records becomes visible exactly `secs` after
    /// its Received, the others at once; `None` (default): 0–30 minutes at random.
    pub lateness: Option<(u8, u32)>,
    /// `(secs, recipients)`: one message at that whole second with that many recipients
    /// (`member{n}@dl.contoso.example`), visible at once — a burst in one second.
    pub burst: Option<(i64, u32)>,
    /// Graph records carry one field the collector does not know, `"direction"`
    /// (`"inbound"`/`"outbound"`, see `ExpectedRecord::direction`), after `toIP`.
    pub graph_extra_field: bool,
    pub faults: Faults,
}

impl Default for EmuOptions {
    fn default() -> Self {
        EmuOptions {
            tenants: vec![TenantSpec::new("tenant-1")],
            port: 0,
            page_size: 2000,
            graph_max_top: 5000,
            graph_default_top: 1000,
            graph_limit_per_5min: 100,
            graph_window_secs: 300,
            namespaces_https: false,
            token_lifetime_secs: 3599,
            records_per_hour: 60,
            data_days: 12,
            subject_pad: 0,
            seed: 1,
            origin: None,
            log_served: true,
            settle_secs: None,
            lateness: None,
            burst: None,
            graph_extra_field: false,
            faults: Faults::default(),
        }
    }
}

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct RequestEntry {
    /// Tenant id (from the token path or the bearer token); empty when unknown.
    pub tenant: String,
    pub method: String,
    pub path: String,
    /// Raw query string.
    pub query: String,
    pub at: Instant,
    /// Seconds since the emulator started.
    pub at_secs: f64,
    pub status: u16,
    /// Which API: "token", "rws", "graph" or "other".
    pub api: &'static str,
    /// The body was cut mid-entry and the connection dropped (status says 200).
    pub cut: bool,
    /// A 429 for the tenant's exceeded budget (not an injected fault).
    pub budget: bool,
}

/// One record as the emulator serves it, decoded (what a collector must deliver).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedRecord {
    pub tenant: String,
    pub organization: String,
    /// `None` for `m:null="true"` / JSON null.
    pub message_id: Option<String>,
    /// RWS `Received` exactly as served (no zone; 7 fractional digits, 6 for one message
    /// in five, none for some whole seconds).
    pub received: String,
    /// Graph `receivedDateTime` as served (`…Z`, whole seconds).
    pub received_graph: String,
    pub received_secs: i64,
    pub received_nanos: u32,
    pub sender: String,
    pub recipient: String,
    pub subject: String,
    /// RWS form (`FilteredAsSpam`); Graph sends `graph_status(status)`.
    pub status: String,
    pub to_ip: Option<String>,
    pub from_ip: String,
    pub size: u32,
    pub message_trace_id: String,
    /// Epoch secs from which the record is visible.
    pub visible_at: i64,
    /// Graph's extra `direction` field (served only with `graph_extra_field`).
    pub direction: String,
}

impl ExpectedRecord {
    /// Identity: (MessageTraceId, RecipientAddress).
    pub fn key(&self) -> (String, String) {
        (self.message_trace_id.clone(), self.recipient.clone())
    }

    /// `received` as RFC 3339 UTC: the served text with `Z` appended
    /// (`2026-11-24T10:00:00.1234567Z`, or `…:00Z` when served without a fraction).
    pub fn received_rfc3339(&self) -> String {
        format!("{}Z", self.received)
    }

    /// Graph's status (`filteredAsSpam`).
    pub fn graph_status(&self) -> String {
        graph_status(&self.status)
    }
}

/// The known five-recipient message of a tenant.
#[derive(Debug, Clone)]
pub struct KnownMessage {
    pub received_secs: i64,
    pub message_trace_id: String,
    pub recipients: Vec<String>,
}

pub(crate) struct TokenInfo {
    tenant: usize,
    expires: Instant,
    roles: Vec<String>,
    graph: bool,
    generation: u64,
}

#[derive(Default)]
pub(crate) struct State {
    tokens: HashMap<String, TokenInfo>,
    token_serial: u64,
    generation: u64,
    served: Vec<(String, String, String)>,
    requests: Vec<RequestEntry>,
    /// URL → (requests seen, current run of faults).
    fault_counts: HashMap<String, (u64, u32)>,
    /// Tenant index → Graph request instants within the last 5 minutes.
    graph_times: HashMap<usize, VecDeque<Instant>>,
    /// (tenant index, trace id, lower-cased recipient) → the record, for every record
    /// served in a complete Graph page: what `getDetailsByRecipient` answers for.
    graph_served: HashMap<(usize, String, String), (Rec, &'static str)>,
    /// (tenant, trace id, recipient as asked) of every complete 200 detail answer.
    details_served: Vec<(String, String, String)>,
    /// (tenant, api, filter) → visibility instant of the query's first page.
    snapshots: HashMap<(usize, &'static str, String), i64>,
    /// Tenants whose `next_fail_once` was already answered.
    next_failed: std::collections::HashSet<usize>,
}

pub(crate) struct Shared {
    opts: EmuOptions,
    faults: Mutex<Faults>,
    flows: Vec<Flow>,
    state: Mutex<State>,
    started: Instant,
    stop: AtomicBool,
    port: u16,
    /// The last query's records (tenant, from, to, visibility instant) → newest first:
    /// the pages of one query reuse them instead of generating and sorting every hour
    /// of the window again (a 1M-records/day flow or a 120,000-recipient burst stays
    /// cheap to page through).
    last_query: Mutex<Option<(QueryKey, Arc<Vec<Rec>>)>>,
}

/// (tenant index, from, to, visibility instant) of a records query.
type QueryKey = (usize, i64, i64, i64);

impl Shared {
    /// Records of tenant `ti` with `from <= secs < to` visible at `snap`, newest first.
    pub(crate) fn records(
        &self,
        ti: usize,
        flow: &Flow,
        from: i64,
        to: i64,
        snap: i64,
    ) -> Arc<Vec<Rec>> {
        let key = (ti, from, to, snap);
        let mut last = self.last_query.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, recs)) = last.as_ref() {
            if *k == key {
                return Arc::clone(recs);
            }
        }
        let recs = Arc::new(flow.records(from, to, snap));
        *last = Some((key, Arc::clone(&recs)));
        recs
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    fn tenant_index(&self, id: &str) -> Option<usize> {
        self.opts.tenants.iter().position(|t| t.tenant_id == id)
    }
}

/// Wall clock, epoch seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A running emulator; stops on `stop()` or drop.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    accept: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Bind 127.0.0.1:`opts.port`, generate certificates, start serving.
    pub fn start(opts: EmuOptions) -> Emulator {
        let tls = http::make_tls();
        let listener =
            TcpListener::bind(("127.0.0.1", opts.port)).expect("emulator: bind 127.0.0.1");
        let addr = listener.local_addr().expect("emulator: local addr");
        let origin = opts.origin.unwrap_or_else(now_secs);
        let flows = opts
            .tenants
            .iter()
            .map(|t| {
                let mut f = Flow::new(
                    &t.tenant_id,
                    opts.seed,
                    origin,
                    opts.data_days,
                    opts.records_per_hour,
                    opts.subject_pad,
                );
                f.settle_secs = opts.settle_secs;
                f.lateness = opts.lateness;
                f.burst = opts.burst;
                f
            })
            .collect();
        let shared = Arc::new(Shared {
            faults: Mutex::new(opts.faults.clone()),
            opts,
            flows,
            state: Mutex::new(State::default()),
            started: Instant::now(),
            stop: AtomicBool::new(false),
            port: addr.port(),
            last_query: Mutex::new(None),
        });
        let sh = Arc::clone(&shared);
        let cfg = Arc::clone(&tls.config);
        let accept = std::thread::Builder::new()
            .name("m365emu-accept".into())
            .spawn(move || http::accept_loop(sh, listener, cfg))
            .expect("emulator: spawn");
        Emulator {
            shared,
            addr,
            ca_pem: tls.ca_pem,
            accept: Some(accept),
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// PEM of the CA that signed the server certificate.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Write the CA PEM to `path`.
    pub fn write_ca(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, &self.ca_pem)
    }

    pub fn options(&self) -> &EmuOptions {
        &self.shared.opts
    }

    /// Switch faults at runtime.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    /// Every token issued so far answers 401 from now on.
    pub fn revoke_tokens(&self) {
        let mut st = self.shared.lock();
        st.generation += 1;
    }

    fn flow(&self, tenant_id: &str) -> Option<&Flow> {
        let i = self.shared.tenant_index(tenant_id)?;
        self.shared.flows.get(i)
    }

    fn expect(&self, tenant_id: &str, recs: Vec<Rec>, now: i64) -> Vec<ExpectedRecord> {
        let Some(flow) = self.flow(tenant_id) else {
            return Vec::new();
        };
        let mut out: Vec<ExpectedRecord> = recs
            .iter()
            .map(|r| {
                let f = flow.render(r, now);
                ExpectedRecord {
                    tenant: tenant_id.to_string(),
                    organization: f.organization,
                    message_id: f.message_id,
                    received: f.received_rws,
                    received_graph: f.received_graph,
                    received_secs: r.secs,
                    received_nanos: r.nanos,
                    sender: f.sender,
                    recipient: f.recipient,
                    subject: f.subject,
                    status: f.status.to_string(),
                    to_ip: f.to_ip,
                    from_ip: f.from_ip,
                    size: f.size,
                    message_trace_id: f.trace_id,
                    visible_at: r.visible_at(),
                    direction: f.direction.to_string(),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (
                a.received_secs,
                a.received_nanos,
                &a.message_trace_id,
                &a.recipient,
            )
                .cmp(&(
                    b.received_secs,
                    b.received_nanos,
                    &b.message_trace_id,
                    &b.recipient,
                ))
        });
        out
    }

    /// Every record with Received in [start, end) visible at `now` (the RWS view),
    /// oldest first.
    pub fn expected(&self, tenant_id: &str, start: i64, end: i64, now: i64) -> Vec<ExpectedRecord> {
        let recs = self
            .flow(tenant_id)
            .map(|f| f.records(start, end, now))
            .unwrap_or_default();
        self.expect(tenant_id, recs, now)
    }

    /// Every record with whole-second Received in [start, end] visible at `now` (the
    /// Graph view, both bounds inclusive), oldest first.
    pub fn expected_graph(
        &self,
        tenant_id: &str,
        start: i64,
        end: i64,
        now: i64,
    ) -> Vec<ExpectedRecord> {
        let recs = self
            .flow(tenant_id)
            .map(|f| f.records(start, end.saturating_add(1), now))
            .unwrap_or_default();
        self.expect(tenant_id, recs, now)
    }

    /// The message with exactly five recipients (2 h before the origin's hour).
    pub fn known_message(&self, tenant_id: &str) -> Option<KnownMessage> {
        let flow = self.flow(tenant_id)?;
        let (secs, nanos) = flow.known_at;
        let recs: Vec<Rec> = (0..5u32)
            .map(|rcpt| Rec {
                secs,
                nanos,
                msg: KNOWN_MSG,
                rcpt,
                lateness: 0,
            })
            .collect();
        let fields: Vec<_> = recs.iter().map(|r| flow.render(r, now_secs())).collect();
        Some(KnownMessage {
            received_secs: secs,
            message_trace_id: fields.first()?.trace_id.clone(),
            recipients: fields.into_iter().map(|f| f.recipient).collect(),
        })
    }

    /// (tenant, MessageTraceId, RecipientAddress) of every record served in a complete
    /// 200 page, in serving order (repeats included).
    pub fn served_log(&self) -> Vec<(String, String, String)> {
        self.shared.lock().served.clone()
    }

    /// (tenant, MessageTraceId, recipient) of every complete 200 `getDetailsByRecipient`
    /// answer, in serving order (repeats included).
    pub fn details_served(&self) -> Vec<(String, String, String)> {
        self.shared.lock().details_served.clone()
    }

    /// The detail events served for a record (`None`: never served in a Graph page).
    pub fn expected_details(
        &self,
        tenant_id: &str,
        trace_id: &str,
        recipient: &str,
    ) -> Option<Vec<DetailEvent>> {
        let ti = self.shared.tenant_index(tenant_id)?;
        let st = self.shared.lock();
        let (rec, status) =
            st.graph_served
                .get(&(ti, trace_id.to_string(), recipient.to_lowercase()))?;
        Some(data::detail_events(trace_id, recipient, rec.secs, status))
    }

    /// Graph requests answered 429 because the tenant's budget was exceeded (not the
    /// injected faults).
    pub fn budget_429s(&self) -> usize {
        self.request_log()
            .iter()
            .filter(|e| e.api == "graph" && e.status == 429 && e.budget)
            .count()
    }

    pub fn request_log(&self) -> Vec<RequestEntry> {
        self.shared.lock().requests.clone()
    }

    /// Most Graph data requests of one tenant that fell in any sliding 5 minutes
    /// (maximum over tenants).
    pub fn graph_requests_in_any_5min(&self) -> usize {
        self.graph_max_5min(None)
    }

    /// Most Graph data requests of `tenant_id` in any sliding 5 minutes.
    pub fn graph_requests_in_any_5min_for(&self, tenant_id: &str) -> usize {
        self.graph_max_5min(Some(tenant_id))
    }

    fn graph_max_5min(&self, only: Option<&str>) -> usize {
        let log = self.request_log();
        let mut by_tenant: HashMap<&str, Vec<Instant>> = HashMap::new();
        for e in log
            .iter()
            .filter(|e| e.api == "graph" && only.is_none_or(|t| t == e.tenant))
        {
            by_tenant.entry(e.tenant.as_str()).or_default().push(e.at);
        }
        let window = Duration::from_secs(self.shared.opts.graph_window_secs);
        let mut best = 0;
        for times in by_tenant.values_mut() {
            times.sort();
            let mut lo = 0;
            for hi in 0..times.len() {
                while times[hi].duration_since(times[lo]) >= window {
                    lo += 1;
                }
                best = best.max(hi - lo + 1);
            }
        }
        best
    }

    /// Stop serving and join every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}
