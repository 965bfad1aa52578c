//! An input's `services` section → [`ServiceConfig`]: which API, and every service key
//! checked by its row in [`crate::config::keys::SERVICE_KEYS`].
//!
//! Owns: choosing the one service of an input, filling `ServiceConfig` from the checked
//! rows, and the rules that involve named keys: the short-delay warning, the refusal of
//! sovereign clouds for Graph, and the warning for a key the chosen API ignores.
//! Must not: restate a key's type, range, default or code (they are the row's).

use super::rows::Values;
use super::{Checker, Fields};
use crate::config::keys::{self, SAFE_DELAY_SECS, SERVICE_KEYS};
use crate::config::model::{Api, ServiceConfig};
use crate::config::tree::{Diag, Node, Value};

pub(super) fn check_services(c: &mut Checker<'_>, f: &Fields<'_>) -> Option<ServiceConfig> {
    let (rep_name, graph_name) = (Api::Reporting.service_name(), Api::Graph.service_name());
    let Some(e) = f.opt("services") else {
        c.err(
            f.pos,
            None,
            &f.path("services"),
            "missing",
            format!("add `services:` with `{rep_name}:` (or `{graph_name}:` for Microsoft Graph)"),
        );
        return None;
    };
    let sf = c.fields(&e.node, &f.path("services"), &[rep_name, graph_name], None)?;
    let (se, api) = match (sf.get(rep_name), sf.get(graph_name)) {
        (Some(_), Some(g)) => {
            c.err(
                g.key_pos,
                None,
                &sf.path(graph_name),
                "both services are configured: they would send the same records",
                "keep one service per input (Graph replaces the Reporting Web Service)",
            );
            return None;
        }
        (Some(r), None) => (r, Api::Reporting),
        (None, Some(g)) => (g, Api::Graph),
        (None, None) => {
            if sf.entries.is_empty() {
                c.err(
                    sf.pos,
                    None,
                    &sf.path,
                    "no service configured",
                    format!("add `{rep_name}:` (or `{graph_name}:`)"),
                );
            }
            return None;
        }
    };
    let path = sf.path(&se.key);
    let names: Vec<&str> = SERVICE_KEYS.iter().map(|k| k.name).collect();
    let empty = Node {
        pos: se.key_pos,
        value: Value::Map(Vec::new()),
    };
    let node = if se.node.value == Value::Null {
        &empty
    } else {
        &se.node
    };
    let s = c.fields(node, &path, &names, None)?;
    let v = Values::check(c, &s, SERVICE_KEYS);
    short_delay_warning(c, &s, &v);
    if api == Api::Graph {
        refuse_sovereign_clouds(c, &s);
    }
    ignored_key_warnings(c, &s, api);
    detail_share_check(c, &s, &v);
    let url = |key: &keys::Key| v.text(key).unwrap_or_default();
    Some(ServiceConfig {
        api,
        timeout_secs: v.float(&keys::REQUESTS_TIMEOUT_IN_SECONDS),
        retries: v.u32(&keys::REQUESTS_RETRIES_BEFORE_ERROR_IN_UNITS),
        retry_wait_secs: v.u64(&keys::REQUESTS_WAIT_TIME_BETWEEN_RETRIES_IN_SECONDS),
        period_secs: v.u64(&keys::REQUEST_PERIOD_IN_SECONDS),
        window_secs: v.u64(&keys::WINDOW_IN_SECONDS),
        delay_secs: v.u64(&keys::OVERRIDE_TIME_DELAY_IN_SECONDS),
        first_pass_delay_secs: v.u64(&keys::FIRST_PASS_DELAY_IN_SECONDS),
        reset_persistence_auth: v.text(&keys::RESET_PERSISTENCE_AUTH),
        reporting_url: with_path(&url(&keys::OVERRIDE_BASE_URL), keys::REPORTING_PATH),
        auth_url: url(&keys::OVERRIDE_BASE_AUTH_URL)
            .trim_end_matches('/')
            .to_string(),
        resource_url: url(&keys::OVERRIDE_BASE_RESOURCE_URL)
            .trim_end_matches('/')
            .to_string(),
        graph_url: with_path(&url(&keys::OVERRIDE_GRAPH_URL), keys::GRAPH_PATH),
        ca_file: v.path(&keys::CA_FILE),
        max_requests_per_5_minutes: v.u32(&keys::MAX_REQUESTS_PER_5_MINUTES),
        trace_details_statuses: v
            .text(&keys::TRACE_DETAILS_STATUSES)
            .map(|t| t.split(',').map(str::to_ascii_lowercase).collect())
            .unwrap_or_default(),
        max_detail_requests_per_5_minutes: v.u32(&keys::MAX_DETAIL_REQUESTS_PER_5_MINUTES),
        max_pending_details: v.u32(&keys::MAX_PENDING_DETAILS),
    })
}

