//! The emulator's endpoints: token (v1 and v2), Reporting Web Service MessageTrace
//! (OData v2 Atom) and Graph messageTraces (JSON), with auth checks, validation, the
//! Graph 5-minute budget and fault injection.
//!
//! Owns: what each endpoint answers and the request/served logs. Must not: touch
//! sockets — it maps a parsed `Request` to a `Response` (see `http.rs`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::data::{
    b64url, fmt_7, fmt_secs, fmt_z, graph_status, hash2, hash_str, json_str, parse_datetime,
    pct_encode, unit, xml_text, Rec, DAY,
};
use super::http::{parse_query, Request, Response};
use super::{now_secs, RequestEntry, Shared, TokenInfo, ROLE_GRAPH, ROLE_RWS};

const RWS_PATH: &str = "/ecp/reportingwebservice/reporting.svc/messagetrace";
const GRAPH_PATH: &str = "/v1.0/admin/exchange/tracing/messagetraces";
/// RWS refuses a StartDate further back than this.
const RWS_MAX_AGE: i64 = 10 * DAY;
/// Graph limits: window length, start age.
const GRAPH_MAX_WINDOW: i64 = 10 * DAY;
const GRAPH_MAX_AGE: i64 = 90 * DAY;
/// Prefix of the emulator's Graph `$skiptoken` (opaque to clients, an offset inside).
const SKIP_PREFIX: &str = "RU1VX";

pub const RETIRED: &str = "Message trace is not available for this tenant via Reporting Web Service. Use Get-MessageTraceV2 or the Microsoft Graph API.";
pub const SP_MISSING: &str = "Service principal-less authentication failed";

/// Route one request and log it.
pub fn handle(sh: &Shared, req: &Request) -> Response {
    let lower = req.path.to_ascii_lowercase();
    let (api, tenant, resp) = if lower == RWS_PATH {
        let (t, r) = rws(sh, req);
        ("rws", t, r)
    } else if lower == GRAPH_PATH || lower.starts_with(&format!("{GRAPH_PATH}/")) {
        let (t, r) = graph(sh, req);
        ("graph", t, r)
    } else if let Some((tenant, v2)) = token_path(&req.path) {
        let r = token(sh, req, tenant, v2);
        ("token", tenant.to_string(), r)
    } else {
        (
            "other",
            String::new(),
            Response::new(404, "text/plain", "not found\n"),
        )
    };
    if api == "rws" || api == "graph" {
        slow_down(sh, &tenant);
    }
    let at = Instant::now();
    let mut st = sh.lock();
    st.requests.push(RequestEntry {
        tenant,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.raw_query.clone(),
        at,
        at_secs: at.duration_since(sh.started).as_secs_f64(),
        status: resp.status,
        api,
        cut: resp.cut_at.is_some(),
        budget: resp.status == 429
            && resp
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("x-emulator-budget")),
    });
    resp
}

/// `/{tenant}/oauth2/token` → (tenant, false); `/{tenant}/oauth2/v2.0/token` → (tenant, true).
fn token_path(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix('/')?;
    let (tenant, tail) = rest.split_once('/')?;
    match tail.to_ascii_lowercase().as_str() {
        "oauth2/token" => Some((tenant, false)),
        "oauth2/v2.0/token" => Some((tenant, true)),
        _ => None,
    }
}

pub(super) fn json(status: u16, body: String) -> Response {
    Response::new(status, "application/json; charset=utf-8", body)
}

fn aad_error(status: u16, error: &str, code: u32, text: &str) -> Response {
    let body = format!(
        "{{\"error\":\"{error}\",\"error_description\":\"AADSTS{code}: {text}\\r\\nTrace ID: 0c6f3e2a-9d1b-4c55-8e1a-2b7f00000000\\r\\nCorrelation ID: 5b1d9e7c-0000-4000-8000-000000000000\\r\\nTimestamp: {} \",\"error_codes\":[{code}],\"timestamp\":\"{}\",\"trace_id\":\"0c6f3e2a-9d1b-4c55-8e1a-2b7f00000000\",\"correlation_id\":\"5b1d9e7c-0000-4000-8000-000000000000\"}}",
        fmt_z(now_secs()).replace('T', " "),
        fmt_z(now_secs()).replace('T', " ")
    );
    json(status, body)
}

