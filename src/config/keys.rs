//! The key table: one row per service key (and per numeric input key) carrying its name,
//! type, range, default, the API it applies to, its `InitVariablesError` codes and its
//! documentation.
//!
//! Owns: the rows, the defaults derived from them, and the README reference table
//! rendered from them ([`reference_table_markdown`]). The validator
//! ([`super::validate`]) checks every row generically, the typed [`super::ServiceConfig`]
//! takes each row's checked value or its default, and `check` prints the validator's
//! messages, so a key's facts are written here once. Adding a service key is one row in
//! `service_keys!` plus its use (a `ServiceConfig` field filled in
//! `validate/service.rs`).
//! Must not: read the tree or hold per-file state; the table is `const` data.

use std::fmt::Write as _;

use super::Api;

/// What a key's value is, with its bounds and default as values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A whole number in `min..=max`.
    Int { min: i64, max: i64, default: i64 },
    /// A number (integer or with a fraction) of `unit` in `min..=max`.
    Float {
        min: f64,
        max: f64,
        default: f64,
        unit: &'static str,
    },
    /// A `YYYY-MM-DD` date; absent means unset.
    Date,
    /// An `https://host[:port][/path]` URL.
    Url { default: &'static str },
    /// The path of an existing regular file holding `what`; absent means unset.
    File { what: &'static str },
    /// A comma-separated list of words (`what` names them); absent means empty.
    List { what: &'static str },
}

/// The `InitVariablesError` codes (SPEC §2) a key reports, if it has any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codes {
    /// The value has the wrong type (`eighty` for a number).
    pub wrong_type: Option<u8>,
    /// The value has the right type but is out of range or malformed.
    pub bad_value: Option<u8>,
}

/// Codes `(wrong type, bad value)`.
const fn codes(wrong_type: u8, bad_value: u8) -> Codes {
    Codes {
        wrong_type: Some(wrong_type),
        bad_value: Some(bad_value),
    }
}

/// No `InitVariablesError` code (keys the vendor's collector did not have).
const NO_CODE: Codes = Codes {
    wrong_type: None,
    bad_value: None,
};

/// One row of the key table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    /// The API that uses the key; `None`: both. Given to the other API it only warns.
    pub api: Option<Api>,
    pub codes: Codes,
    /// The README's "meaning" column.
    pub doc: &'static str,
}

impl Key {
    /// The default of an `Int` row (`None` for other kinds).
    pub const fn int_default(&self) -> Option<i64> {
        match self.kind {
            Kind::Int { default, .. } => Some(default),
            _ => None,
        }
    }

    /// The README "type" column.
    pub fn type_text(&self) -> &'static str {
        match self.kind {
            Kind::Int { .. } => "int",
            Kind::Float { .. } => "float",
            Kind::Date | Kind::List { .. } => "str",
            Kind::Url { .. } => "URL",
            Kind::File { .. } => "path",
        }
    }

    /// The README "range" column.
    pub fn range_text(&self) -> String {
        match self.kind {
            Kind::Int { min, max, .. } => format!("{min}–{max}"),
            Kind::Float { min, max, .. } => format!("{min}–{max}"),
            Kind::Date => "YYYY-MM-DD".into(),
            Kind::Url { .. } => "https".into(),
            Kind::File { .. } => "–".into(),
            Kind::List { what } => format!("comma-separated {what}"),
        }
    }

    /// The README "default" column.
    pub fn default_text(&self) -> String {
        match self.kind {
            Kind::Int { default, .. } => default.to_string(),
            Kind::Float { default, .. } => default.to_string(),
            Kind::Url { default } => default.to_string(),
            Kind::Date | Kind::File { .. } => "–".into(),
            Kind::List { .. } => "– (off)".into(),
        }
    }

    /// The README "API" column.
    pub fn api_text(&self) -> &'static str {
        match self.api {
            None => "both",
            Some(Api::Reporting) => "Reporting Web Service",
            Some(Api::Graph) => "Graph",
        }
    }

    /// The README "codes" column: `12`, `14/15` or `–`.
    pub fn codes_text(&self) -> String {
        match (self.codes.wrong_type, self.codes.bad_value) {
            (None, None) => "–".into(),
            (Some(a), Some(b)) if a == b => a.to_string(),
            (Some(a), Some(b)) => format!("{a}/{b}"),
            (Some(a), None) | (None, Some(a)) => a.to_string(),
        }
    }
}

pub const DEFAULT_BASE_URL: &str = "https://reports.office365.com";
pub const DEFAULT_AUTH_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_RESOURCE_URL: &str = "https://outlook.office365.com";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";
pub const REPORTING_PATH: &str = "/ecp/reportingwebservice/reporting.svc/MessageTrace";
pub const GRAPH_PATH: &str = "/v1.0/admin/exchange/tracing/messageTraces";
/// Below this delay records that settle late may be missed (they appear up to 24 h late).
pub const SAFE_DELAY_SECS: i64 = 86_400;