/// With details on, their share must leave list calls [`keys::LIST_RESERVE`] requests
/// of `max_requests_per_5_minutes`.
fn detail_share_check(c: &mut Checker<'_>, s: &Fields<'_>, v: &Values) {
    if v.text(&keys::TRACE_DETAILS_STATUSES).is_none() {
        return;
    }
    let total = v.int(&keys::MAX_REQUESTS_PER_5_MINUTES);
    let share = v.int(&keys::MAX_DETAIL_REQUESTS_PER_5_MINUTES);
    let most = total.saturating_sub(keys::LIST_RESERVE);
    if share <= most {
        return;
    }
    let key = &keys::MAX_DETAIL_REQUESTS_PER_5_MINUTES;
    let pos = s
        .opt(key.name)
        .or_else(|| s.opt(keys::MAX_REQUESTS_PER_5_MINUTES.name))
        .map_or(s.pos, |e| e.node.pos);
    let fix = if most >= 1 {
        format!(
            "set {} to at most {most}, or raise max_requests_per_5_minutes",
            key.name
        )
    } else {
        format!(
            "raise max_requests_per_5_minutes to at least {} or remove trace_details_statuses",
            keys::LIST_RESERVE.saturating_add(1)
        )
    };
    c.err(
        pos,
        None,
        &s.path(key.name),
        format!(
            "{share} leaves list calls fewer than {} of max_requests_per_5_minutes ({total})",
            keys::LIST_RESERVE
        ),
        fix,
    );
}

/// A delay below [`SAFE_DELAY_SECS`] is allowed but may miss records that settle late.
fn short_delay_warning(c: &mut Checker<'_>, s: &Fields<'_>, v: &Values) {
    let key = &keys::OVERRIDE_TIME_DELAY_IN_SECONDS;
    let delay = v.int(key);
    let Some(e) = s.opt(key.name) else {
        return;
    };
    if delay >= SAFE_DELAY_SECS {
        return;
    }
    let default = key.default_text();
    let warning = Diag {
        pos: e.node.pos,
        code: None,
        key: s.path(key.name),
        what: format!("{delay} s is below {SAFE_DELAY_SECS} s: records that reach the API up to 24 h late may be missed"),
        fix: format!("use {SAFE_DELAY_SECS} or more (default {default})"),
    };
    let line = warning.render(c.label);
    c.warnings.push(line);
}

/// Graph message trace exists in the worldwide cloud only: a sovereign-cloud token or
/// Graph endpoint can never serve it, so say so now rather than fail every pull.
fn refuse_sovereign_clouds(c: &mut Checker<'_>, s: &Fields<'_>) {
    for key in [&keys::OVERRIDE_BASE_AUTH_URL, &keys::OVERRIDE_GRAPH_URL] {
        let Some(e) = s.opt(key.name) else { continue };
        let Value::Str(v) = &e.node.value else {
            continue;
        };
        if let Some(cloud) = sovereign_cloud(v) {
            c.err(
                e.node.pos,
                key.codes.bad_value,
                &s.path(key.name),
                format!("{cloud} is a sovereign cloud, and Microsoft Graph message trace exists in the worldwide cloud only"),
                "use office365_exchange_message_service (Reporting Web Service) for this tenant, or remove the override",
            );
        }
    }
}