fn token(sh: &Shared, req: &Request, tenant: &str, v2: bool) -> Response {
    if req.method != "POST" {
        return aad_error(
            405,
            "invalid_request",
            900_561,
            "The endpoint only accepts POST requests.",
        );
    }
    let faults = sh.faults();
    if let Some(n) = faults.token_body_bytes {
        let mut body = String::with_capacity(n + 64);
        body.push_str("{\"token_type\":\"Bearer\",\"expires_in\":3599,\"pad\":\"");
        while body.len() < n {
            body.push('x');
        }
        body.push_str("\",\"access_token\":\"never-read\"}");
        return json(200, body);
    }
    if faults.rate_token_503 > 0.0 {
        let key = format!(
            "token {} {}",
            req.path,
            hash_str(&String::from_utf8_lossy(&req.body))
        );
        if decide(
            sh,
            &key,
            [0.0, faults.rate_token_503, 0.0],
            faults.max_consecutive,
        ) != Fault::None
        {
            return Response::new(503, "text/html", "<h1>Service Unavailable</h1>\n");
        }
    }
    let Some(ti) = sh.tenant_index(tenant) else {
        return aad_error(
            400,
            "invalid_request",
            90_002,
            "Tenant not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.",
        );
    };
    let Some(spec) = sh.opts.tenants.get(ti) else {
        return aad_error(500, "server_error", 0, "internal");
    };
    if faults.echo_token_form {
        let mut body = String::from("{\"error\":\"invalid_client\",\"error_description\":");
        let text = format!(
            "\u{1b}[31mbad request\ryou sent: {}\r\nTrace ID: 0c6f3e2a",
            String::from_utf8_lossy(&req.body)
        );
        super::data::json_str(&text, 0, &mut body);
        body.push('}');
        return json(401, body);
    }
    let form = parse_query(&String::from_utf8_lossy(&req.body));
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("client_credentials") {
        return aad_error(
            400,
            "unsupported_grant_type",
            70_003,
            "The app requested an unsupported grant type.",
        );
    }
    if get("client_id") != Some(spec.client_id.as_str()) {
        return aad_error(
            401,
            "invalid_client",
            700_016,
            "Application with the given identifier was not found in the directory. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
        );
    }
    if get("client_secret") != Some(spec.client_secret.as_str()) {
        return aad_error(
            401,
            "invalid_client",
            7_000_215,
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        );
    }
    let aud = if v2 {
        match get("scope").and_then(|s| s.strip_suffix("/.default")) {
            Some(a) if !a.is_empty() => a.to_string(),
            _ => {
                return aad_error(
                    400,
                    "invalid_scope",
                    1_002_012,
                    "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
                )
            }
        }
    } else {
        match get("resource") {
            Some(r) if !r.is_empty() => r.to_string(),
            _ => {
                return aad_error(
                    400,
                    "invalid_resource",
                    500_011,
                    "The resource principal was not found in the tenant.",
                )
            }
        }
    };
    let life = sh.opts.token_lifetime_secs;
    let iat = now_secs();
    let exp = iat + life as i64;
    let mut st = sh.lock();
    st.token_serial += 1;
    let serial = st.token_serial;
    let mut roles = String::new();
    for (i, r) in spec.roles.iter().enumerate() {
        if i > 0 {
            roles.push(',');
        }
        json_str(r, 0, &mut roles);
    }
    let mut aud_json = String::new();
    json_str(&aud, 0, &mut aud_json);
    let header = b64url(br#"{"typ":"JWT","alg":"RS256","x5t":"emu","kid":"emu"}"#);
    let payload = format!(
        "{{\"aud\":{aud_json},\"iss\":\"https://sts.windows.net/{tid}/\",\"iat\":{iat},\"nbf\":{iat},\"exp\":{exp},\"appid\":\"{cid}\",\"roles\":[{roles}],\"tid\":\"{tid}\",\"uti\":\"emu{serial}\",\"ver\":\"{ver}\"}}",
        tid = spec.tenant_id,
        cid = spec.client_id,
        ver = if v2 { "2.0" } else { "1.0" },
    );
    let mut sig = Vec::with_capacity(64);
    for i in 0..8u64 {
        sig.extend_from_slice(&hash2(sh.opts.seed ^ serial, i).to_le_bytes());
    }
    let token = format!("{header}.{}.{}", b64url(payload.as_bytes()), b64url(&sig));
    let generation = st.generation;
    st.tokens.insert(
        token.clone(),
        TokenInfo {
            tenant: ti,
            expires: Instant::now() + Duration::from_secs(life),
            roles: spec.roles.clone(),
            graph: v2,
            generation,
        },
    );
    drop(st);
    if v2 {
        json(
            200,
            format!(
                "{{\"token_type\":\"Bearer\",\"expires_in\":{life},\"ext_expires_in\":{life},\"access_token\":\"{token}\"}}"
            ),
        )
    } else {
        json(
            200,
            format!(
                "{{\"token_type\":\"Bearer\",\"expires_in\":\"{life}\",\"ext_expires_in\":\"{life}\",\"expires_on\":\"{exp}\",\"not_before\":\"{iat}\",\"resource\":{aud_json},\"access_token\":\"{token}\"}}"
            ),
        )
    }
}

/// The token of a data request: (tenant index, roles, is a Graph token).
fn bearer(sh: &Shared, req: &Request) -> Option<(usize, Vec<String>, bool)> {
    let h = req.header("authorization")?;
    let (scheme, tok) = h.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let st = sh.lock();
    let info = st.tokens.get(tok.trim())?;
    if info.expires <= Instant::now() || info.generation != st.generation {
        return None;
    }
    Some((info.tenant, info.roles.clone(), info.graph))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    None,
    TooMany,
    Unavailable,
    Cut,
}

/// The fault for the next request of `key`: a hash of (seed, key, n), never more than
/// `max_consecutive` faults in a row for one key.
pub(super) fn decide(sh: &Shared, key: &str, rates: [f64; 3], max_consecutive: u32) -> Fault {
    let mut st = sh.lock();
    let e = st.fault_counts.entry(key.to_string()).or_insert((0, 0));
    let n = e.0;
    e.0 += 1;
    if e.1 >= max_consecutive {
        e.1 = 0;
        return Fault::None;
    }
    let u = unit(hash2(sh.opts.seed ^ 0x00FA_0175, hash2(hash_str(key), n)));
    let [r429, r503, rcut] = rates;
    let f = if u < r429 {
        Fault::TooMany
    } else if u < r429 + r503 {
        Fault::Unavailable
    } else if u < r429 + r503 + rcut {
        Fault::Cut
    } else {
        Fault::None
    };
    e.1 = if f == Fault::None { 0 } else { e.1 + 1 };
    f
}

/// A slow tenant (`TenantSpec::slow_ms`): wait before answering, in small steps so
/// that stopping the emulator is not held up.
fn slow_down(sh: &Shared, tenant: &str) {
    let ms = sh
        .tenant_index(tenant)
        .and_then(|i| sh.opts.tenants.get(i))
        .map_or(0, |t| t.slow_ms);
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until && !sh.stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The tenant is in a 503 storm (`TenantSpec::unavailable`).
pub(super) fn storm(sh: &Shared, ti: usize) -> bool {
    sh.opts.tenants.get(ti).is_some_and(|t| t.unavailable)
}

/// Cut point: the middle of the middle entry (or of the body).
pub(super) fn cut_point(body: &[u8], marker: &[u8]) -> usize {
    let starts: Vec<usize> = body
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(i, _)| i)
        .collect();
    match starts.get(starts.len() / 2) {
        Some(&s) => {
            let end = starts
                .get(starts.len() / 2 + 1)
                .copied()
                .unwrap_or(body.len());
            s + (end - s) / 2
        }
        None => body.len() / 2,
    }
}

fn host(sh: &Shared, req: &Request) -> String {
    match req.header("host") {
        Some(h)
            if !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".:-[]".contains(&b)) =>
        {
            h.to_string()
        }
        _ => format!("127.0.0.1:{}", sh.port),
    }
}