/// Declares each row as a named `const` and lists them all in [`SERVICE_KEYS`], in order:
/// a row is written once.
macro_rules! service_keys {
    ($($(#[$doc:meta])* $id:ident = $row:expr;)*) => {
        $($(#[$doc])* pub const $id: Key = $row;)*
        /// Service keys (all optional), in the order of SPEC §2 and the README table.
        pub const SERVICE_KEYS: &[Key] = &[$($id),*];
    };
}

service_keys! {
    REQUESTS_TIMEOUT_IN_SECONDS = Key {
        name: "requests_timeout_in_seconds",
        kind: Kind::Float { min: 1.0, max: 86_400.0, default: 60.0, unit: "seconds" },
        api: None,
        codes: codes(12, 12),
        doc: "timeout of one HTTP request (connect + read)",
    };
    REQUESTS_RETRIES_BEFORE_ERROR_IN_UNITS = Key {
        name: "requests_retries_before_error_in_units",
        kind: Kind::Int { min: 0, max: 100, default: 5 },
        api: None,
        codes: codes(14, 15),
        doc: "retries of a failed request before the pull is abandoned until the next period",
    };
    REQUESTS_WAIT_TIME_BETWEEN_RETRIES_IN_SECONDS = Key {
        name: "requests_wait_time_between_retries_in_seconds",
        kind: Kind::Int { min: 0, max: 3600, default: 5 },
        api: None,
        codes: codes(16, 17),
        doc: "base wait between retries (exponential with jitter; `Retry-After` wins when given)",
    };
    REQUEST_PERIOD_IN_SECONDS = Key {
        name: "request_period_in_seconds",
        kind: Kind::Int { min: 1, max: 86_400, default: 60 },
        api: None,
        codes: NO_CODE,
        doc: "how often a pull starts",
    };
    WINDOW_IN_SECONDS = Key {
        name: "window_in_seconds",
        kind: Kind::Int { min: 60, max: 86_400, default: 900 },
        api: None,
        codes: NO_CODE,
        doc: "length of one query window",
    };
    OVERRIDE_TIME_DELAY_IN_SECONDS = Key {
        name: "override_time_delay_in_seconds",
        kind: Kind::Int { min: 1, max: 172_800, default: 90_000 },
        api: None,
        codes: codes(19, 20),
        doc: "how far behind now the pulled data ends (records appear in the API up to 24 h late); below 86400 warns that records may be missed",
    };
    FIRST_PASS_DELAY_IN_SECONDS = Key {
        name: "first_pass_delay_in_seconds",
        kind: Kind::Int { min: 60, max: 172_800, default: 900 },
        api: None,
        codes: NO_CODE,
        doc: "how far behind now the first pass reads (records reach the SIEM within minutes); the settle pass reads each window again at `override_time_delay_in_seconds` and sends only what is new or changed; equal or above it means one pass",
    };
    RESET_PERSISTENCE_AUTH = Key {
        name: "reset_persistence_auth",
        kind: Kind::Date,
        api: None,
        codes: codes(18, 18),
        doc: "when this value differs from the persisted one, the state is cleared and pulling restarts",
    };
    OVERRIDE_BASE_URL = Key {
        name: "override_base_url",
        kind: Kind::Url { default: DEFAULT_BASE_URL },
        api: Some(Api::Reporting),
        codes: codes(8, 8),
        doc: "Reporting Web Service scheme+host; `/ecp/reportingwebservice/reporting.svc/MessageTrace` is added unless present (sovereign clouds, tests)",
    };
    OVERRIDE_BASE_AUTH_URL = Key {
        name: "override_base_auth_url",
        kind: Kind::Url { default: DEFAULT_AUTH_URL },
        api: None,
        codes: codes(9, 9),
        doc: "token endpoint scheme+host; `/{tenant_id}/oauth2/token` is added (sovereign clouds such as `login.microsoftonline.us`, tests)",
    };
    OVERRIDE_BASE_RESOURCE_URL = Key {
        name: "override_base_resource_url",
        kind: Kind::Url { default: DEFAULT_RESOURCE_URL },
        api: Some(Api::Reporting),
        codes: codes(10, 10),
        doc: "`resource` of the Reporting Web Service token (sovereign clouds, tests)",
    };
    OVERRIDE_GRAPH_URL = Key {
        name: "override_graph_url",
        kind: Kind::Url { default: DEFAULT_GRAPH_URL },
        api: Some(Api::Graph),
        codes: NO_CODE,
        doc: "Graph scheme+host; `/v1.0/admin/exchange/tracing/messageTraces` is added unless present (tests)",
    };
    CA_FILE = Key {
        name: "ca_file",
        kind: Kind::File { what: "a PEM file of CA certificates" },
        api: None,
        codes: NO_CODE,
        doc: "trust anchors (PEM) for Microsoft endpoints, used instead of the built-in roots: TLS-inspecting proxies, tests",
    };
    MAX_REQUESTS_PER_5_MINUTES = Key {
        name: "max_requests_per_5_minutes",
        kind: Kind::Int { min: 1, max: 100, default: 100 },
        api: Some(Api::Graph),
        codes: NO_CODE,
        doc: "this collector's share of the tenant's 100 requests per 5 minutes",
    };
    TRACE_DETAILS_STATUSES = Key {
        name: "trace_details_statuses",
        kind: Kind::List { what: "statuses" },
        api: Some(Api::Graph),
        codes: NO_CODE,
        doc: "rows with these statuses (case-insensitive, e.g. `Failed,Quarantined,FilteredAsSpam`) get per-recipient trace details, one request each",
    };
    MAX_DETAIL_REQUESTS_PER_5_MINUTES = Key {
        name: "max_detail_requests_per_5_minutes",
        kind: Kind::Int { min: 1, max: 90, default: 20 },
        api: Some(Api::Graph),
        codes: NO_CODE,
        doc: "the detail calls' share of max_requests_per_5_minutes, at most that minus 10 (list calls always keep a share)",
    };
    MAX_PENDING_DETAILS = Key {
        name: "max_pending_details",
        kind: Kind::Int { min: 100, max: 1_000_000, default: 10_000 },
        api: Some(Api::Graph),
        codes: NO_CODE,
        doc: "bound of the durable queue of rows awaiting details; beyond it the oldest are dropped and counted (`details_dropped`)",
    };
}

/// Detail requests always leave list calls this many of the 5-minute budget.
pub const LIST_RESERVE: i64 = 10;

/// The Graph request budget when none is configured (the pacer's fallback), from its row.
pub const DEFAULT_MAX_REQUESTS_PER_5_MINUTES: u32 = match MAX_REQUESTS_PER_5_MINUTES.int_default() {
    Some(d) if d > 0 && d <= u32::MAX as i64 => d as u32,
    // Evaluated at compile time: a wrong row fails the build, never a run.
    _ => panic!("max_requests_per_5_minutes needs a positive u32 default"),
};

/// The query window length when none is configured, from its row.
pub const DEFAULT_WINDOW_IN_SECONDS: u64 = match WINDOW_IN_SECONDS.int_default() {
    Some(d) if d > 0 => d as u64,
    _ => panic!("window_in_seconds needs a positive default"),
};

/// Input key: the first start is now minus this many days (clamped by the API's max age).
pub const MAX_HISTORIC_DATE_CUTOFF_DAYS_BACK: Key = Key {
    name: "max_historic_date_cutoff_days_back",
    kind: Kind::Int {
        min: 1,
        max: 1_000_000,
        default: 10,
    },
    api: None,
    codes: codes(11, 11),
    doc: "the first start is now minus this many days",
};

/// Input key: the margin kept from the API's max age on the first start.
pub const MAX_HISTORIC_DATE_MARGIN_SECONDS: Key = Key {
    name: "max_historic_date_margin_seconds",
    kind: Kind::Int {
        min: 1,
        max: 86_400_000_000,
        default: 60,
    },
    api: None,
    codes: codes(13, 13),
    doc: "margin kept from the oldest query the API allows",
};

/// [`SERVICE_KEYS`] as the Markdown table the README carries verbatim.
pub fn reference_table_markdown() -> String {
    let mut s = String::from(
        "| key | type | range | default | API | codes | meaning |\n|---|---|---|---|---|---|---|\n",
    );
    for k in SERVICE_KEYS {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            k.name,
            k.type_text(),
            k.range_text(),
            k.default_text(),
            k.api_text(),
            k.codes_text(),
            k.doc
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_render_their_values() {
        let md = reference_table_markdown();
        assert!(md.contains(
            "| requests_timeout_in_seconds | float | 1–86400 | 60 | both | 12 | timeout"
        ));
        assert!(md.contains(
            "| requests_retries_before_error_in_units | int | 0–100 | 5 | both | 14/15 |"
        ));
        assert!(md.contains("| max_requests_per_5_minutes | int | 1–100 | 100 | Graph | – |"));
        assert!(md.contains("| override_base_url | URL | https | https://reports.office365.com | Reporting Web Service | 8 |"));
        assert!(md.contains("| reset_persistence_auth | str | YYYY-MM-DD | – | both | 18 |"));
        assert_eq!(md.lines().count(), SERVICE_KEYS.len() + 2);
        assert_eq!(DEFAULT_MAX_REQUESTS_PER_5_MINUTES, 100);
        assert_eq!(DEFAULT_WINDOW_IN_SECONDS, 900);
    }

    #[test]
    fn names_are_unique_and_int_bounds_hold_their_default() {
        for (i, k) in SERVICE_KEYS.iter().enumerate() {
            assert!(
                SERVICE_KEYS.iter().skip(i + 1).all(|o| o.name != k.name),
                "{} twice",
                k.name
            );
            match k.kind {
                Kind::Int { min, max, default } => assert!(min <= default && default <= max),
                Kind::Float {
                    min, max, default, ..
                } => assert!(min <= default && default <= max),
                _ => {}
            }
        }
    }
}
