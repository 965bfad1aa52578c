//! The origin rule for next links (SPEC §10): a next link (RWS `next`, `xml:base`, Graph
//! `@odata.nextLink`) is followed with the bearer token only when it keeps the scheme,
//! host and port of the request it came from.
//!
//! Owns: parsing the origin of an absolute URL (scheme and host lower-cased, default
//! ports made explicit) and the comparison. Must not: do IO, resolve relative links (the
//! scanners do, with `source::resolve_url`) or guess: anything it cannot read plainly —
//! user info (`user@host`), a backslash, a percent sign or whitespace in the authority, a
//! bad port — has no origin, so it is never the same origin as anything.

use std::fmt;

/// Scheme, host and port of an absolute URL, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// The port a scheme implies when none is written.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

/// The origin of `url`, or `None` when it is not an absolute `http(s)` URL with a plain
/// authority (see the module docs).
pub fn origin(url: &str) -> Option<Origin> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return None;
    }
    let scheme = scheme.to_ascii_lowercase();
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| matches!(c, '@' | '\\' | '%') || c.is_whitespace() || c.is_control())
    {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inside, after) = v6.split_once(']')?;
        if inside.is_empty()
            || !inside
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return None;
        }
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (format!("[{}]", inside.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        // Plain DNS names and IPv4 addresses only: nothing a resolver or a URL
        // parser could read another way.
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return None;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None | Some("") => default_port(&scheme)?,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => p.parse().ok()?,
        Some(_) => return None,
    };
    Some(Origin { scheme, host, port })
}

/// True when `link` may be followed with the credentials of `request_url`: both have
/// an origin and the two are equal.
pub fn same_origin(request_url: &str, link: &str) -> bool {
    match (origin(request_url), origin(link)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Why `link` must not be followed from `request_url`, in words naming the foreign
/// origin (`None` when it may be followed).
pub fn refusal(request_url: &str, link: &str) -> Option<String> {
    if same_origin(request_url, link) {
        return None;
    }
    let theirs = origin(link).map_or_else(
        || "a link without a plain origin".to_string(),
        |o| format!("the foreign origin {o}"),
    );
    let ours = origin(request_url).map_or_else(|| "?".to_string(), |o| o.to_string());
    Some(format!(
        "the next link points to {theirs}, not to {ours} where the page came from: not \
         followed (the token goes only to the configured origin)"
    ))
}

/// The properties the `next_link` fuzz target (and its stable replay) checks on one
/// input `base\nhref`: panics on a violation, never on odd input.
pub fn fuzz_check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (base, href) = text.split_once('\n').unwrap_or((&text, ""));
    let resolved = super::resolve_url(base, href);
    let ok = same_origin(base, &resolved);
    assert_eq!(ok, same_origin(&resolved, base), "not symmetric");
    assert_eq!(ok, refusal(base, &resolved).is_none());
    if let Some(o) = origin(base) {
        assert!(same_origin(base, base), "not reflexive");
        assert_eq!(o.scheme, o.scheme.to_ascii_lowercase());
        assert_eq!(o.host, o.host.to_ascii_lowercase());
        let path_or_query =
            (href.starts_with('/') && !href.starts_with("//")) || href.starts_with('?');
        let plain = !href.chars().any(|c| c.is_whitespace() || c.is_control());
        if path_or_query && plain {
            assert!(ok, "{base:?} + {href:?} = {resolved:?} left the origin");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "https://reports.office365.com/ecp/reportingwebservice/reporting.svc/MessageTrace?$filter=x";

    #[test]
    fn same_origin_normalises_case_and_default_ports() {
        for link in [
            "https://reports.office365.com/ecp/x?$skiptoken=1",
            "HTTPS://Reports.Office365.COM/ecp/x",
            "https://reports.office365.com:443/ecp/x",
            "https://reports.office365.com:/ecp/x",
            "https://reports.office365.com",
            "https://reports.office365.com?x",
            "https://reports.office365.com#f",
        ] {
            assert!(same_origin(REQ, link), "{link}");
            assert_eq!(refusal(REQ, link), None, "{link}");
        }
        assert!(same_origin(
            "https://127.0.0.1:8443/a",
            "https://127.0.0.1:8443/b?c"
        ));
        assert!(same_origin("https://[::1]:8443/a", "https://[::1]:8443/b"));
        assert!(same_origin("http://h/a", "http://h:80/b"));
    }

    #[test]
    fn other_scheme_host_port_or_unreadable_authority_is_foreign() {
        for link in [
            "http://reports.office365.com/ecp/x",
            "https://reports.office365.com:444/ecp/x",
            "https://reports.office365.com:8443/ecp/x",
            "https://evil.example/ecp/x",
            "https://reports.office365.com.evil.example/x",
            "https://reports.office365.com@evil.example/x",
            "https://evil.example\\@reports.office365.com/x",
            "https://reports.office365.com\\.evil.example/x",
            "https://reports.office365.com:443@evil.example/x",
            "https://reports.office365.com:99999/x",
            "https://reports.office365.com:+443/x",
            "https://reports.office365.com:0x1bb/x",
            "https://reports%2eoffice365.com/x",
            "https://reports.office365.com /x",
            "https:///x",
            "//reports.office365.com/x",
            "/ecp/x",
            "",
            "ftp://reports.office365.com/x",
            "https://[::1/x",
            "https://[]/x",
            "https://a:b:c/x",
        ] {
            assert!(!same_origin(REQ, link), "{link}");
            let why = refusal(REQ, link).unwrap_or_default();
            assert!(why.contains("not followed"), "{link}: {why}");
        }
        let why = refusal(REQ, "https://127.0.0.1:9/x").unwrap_or_default();
        assert!(why.contains("foreign origin https://127.0.0.1:9"), "{why}");
        assert!(why.contains("https://reports.office365.com:443"), "{why}");
    }

    #[test]
    fn fuzz_properties_hold_on_generated_links() {
        let bases = [
            REQ,
            "https://127.0.0.1:8443/a/b",
            "https://[::1]/x",
            "http://h",
            "nonsense",
        ];
        let hrefs = [
            "",
            "/",
            "?",
            "/x",
            "?$skiptoken=1",
            "//evil/x",
            "https://evil/",
            "../x",
            "/\\evil",
            "#f",
            "https://reports.office365.com:443/x",
            " /x",
            "/x\r\nHost: evil",
        ];
        for b in bases {
            for h in hrefs {
                fuzz_check(format!("{b}\n{h}").as_bytes());
            }
        }
    }

    #[test]
    fn origin_parts() {
        assert_eq!(
            origin("HTTPS://Graph.Microsoft.com/v1.0/x"),
            Some(Origin {
                scheme: "https".into(),
                host: "graph.microsoft.com".into(),
                port: 443
            })
        );
        assert_eq!(
            origin("https://[::1]:9/").map(|o| o.to_string()).as_deref(),
            Some("https://[::1]:9")
        );
        assert_eq!(origin("https://[::1]x/"), None);
        assert_eq!(origin("gopher://h/"), None);
    }
}