fn tenant_name(sh: &Shared, ti: usize) -> String {
    sh.opts
        .tenants
        .get(ti)
        .map(|t| t.tenant_id.clone())
        .unwrap_or_default()
}

/// The visibility instant for a page: the first page's for later pages of one query.
fn snapshot(sh: &Shared, ti: usize, api: &'static str, key: String, first: bool) -> i64 {
    let now = now_secs();
    let mut st = sh.lock();
    if first {
        st.snapshots.insert((ti, api, key), now);
        now
    } else {
        *st.snapshots.entry((ti, api, key)).or_insert(now)
    }
}

fn log_served(sh: &Shared, ti: usize, served: Vec<(String, String)>) {
    if !sh.opts.log_served {
        return;
    }
    let t = tenant_name(sh, ti);
    let mut st = sh.lock();
    st.served
        .extend(served.into_iter().map(|(id, r)| (t.clone(), id, r)));
}

// ---------------------------------------------------------------- RWS

fn odata_error(status: u16, code: &str, message: &str) -> Response {
    let mut m = String::new();
    xml_text(message, 0, &mut m);
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?>\r\n<error xmlns=\"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata\">\r\n  <code>{code}</code>\r\n  <message xml:lang=\"en-US\">{m}</message>\r\n</error>"
    );
    Response::new(status, "application/xml;charset=utf-8", body)
}

