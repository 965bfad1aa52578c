//! The emulator's `getDetailsByRecipient` endpoint (Graph trace details): the detail
//! events of every record served in a Graph page, with the Graph faults.
//!
//! Owns: parsing the OData function call and rendering the answer. Must not: touch
//! sockets or the budget (routes.rs counts every Graph request before calling here).

use std::fmt::Write as _;

use super::data::json_str;
use super::http::{Request, Response};
use super::routes::{cut_point, decide, graph_error, json, storm, Fault};
use super::Shared;

/// `GET …/messageTraces/{id}/getDetailsByRecipient(recipientAddress='{address}')` (the
/// path already percent-decoded; `''` is a `'`): the record's detail events, 404 for a
/// record never served in a Graph page, with the Graph faults (429, 503, cut body).
pub fn answer(
    sh: &Shared,
    ti: usize,
    tenant: &str,
    req: &Request,
    rest: &str,
    faults: &super::Faults,
) -> Response {
    const FUNC: &str = "getdetailsbyrecipient(recipientaddress='";
    let Some((id, call)) = rest.trim_start_matches('/').split_once('/') else {
        return graph_error(
            400,
            "BadRequest",
            "Resource not found for the segment 'messageTraces'.",
        );
    };
    let arg = call
        .to_lowercase()
        .starts_with(FUNC)
        .then(|| call.get(FUNC.len()..))
        .flatten()
        .and_then(|a| a.strip_suffix("')"));
    let Some(arg) = arg else {
        return graph_error(
            400,
            "BadRequest",
            "Expected getDetailsByRecipient(recipientAddress='…').",
        );
    };
    // A lone `'` inside the literal is a syntax error in OData; `''` is one quote.
    if arg.replace("''", "").contains('\'') {
        return graph_error(
            400,
            "BadRequest",
            "Syntax error: unterminated string literal.",
        );
    }
    let recipient = arg.replace("''", "'");
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
            return graph_error(429, "TooManyRequests", "Too many requests.")
                .with_header("Retry-After", faults.retry_after_secs.to_string())
        }
        Fault::Unavailable => {
            return graph_error(
                503,
                "ServiceUnavailable",
                "The service is temporarily unavailable.",
            )
        }
        _ => {}
    }
    let found = sh
        .lock()
        .graph_served
        .get(&(ti, id.to_string(), recipient.to_lowercase()))
        .copied();
    let Some((rec, status)) = found else {
        return graph_error(404, "NotFound", "The message trace was not found.");
    };
    let mut j = String::from("{\"@odata.context\":\"https://graph.microsoft.com/v1.0/$metadata#Collection(microsoft.graph.exchangeMessageTraceDetail)\",\"value\":[");
    let events = super::data::detail_events(id, &recipient, rec.secs, status);
    for (i, e) in events.iter().enumerate() {
        // Raw UTF-8 and \u escapes alternate event by event.
        let v = (i % 2) as u8;
        if i > 0 {
            j.push(',');
        }
        j.push_str("{\"id\":");
        json_str(id, v, &mut j);
        let _ = write!(
            j,
            ",\"messageId\":\"<m-{}@emulator>\",\"dateTime\":\"{}\",\"event\":",
            rec.msg, e.date
        );
        json_str(&e.event, v, &mut j);
        j.push_str(",\"action\":");
        match &e.action {
            Some(a) => json_str(a, v, &mut j),
            None => j.push_str("null"),
        }
        j.push_str(",\"description\":");
        json_str(&e.description, v, &mut j);
        j.push_str(",\"data\":");
        json_str(&e.data, v, &mut j);
        j.push('}');
    }
    j.push_str("]}");
    let mut resp = json(200, j);
    if fault == Fault::Cut {
        resp.cut_at = Some(cut_point(&resp.body, b"{\"id\":"));
    } else {
        sh.lock()
            .details_served
            .push((tenant.to_string(), id.to_string(), recipient));
    }
    resp
}
