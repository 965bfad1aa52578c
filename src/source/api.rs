//! The API seam: everything that differs between the Reporting Web Service and Graph.
//!
//! Owns: `Api` and, per API, the service name (written only here), the token endpoint
//! and its `resource`/`scope`, the role the token must hold, how far back queries may
//! reach, the window rule, the query URL, the `Accept` header, which scanner reads a
//! page, how an error answer is read, and the classification of Microsoft's error texts
//! (the Graph service-principal 401, the Reporting Web Service retirement, "No
//! permission") into `Error` variants, once, together with the fix each one needs.
//! Must not: do IO or read the clock; callers (`pull`, `check`, `auth`, `window`)
//! ask `Api` instead of matching on it.

use std::io::Read;

use crate::error::{Error, Result};
use crate::record::Record;
use crate::source::{graph, reporting, PageCtx, PageEnd};
use crate::time::DAY;

// The service names, written once: `service_name` and the retirement fix use them.
macro_rules! rws_name {
    () => {
        "office365_exchange_message_service"
    };
}
macro_rules! graph_name {
    () => {
        "office365_exchange_message_graph_service"
    };
}

/// How to leave the retired Reporting Web Service.
pub const RETIRED_FIX: &str = concat!(
    "Microsoft is retiring message trace in the Reporting Web Service: move this input to \
     the Graph service (replace ",
    rws_name!(),
    " with ",
    graph_name!(),
    "; the cursor is taken over)"
);

/// Which message-trace API an input uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `office365_exchange_message_service`.
    Reporting,
    /// `office365_exchange_message_graph_service`.
    Graph,
}

/// The scope of Graph tokens (application permissions granted to the app).
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// How far back the Reporting Web Service answers (older queries get a 400).
pub const RWS_MAX_AGE_SECS: i64 = 10 * DAY;
/// How far back Graph message trace answers.
pub const GRAPH_MAX_AGE_SECS: i64 = 90 * DAY;
/// The longest window Graph accepts; catch-up windows grow up to it.
pub const GRAPH_MAX_WINDOW_SECS: i64 = 10 * DAY;
/// `$top` of Graph queries: the API's maximum page.
pub const GRAPH_TOP: u32 = 5000;
/// Microsoft's text of the Graph 401 when that service principal is missing.
const SP_LESS_401: &str = "Service principal-less authentication failed";

/// Which page of a window a query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// A pull: the largest page the API gives.
    Pull,
    /// `check`: one small page proving the service answers.
    Probe,
}

impl Api {
    /// Both APIs, Reporting first.
    pub const ALL: [Api; 2] = [Api::Reporting, Api::Graph];