/// `name eq datetime'…'` in an RWS filter.
fn filter_datetime(filter: &str, name: &str) -> Option<(i64, u32)> {
    let lower = filter.to_ascii_lowercase();
    let i = lower.find(name)?;
    let rest = filter.get(i + name.len()..)?.trim_start();
    let rest = rest
        .strip_prefix("eq")
        .or_else(|| rest.strip_prefix("EQ"))
        .or_else(|| rest.strip_prefix("Eq"))?
        .trim_start();
    let rest = if rest.len() >= 8 && rest.get(..8)?.eq_ignore_ascii_case("datetime") {
        rest.get(8..)?
    } else {
        rest
    };
    let q = rest.chars().next()?;
    if q != '\'' && q != '"' {
        return None;
    }
    let inner = rest.get(1..)?;
    let end = inner.find(q)?;
    parse_datetime(inner.get(..end)?)
}

fn fmt_echo((s, n): (i64, u32)) -> String {
    if n == 0 {
        fmt_secs(s)
    } else {
        fmt_7(s, n)
    }
}

fn rws(sh: &Shared, req: &Request) -> (String, Response) {
    if req.method != "GET" {
        return (String::new(), odata_error(405, "", "Method not allowed."));
    }
    let Some((ti, roles, _)) = bearer(sh, req).filter(|b| !b.2) else {
        return (
            String::new(),
            Response::new(401, "text/html", "<h1>401 - Unauthorized: Access is denied due to invalid credentials.</h1>\n")
                .with_header(
                    "WWW-Authenticate",
                    "Bearer authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"invalid_token\"",
                ),
        );
    };
    let tenant = tenant_name(sh, ti);
    if !roles.iter().any(|r| r == ROLE_RWS) {
        return (
            tenant,
            odata_error(
                403,
                "",
                "The user or application does not have the role ReportingWebService.Read.All required to access this report.",
            ),
        );
    }
    let faults = sh.faults();
    if let Some(to) = &faults.redirect_to {
        return (
            tenant,
            Response::new(302, "text/html", "<h1>Object moved</h1>\n").with_header("Location", to),
        );
    }
    if faults.echo_auth_header {
        let mut text = String::from("\u{1b}[2Jrequest refused, you sent:\r\n");
        for (k, v) in &req.headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        return (tenant, Response::new(400, "text/plain", text));
    }
    if faults.rws_unavailable {
        return (tenant, odata_error(400, "MessageTraceUnavailable", RETIRED));
    }
    let Some(filter) = req.param("$filter") else {
        return (
            tenant,
            odata_error(
                400,
                "",
                "Invalid query: $filter with StartDate and EndDate is required.",
            ),
        );
    };
    let (Some(start), Some(end)) = (
        filter_datetime(filter, "startdate"),
        filter_datetime(filter, "enddate"),
    ) else {
        return (
            tenant,
            odata_error(
                400,
                "",
                "Invalid filter: expected StartDate eq datetime'…' and EndDate eq datetime'…'.",
            ),
        );
    };
    let now = now_secs();
    if start.0 < now - RWS_MAX_AGE {
        return (
            tenant,
            odata_error(
                400,
                "",
                "Invalid StartDate value. The StartDate can't be older than 10 days from today.",
            ),
        );
    }
    let skip: usize = match req.param("$skiptoken") {
        None => 0,
        Some(s) => match s.trim().parse() {
            Ok(v) => v,
            Err(_) => return (tenant, odata_error(400, "", "Invalid $skiptoken.")),
        },
    };
    let spec = sh.opts.tenants.get(ti).cloned();
    if let Some(code) = spec.as_ref().and_then(|t| t.next_fail_once) {
        if skip > 0 && sh.lock().next_failed.insert(ti) {
            return (
                tenant,
                odata_error(code, "", "Invalid $skiptoken: the token has expired."),
            );
        }
    }
    let repeat_next = spec.as_ref().is_some_and(|t| t.repeat_next);
    let broken_entry = skip > 0 && spec.as_ref().is_some_and(|t| t.malformed_next_pages);
    let hostile = spec.as_ref().map_or(super::BodyFault::None, |t| t.body);
    let fault = if storm(sh, ti) {
        Fault::Unavailable
    } else {
        decide(
            sh,
            &format!("{tenant} {}?{}", req.path, req.raw_query),
            [faults.rate_429, faults.rate_503, faults.rate_cut],
            faults.max_consecutive,
        )
    };
    match fault {
        Fault::TooMany => {
            return (
                tenant,
                odata_error(429, "", "Too many requests. Please retry later.")
                    .with_header("Retry-After", faults.retry_after_secs.to_string()),
            )
        }
        Fault::Unavailable => {
            return (
                tenant,
                Response::new(503, "text/html", "<h1>Service Unavailable</h1>\n"),
            )
        }
        _ => {}
    }
    let snap = snapshot(sh, ti, "rws", format!("{start:?}{end:?}"), skip == 0);
    let Some(flow) = sh.flows.get(ti) else {
        return (tenant, odata_error(500, "", "internal"));
    };
    let recs: Vec<Rec> = sh
        .records(ti, flow, start.0, end.0.saturating_add(1), snap)
        .iter()
        .filter(|r| (r.secs, r.nanos) >= start && (r.secs, r.nanos) < end)
        .copied()
        .collect();
    let page_size = spec
        .as_ref()
        .and_then(|t| t.page_size)
        .unwrap_or(sh.opts.page_size)
        .max(1);
    let page: &[Rec] = recs.get(skip..).unwrap_or(&[]);
    let page = page.get(..page_size.min(page.len())).unwrap_or(&[]);
    let more = skip + page.len() < recs.len();

    let h = host(sh, req);
    let foreign = sh.faults().foreign_origin;
    let origin = foreign.clone().unwrap_or_else(|| format!("https://{h}"));
    let base = format!("{origin}/ecp/ReportingWebService/Reporting.svc/");
    let ns = if sh.opts.namespaces_https {
        "https"
    } else {
        "http"
    };
    let updated = fmt_z(now);
    let (se, ee) = (fmt_echo(start), fmt_echo(end));
    let mut x = String::with_capacity(page.len() * (1500 + sh.opts.subject_pad) + 1024);
    let _ = write!(
        x,
        "<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?>\r\n<feed xml:base=\"{base}\" xmlns=\"http://www.w3.org/2005/Atom\" xmlns:d=\"{ns}://schemas.microsoft.com/ado/2007/08/dataservices\" xmlns:m=\"{ns}://schemas.microsoft.com/ado/2007/08/dataservices/metadata\">\r\n  <id>{base}MessageTrace</id>\r\n  <title type=\"text\">MessageTrace</title>\r\n  <updated>{updated}</updated>\r\n  <link rel=\"self\" title=\"MessageTrace\" href=\"MessageTrace\" />\r\n"
    );
    let comment = spec.as_ref().map_or(0, |t| t.comment_bytes);
    if comment > 0 {
        x.push_str("  <!-- ");
        x.push_str(&"c".repeat(comment));
        x.push_str(" -->\r\n");
    }
    let mut served = Vec::with_capacity(page.len());
    for (i, r) in page.iter().enumerate() {
        let idx = skip + i;
        let f = flow.render(r, snap);
        let v = f.variant;
        let _ = write!(
            x,
            "  <entry>\r\n    <id>{base}MessageTrace({idx})</id>\r\n    <category term=\"TenantReporting.MessageTrace\" scheme=\"{ns}://schemas.microsoft.com/ado/2007/08/dataservices/scheme\" />\r\n    <link rel=\"edit\" title=\"MessageTrace\" href=\"MessageTrace({idx})\" />\r\n    <title />\r\n    <updated>{updated}</updated>\r\n    <author>\r\n      <name />\r\n    </author>\r\n    <content type=\"application/xml\">\r\n      <m:properties>\r\n        <d:Organization>{}</d:Organization>\r\n",
            f.organization
        );
        match &f.message_id {
            Some(m) => {
                x.push_str("        <d:MessageId>");
                xml_text(m, v, &mut x);
                x.push_str("</d:MessageId>\r\n");
            }
            None => x.push_str("        <d:MessageId m:null=\"true\" />\r\n"),
        }
        let _ = write!(
            x,
            "        <d:Received m:type=\"Edm.DateTime\">{}</d:Received>\r\n        <d:SenderAddress>",
            f.received_rws
        );
        xml_text(&f.sender, v, &mut x);
        x.push_str("</d:SenderAddress>\r\n        <d:RecipientAddress>");
        xml_text(&f.recipient, v, &mut x);
        x.push_str("</d:RecipientAddress>\r\n        <d:Subject>");
        xml_text(&f.subject, v, &mut x);
        let _ = write!(
            x,
            "</d:Subject>\r\n        <d:Status>{}</d:Status>\r\n",
            f.status
        );
        match &f.to_ip {
            Some(ip) => {
                let _ = write!(x, "        <d:ToIP>{ip}</d:ToIP>\r\n");
            }
            None => x.push_str("        <d:ToIP m:null=\"true\" />\r\n"),
        }
        let _ = write!(
            x,
            "        <d:FromIP>{}</d:FromIP>\r\n        <d:Size m:type=\"Edm.Int32\">{}</d:Size>\r\n        <d:MessageTraceId m:type=\"Edm.Guid\">{}</d:MessageTraceId>\r\n        <d:StartDate m:type=\"Edm.DateTime\">{se}</d:StartDate>\r\n        <d:EndDate m:type=\"Edm.DateTime\">{ee}</d:EndDate>\r\n        <d:Index m:type=\"Edm.Int64\">{idx}</d:Index>\r\n      </m:properties>\r\n    </content>\r\n  </entry>\r\n",
            f.from_ip, f.size, f.trace_id
        );
        served.push((f.trace_id, f.recipient));
        if broken_entry && i == 1 {
            x.push_str("  <entry>\r\n    <content type=\"application/xml\">\r\n      <m:properties>\r\n        <d:Subject>broken</d:Wrong>\r\n      </m:properties>\r\n    </content>\r\n  </entry>\r\n");
        }
    }
    if more {
        let next = if repeat_next {
            page_size
        } else {
            skip + page.len()
        };
        let page_no = skip / page_size + 1;
        let pad = spec.as_ref().map_or(0, |t| t.next_pad);
        let rel = format!(
            "MessageTrace?$filter={}&amp;$skiptoken={next}{}",
            pct_encode(filter),
            if pad > 0 {
                format!("&amp;pad={}", "x".repeat(pad))
            } else {
                String::new()
            }
        );
        // Odd next pages get an absolute link, even ones a link relative to xml:base.
        let href = if page_no % 2 == 1 && foreign.is_none() {
            format!("{base}{rel}")
        } else {
            rel
        };
        let _ = write!(x, "  <link rel=\"next\" href=\"{href}\" />\r\n");
    }
    x.push_str("</feed>");
    let mut resp = Response::new(200, "application/atom+xml;type=feed;charset=utf-8", x)
        .with_header("DataServiceVersion", "2.0;");
    resp.hostile = hostile;
    if fault == Fault::Cut {
        resp.cut_at = Some(cut_point(&resp.body, b"<entry>"));
    } else {
        log_served(sh, ti, served);
    }
    (tenant, resp)
}