/// A key of the other API is ignored, with a warning (it is not a mistake: moving a
/// tenant between APIs is replacing the service key).
fn ignored_key_warnings(c: &mut Checker<'_>, s: &Fields<'_>, api: Api) {
    for key in SERVICE_KEYS {
        let Some(needs) = key.api.filter(|&a| a != api) else {
            continue;
        };
        if let Some(e) = s.opt(key.name) {
            let line = format!(
                "{}:{}:{}: {}: is used only by {}; ignored",
                c.label,
                e.key_pos.line,
                e.key_pos.col,
                s.path(&e.key),
                needs.service_name()
            );
            c.warnings.push(line);
        }
    }
}

/// The sovereign cloud a Microsoft endpoint URL belongs to, if any.
pub fn sovereign_cloud(url: &str) -> Option<&'static str> {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or(url)
        .split(['/', ':'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    const CLOUDS: [(&str, &str); 6] = [
        ("login.microsoftonline.us", "US Government (GCC High/DoD)"),
        ("graph.microsoft.us", "US Government (GCC High)"),
        ("dod-graph.microsoft.us", "US Government (DoD)"),
        (
            "login.chinacloudapi.cn",
            "Microsoft Azure operated by 21Vianet",
        ),
        (
            "login.partner.microsoftonline.cn",
            "Microsoft Azure operated by 21Vianet",
        ),
        (
            "microsoftgraph.chinacloudapi.cn",
            "Microsoft Azure operated by 21Vianet",
        ),
    ];
    CLOUDS
        .iter()
        .find(|(h, _)| host == *h)
        .map(|(_, name)| *name)
}

/// `value` (without trailing `/`) + `path` unless it already ends with `path` (ASCII case-insensitive).
pub(super) fn with_path(value: &str, path: &str) -> String {
    let v = value.trim_end_matches('/');
    if v.to_ascii_lowercase().ends_with(&path.to_ascii_lowercase()) {
        v.to_string()
    } else {
        format!("{v}{path}")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::keys::{self, Key};
    use crate::config::{
        parse_str_with_env, Config, DEFAULT_BASE_URL, DEFAULT_GRAPH_URL, GRAPH_PATH,
        REPORTING_PATH, SERVICE_KEYS,
    };
    use crate::error::{Error, Result};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const CREDS: &str = "outputs:\n  o:\n    type: stdout\ninputs:\n  office365_exchange_message:\n    id: 1\n    credentials:\n";

    fn with_service_key(line: &str) -> Result<Config> {
        let text = format!(
            "{CREDS}      tenant_id: t-1\n      client_id: c-1\n      client_secret: s-1\n    services:\n      office365_exchange_message_graph_service:\n        {line}\n"
        );
        parse_str_with_env(&text, "c.yaml", Path::new("/"), &no_env)
    }

    #[test]
    fn trace_detail_keys_and_their_share_of_the_budget() {
        let cfg = with_service_key(
            "trace_details_statuses: Failed, filteredAsSpam\n        max_pending_details: 100",
        )
        .unwrap();
        let svc = &cfg.inputs[0].service;
        assert_eq!(svc.trace_details_statuses, ["failed", "filteredasspam"]);
        assert_eq!(
            (
                svc.max_detail_requests_per_5_minutes,
                svc.max_pending_details
            ),
            (20, 100)
        );
        let off = with_service_key("# defaults").unwrap();
        assert!(off.inputs[0].service.trace_details_statuses.is_empty());
        let Err(Error::Config(lines)) = with_service_key(
            "trace_details_statuses: Failed\n        max_requests_per_5_minutes: 25\n        max_detail_requests_per_5_minutes: 16",
        ) else {
            panic!("a detail share leaving list calls 9 requests is accepted")
        };
        assert!(
            lines[0].contains("max_detail_requests_per_5_minutes")
                && lines[0].contains("set max_detail_requests_per_5_minutes to at most 15"),
            "{lines:?}"
        );
        // Without details the share is not checked.
        assert!(with_service_key("max_requests_per_5_minutes: 5").is_ok());
        let Err(Error::Config(lines)) = with_service_key("trace_details_statuses: Failed,,Spam")
        else {
            panic!("an empty status is accepted")
        };
        assert!(lines[0].contains("trace_details_statuses"), "{lines:?}");
    }

    /// Every row's default is what an absent key yields, and its int/float range is
    /// exactly what validation accepts (bounds in, one beyond out, with the row's code).
    #[test]
    fn key_rows_drive_validation_and_defaults() {
        use keys::Kind;
        let cfg = with_service_key("# defaults").unwrap();
        let svc = &cfg.inputs[0].service;
        let by_row: &[(&Key, String)] = &[
            (
                &keys::REQUESTS_TIMEOUT_IN_SECONDS,
                svc.timeout_secs.to_string(),
            ),
            (
                &keys::REQUESTS_RETRIES_BEFORE_ERROR_IN_UNITS,
                svc.retries.to_string(),
            ),
            (
                &keys::REQUESTS_WAIT_TIME_BETWEEN_RETRIES_IN_SECONDS,
                svc.retry_wait_secs.to_string(),
            ),
            (
                &keys::REQUEST_PERIOD_IN_SECONDS,
                svc.period_secs.to_string(),
            ),
            (&keys::WINDOW_IN_SECONDS, svc.window_secs.to_string()),
            (
                &keys::OVERRIDE_TIME_DELAY_IN_SECONDS,
                svc.delay_secs.to_string(),
            ),
            (
                &keys::FIRST_PASS_DELAY_IN_SECONDS,
                svc.first_pass_delay_secs.to_string(),
            ),
            (
                &keys::MAX_REQUESTS_PER_5_MINUTES,
                svc.max_requests_per_5_minutes.to_string(),
            ),
            (&keys::OVERRIDE_BASE_AUTH_URL, svc.auth_url.clone()),
            (&keys::OVERRIDE_BASE_RESOURCE_URL, svc.resource_url.clone()),
        ];
        for (row, actual) in by_row {
            assert_eq!(*actual, row.default_text(), "{}", row.name);
        }
        assert_eq!(
            svc.reporting_url,
            format!("{DEFAULT_BASE_URL}{REPORTING_PATH}")
        );
        assert_eq!(svc.graph_url, format!("{DEFAULT_GRAPH_URL}{GRAPH_PATH}"));
        assert_eq!(svc.reset_persistence_auth, None);
        assert_eq!(svc.ca_file, None);
        for k in SERVICE_KEYS {
            let (lo, hi, step) = match k.kind {
                Kind::Int { min, max, .. } => {
                    (min.to_string(), max.to_string(), (min - 1, max + 1))
                }
                Kind::Float { min, max, .. } => (
                    min.to_string(),
                    max.to_string(),
                    (min as i64 - 1, max as i64 + 1),
                ),
                _ => continue,
            };
            for ok in [lo, hi] {
                assert!(
                    with_service_key(&format!("{}: {ok}", k.name)).is_ok(),
                    "{} {ok}",
                    k.name
                );
            }
            for bad in [step.0, step.1] {
                let Err(Error::Config(lines)) = with_service_key(&format!("{}: {bad}", k.name))
                else {
                    panic!("{} accepts {bad}", k.name)
                };
                assert!(
                    lines[0].contains(k.name) && lines[0].contains("out of range"),
                    "{lines:?}"
                );
                if let Some(code) = k.codes.bad_value {
                    assert!(
                        lines[0].contains(&format!("InitVariablesError({code})")),
                        "{lines:?}"
                    );
                }
            }
        }
    }
}