    /// The config key of the service, also part of the state file name.
    pub fn service_name(self) -> &'static str {
        match self {
            Api::Reporting => rws_name!(),
            Api::Graph => graph_name!(),
        }
    }

    /// The other API: the one whose cursor this one takes over on a first start.
    pub fn other(self) -> Api {
        match self {
            Api::Reporting => Api::Graph,
            Api::Graph => Api::Reporting,
        }
    }

    /// `reporting` or `graph`, whichever belongs to this API (for per-API settings).
    pub fn pick<T>(self, reporting: T, graph: T) -> T {
        match self {
            Api::Reporting => reporting,
            Api::Graph => graph,
        }
    }

    /// The token endpoint under `auth_url` (scheme+host) for `tenant`: v1 for the
    /// Reporting Web Service, v2 for Graph.
    pub fn token_url(self, auth_url: &str, tenant: &str) -> String {
        let base = auth_url.trim_end_matches('/');
        match self {
            Api::Reporting => format!("{base}/{tenant}/oauth2/token"),
            Api::Graph => format!("{base}/{tenant}/oauth2/v2.0/token"),
        }
    }

    /// The form field naming what the token is for: `resource` (v1) or `scope` (v2).
    pub fn token_audience(self, resource_url: &str) -> (&'static str, &str) {
        match self {
            Api::Reporting => ("resource", resource_url),
            Api::Graph => ("scope", GRAPH_SCOPE),
        }
    }

    /// The permission the token's `roles` must hold.
    pub fn required_role(self) -> &'static str {
        match self {
            Api::Reporting => "ReportingWebService.Read.All",
            Api::Graph => "ExchangeMessageTrace.Read.All",
        }
    }

    /// Where that permission is found in the app registration.
    pub fn permission_path(self) -> &'static str {
        match self {
            Api::Reporting => {
                "Office 365 Exchange Online → Application permissions → ReportingWebService"
            }
            Api::Graph => "Microsoft Graph → Application permissions → ExchangeMessageTrace",
        }
    }

    /// How far back the API answers, in seconds.
    pub fn max_age_secs(self) -> i64 {
        self.pick(RWS_MAX_AGE_SECS, GRAPH_MAX_AGE_SECS)
    }

    /// Length of the next window given the configured length and the seconds left
    /// until the target (both ≥ 1): Reporting windows have the configured length;
    /// Graph windows grow up to 10 days while catching up (a full page simply pages
    /// on), so a backfill costs a handful of requests.
    pub fn window_len(self, configured: i64, remaining: i64) -> i64 {
        match self {
            Api::Reporting => configured,
            Api::Graph => configured.max(GRAPH_MAX_WINDOW_SECS.min(remaining)),
        }
    }

    /// True when the API has a request budget that the puller paces itself to.
    pub fn is_paced(self) -> bool {
        self == Api::Graph
    }

    /// The query of the window `[start, end)` under `base` (the service's endpoint URL).
    pub fn query_url(self, base: &str, start: i64, end: i64, query: Query) -> String {
        match self {
            Api::Reporting => reporting::query_url(base, start, end),
            Api::Graph => {
                let top = match query {
                    Query::Pull => GRAPH_TOP,
                    Query::Probe => 1,
                };
                graph::query_url(base, start, end, top)
            }
        }
    }

    /// The `Accept` header of a query.
    pub fn accept(self) -> &'static str {
        self.pick("application/atom+xml", "application/json")
    }

    /// Scan one page with this API's scanner.
    pub fn scan_page<R: Read>(
        self,
        body: R,
        ctx: &PageCtx<'_>,
        on_record: &mut dyn FnMut(&Record<'_>) -> Result<()>,
    ) -> Result<PageEnd> {
        match self {
            Api::Reporting => reporting::scan_page(body, ctx, on_record),
            Api::Graph => graph::scan_page(body, ctx, on_record),
        }
    }

    /// Microsoft's message out of an error body, if it has the API's error shape.
    pub fn error_message(self, body: &[u8]) -> Option<String> {
        match self {
            Api::Reporting => reporting::error_message(body),
            Api::Graph => graph::error_message(body),
        }
    }

    /// The error of a non-200 answer to a query: Microsoft's texts are classified here,
    /// and only here, into the variants that need their own handling.
    pub fn answer_error(self, status: u16, body: &[u8], retry_after: Option<u64>) -> Error {
        let raw = self
            .error_message(body)
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        // Sanitised before the cut, so a cut cannot leave half a secret behind.
        let message = crate::log::sanitize_remote(&raw)
            .chars()
            .take(300)
            .collect::<String>();
        if self == Api::Graph && status == 401 && message.contains(SP_LESS_401) {
            return Error::ServicePrincipal;
        }
        let http = Error::Http {
            status,
            message,
            retry_after,
        };
        if http.is_transient() {
            return http;
        }
        let Error::Http { message, .. } = http else {
            return http;
        };
        let lower = message.to_ascii_lowercase();
        if self == Api::Reporting
            && (lower.contains("not available")
                || lower.contains("retire")
                || lower.contains("messagetracev2"))
        {
            return Error::Retired {
                status,
                message,
                fix: RETIRED_FIX,
            };
        }
        if status == 403 || message.contains("No permission") {
            return Error::Denied { status, message };
        }
        Error::Http {
            status,
            message,
            retry_after,
        }
    }

    /// What fixes a failed query, for `check`: the fix the error names, or the generic one.
    pub fn query_fix(self, e: &Error) -> String {
        match e.fix() {
            Some(fix) => fix.to_string(),
            None if e.is_transport() => {
                "check the network path to Microsoft (proxy, firewall) and ca_file".to_string()
            }
            None => {
                "check override_base_url / override_graph_url and the service's health".to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_other() {
        assert_eq!(Api::Graph.other(), Api::Reporting);
        assert_eq!(Api::Reporting.other(), Api::Graph);
        assert_ne!(Api::Graph.service_name(), Api::Reporting.service_name());
        assert_eq!(
            Api::Graph.token_url("https://l.example/", "t"),
            "https://l.example/t/oauth2/v2.0/token"
        );
        assert_eq!(
            Api::Reporting.token_url("https://l.example", "t"),
            "https://l.example/t/oauth2/token"
        );
    }

    #[test]
    fn microsoft_texts_are_classified() {
        let sp = br#"{"error":{"code":"Unauthorized","message":"Service principal-less authentication failed for app"}}"#;
        assert!(matches!(
            Api::Graph.answer_error(401, sp, None),
            Error::ServicePrincipal
        ));
        // The same text from the Reporting Web Service is a plain 401.
        assert!(matches!(
            Api::Reporting.answer_error(401, sp, None),
            Error::Http { status: 401, .. }
        ));
        let retired = b"Message trace is not available for this tenant via Reporting Web Service. Use Get-MessageTraceV2 or the Microsoft Graph API.";
        let e = Api::Reporting.answer_error(400, retired, None);
        assert!(matches!(e, Error::Retired { status: 400, .. }), "{e}");
        assert!(e.to_string().contains(Api::Graph.service_name()));
        assert_eq!(e.exit_code(), 3);
        assert!(!e.is_transient());
        // A transient status is never a retirement: it is retried.
        assert!(Api::Reporting
            .answer_error(503, retired, None)
            .is_transient());
        let denied = Api::Graph.answer_error(403, b"nope", None);
        assert!(matches!(denied, Error::Denied { status: 403, .. }));
        assert!(Api::Graph.query_fix(&denied).contains("Global Reader"));
        let sp = Api::Graph.answer_error(401, sp, None);
        assert!(Api::Graph
            .query_fix(&sp)
            .contains("New-MgServicePrincipal -AppId 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"));
        assert!(sp.to_string().contains(SP_LESS_401));
        let other = Api::Graph.answer_error(404, b"", Some(3));
        assert!(Api::Graph.query_fix(&other).contains("override_graph_url"));
    }

    #[test]
    fn windows_per_api() {
        assert_eq!(Api::Reporting.window_len(900, 20 * DAY), 900);
        assert_eq!(Api::Graph.window_len(900, 20 * DAY), 10 * DAY);
        assert_eq!(Api::Graph.window_len(900, 60), 900);
    }
}