// ---------------------------------------------------------------- Graph

pub(super) fn graph_error(status: u16, code: &str, message: &str) -> Response {
    let mut m = String::new();
    json_str(message, 0, &mut m);
    json(
        status,
        format!(
            "{{\"error\":{{\"code\":\"{code}\",\"message\":{m},\"innerError\":{{\"date\":\"{}\",\"request-id\":\"7e3a1c2b-0000-4000-8000-000000000000\",\"client-request-id\":\"7e3a1c2b-0000-4000-8000-000000000000\"}}}}}}",
            fmt_z(now_secs())
        ),
    )
}

/// Bounds of a Graph filter as inclusive whole seconds.
fn graph_bounds(filter: &str) -> Option<(i64, i64)> {
    let lower = filter.to_ascii_lowercase();
    let mut lo = None;
    let mut hi = None;
    let mut from = 0;
    while let Some(i) = lower.get(from..).and_then(|s| s.find("receiveddatetime")) {
        let at = from + i + "receiveddatetime".len();
        from = at;
        let mut words = filter.get(at..)?.split_whitespace();
        let op = words.next()?.to_ascii_lowercase();
        let val = words.next()?.trim_matches(|c| c == '\'' || c == '"');
        let (s, n) = parse_datetime(val)?;
        match op.as_str() {
            "ge" => lo = Some(if n > 0 { s + 1 } else { s }),
            "gt" => lo = Some(s + 1),
            "le" => hi = Some(s),
            "lt" => hi = Some(if n > 0 { s } else { s - 1 }),
            "eq" => {
                lo = Some(s);
                hi = Some(s);
            }
            _ => return None,
        }
    }
    Some((lo?, hi?))
}

fn graph(sh: &Shared, req: &Request) -> (String, Response) {
    if req.method != "GET" {
        return (
            String::new(),
            graph_error(405, "BadRequest", "Method not allowed."),
        );
    }
    let Some((ti, roles, _)) = bearer(sh, req).filter(|b| b.2) else {
        return (
            String::new(),
            graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token is empty, expired or not valid for this audience.",
            )
            .with_header(
                "WWW-Authenticate",
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
            ),
        );
    };
    let tenant = tenant_name(sh, ti);
    if sh
        .opts
        .tenants
        .get(ti)
        .is_some_and(|t| t.service_principal_missing)
    {
        return (
            tenant,
            graph_error(
                401,
                "UnknownError",
                "Service principal-less authentication failed. The service principal of app 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373 is not provisioned in this tenant.",
            ),
        );
    }
    if !roles.iter().any(|r| r == ROLE_GRAPH) {
        return (
            tenant,
            graph_error(
                403,
                "Forbidden",
                "Missing role permissions on the request. API requires one of 'ExchangeMessageTrace.Read.All'.",
            ),
        );
    }
    // The tenant's 5-minute budget: every request counts, throttled ones included.
    {
        let now = Instant::now();
        let limit = sh.opts.graph_limit_per_5min;
        let mut st = sh.lock();
        let q = st.graph_times.entry(ti).or_default();
        while q.front().is_some_and(|t| {
            now.duration_since(*t) >= Duration::from_secs(sh.opts.graph_window_secs)
        }) {
            q.pop_front();
        }
        q.push_back(now);
        if q.len() > limit {
            let oldest = q.front().copied().unwrap_or(now);
            let wait = Duration::from_secs(sh.opts.graph_window_secs)
                .saturating_sub(now.duration_since(oldest))
                .as_secs()
                + 1;
            drop(st);
            return (
                tenant,
                graph_error(
                    429,
                    "TooManyRequests",
                    "Too many requests. The tenant exceeded 100 message trace requests in 5 minutes.",
                )
                .with_header("Retry-After", wait.to_string())
                .with_header("X-Emulator-Budget", "exceeded"),
            );
        }
    }
    let faults = sh.faults();
    if faults.echo_auth_header {
        let mut text = String::from("\u{1b}[2Jrequest refused, you sent:\r\n");
        for (k, v) in &req.headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        return (tenant, Response::new(400, "text/plain", text));
    }
    if let Some(rest) = req
        .path
        .get(GRAPH_PATH.len()..)
        .filter(|r| r.starts_with('/'))
    {
        return (
            tenant.clone(),
            super::detail::answer(sh, ti, &tenant, req, rest, &faults),
        );
    }
    let Some(filter) = req.param("$filter") else {
        return (
            tenant,
            graph_error(
                400,
                "BadRequest",
                "A $filter on receivedDateTime is required.",
            ),
        );
    };
    let Some((lo, hi)) = graph_bounds(filter) else {
        return (
            tenant,
            graph_error(
                400,
                "BadRequest",
                "Invalid filter clause: expected receivedDateTime ge … and receivedDateTime le ….",
            ),
        );
    };
    let now = now_secs();
    if hi - lo > GRAPH_MAX_WINDOW {
        return (
            tenant,
            graph_error(
                400,
                "BadRequest",
                "The query window can't be longer than 10 days.",
            ),
        );
    }
    if lo < now - GRAPH_MAX_AGE {
        return (
            tenant,
            graph_error(
                400,
                "BadRequest",
                "The start date can't be older than 90 days.",
            ),
        );
    }
    if hi > now {
        return (
            tenant,
            graph_error(400, "BadRequest", "The end date can't be in the future."),
        );
    }
    let top = match req.param("$top") {
        None => sh.opts.graph_default_top,
        Some(t) => match t.trim().parse::<usize>() {
            Ok(v) if (1..=sh.opts.graph_max_top).contains(&v) => v,
            _ => {
                return (
                    tenant,
                    graph_error(
                        400,
                        "BadRequest",
                        "Invalid $top: the page size must be between 1 and 5000.",
                    ),
                )
            }
        },
    };
    let skip = match req.param("$skiptoken") {
        None => 0,
        Some(s) => match s
            .strip_prefix(SKIP_PREFIX)
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        {
            Some(v) => v,
            None => {
                return (
                    tenant,
                    graph_error(400, "BadRequest", "Invalid $skiptoken."),
                )
            }
        },
    };
    let fault = if storm(sh, ti) {
        Fault::Unavailable
    } else {
        decide(
            sh,
            &format!("{tenant} {}?{}", req.path, req.raw_query),
            [faults.rate_429, faults.rate_503, faults.rate_cut],
            faults.max_consecutive,
        )
    };
    match fault {
        Fault::TooMany => {
            return (
                tenant,
                graph_error(429, "TooManyRequests", "Too many requests.")
                    .with_header("Retry-After", faults.retry_after_secs.to_string()),
            )
        }
        Fault::Unavailable => {
            return (
                tenant,
                graph_error(
                    503,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable.",
                ),
            )
        }
        _ => {}
    }
    let snap = snapshot(sh, ti, "graph", format!("{lo}-{hi}"), skip == 0);
    let Some(flow) = sh.flows.get(ti) else {
        return (tenant, graph_error(500, "InternalServerError", "internal"));
    };
    let recs = sh.records(ti, flow, lo, hi.saturating_add(1), snap);
    let page: &[Rec] = recs.get(skip..).unwrap_or(&[]);
    let page = page.get(..top.min(page.len())).unwrap_or(&[]);
    let more = skip + page.len() < recs.len();
    let page_no = skip / top;

    let h = host(sh, req);
    let next = more.then(|| {
        format!(
            "{}/v1.0/admin/exchange/tracing/messageTraces?$filter={}&$top={top}&$skiptoken={SKIP_PREFIX}{:x}",
            sh.faults().foreign_origin.unwrap_or_else(|| format!("https://{h}")),
            pct_encode(filter),
            skip + page.len()
        )
    });
    let mut j = String::with_capacity(page.len() * (700 + sh.opts.subject_pad) + 512);
    j.push_str("{\"@odata.context\":\"https://graph.microsoft.com/v1.0/$metadata#admin/exchange/tracing/messageTraces\",");
    // The next link comes before `value` on odd pages and after it on even ones.
    if let (Some(n), true) = (&next, page_no % 2 == 1) {
        j.push_str("\"@odata.nextLink\":");
        json_str(n, 0, &mut j);
        j.push(',');
    }
    j.push_str("\"value\":[");
    let mut served = Vec::with_capacity(page.len());
    for (i, r) in page.iter().enumerate() {
        let f = flow.render(r, snap);
        // Raw UTF-8 and \u escapes alternate record by record.
        let v = (i % 2) as u8;
        if i > 0 {
            j.push(',');
        }
        j.push_str("{\"id\":");
        json_str(&f.trace_id, v, &mut j);
        j.push_str(",\"messageId\":");
        match &f.message_id {
            Some(m) => json_str(m, v, &mut j),
            None => j.push_str("null"),
        }
        let _ = write!(
            j,
            ",\"receivedDateTime\":\"{}\",\"senderAddress\":",
            f.received_graph
        );
        json_str(&f.sender, v, &mut j);
        j.push_str(",\"recipientAddress\":");
        json_str(&f.recipient, v, &mut j);
        j.push_str(",\"subject\":");
        json_str(&f.subject, v, &mut j);
        let _ = write!(
            j,
            ",\"status\":\"{}\",\"size\":{},\"fromIP\":",
            graph_status(f.status),
            f.size
        );
        json_str(&f.from_ip, v, &mut j);
        j.push_str(",\"toIP\":");
        match &f.to_ip {
            Some(ip) => json_str(ip, v, &mut j),
            None => j.push_str("null"),
        }
        if sh.opts.graph_extra_field {
            let _ = write!(j, ",\"direction\":\"{}\"", f.direction);
        }
        j.push('}');
        served.push((f.trace_id, f.recipient));
    }
    j.push(']');
    if let (Some(n), false) = (&next, page_no % 2 == 1) {
        j.push_str(",\"@odata.nextLink\":");
        json_str(n, 0, &mut j);
    }
    j.push('}');
    // Graph knows every record it served, from a cut page too (the collector delivers
    // the records before a cut).
    let mut st = sh.lock();
    for r in page {
        let f = flow.render(r, snap);
        st.graph_served
            .insert((ti, f.trace_id, f.recipient.to_lowercase()), (*r, f.status));
    }
    drop(st);
    let mut resp = json(200, j);
    if fault == Fault::Cut {
        resp.cut_at = Some(cut_point(&resp.body, b"{\"id\":"));
    } else {
        log_served(sh, ti, served);
    }
    (tenant, resp)
}
