//! OAuth2 client credentials against Microsoft Entra ID, and the token's claims.
//!
//! Owns: the token request (endpoint and `resource`/`scope` asked of `source::Api`),
//! keeping the token in memory, the renewal rule, SetupError 100/101/102, and reading
//! `roles` out of the JWT for `check`. Must not:
//! log or return the secret or the token — errors carry Microsoft's `error` and
//! `error_description` only.

use miniserde::json::{self, Value};

use crate::config::Credentials;
use crate::error::{Error, Result};
use crate::http;
use crate::source::Api;

/// Renew when less than this much of the token's life is left…
pub const RENEW_MARGIN_SECS: i64 = 300;

/// A token and when it stops being usable (epoch seconds of the caller's clock).
#[derive(Clone)]
struct Token {
    access: String,
    obtained_at: i64,
    expires_at: i64,
}

/// One tenant's token source.
pub struct TokenClient {
    api: Api,
    token_url: String,
    resource_url: String,
    creds: Credentials,
    token: Option<Token>,
}

/// What a token request returned, for logs: when it expires and from where.
#[derive(Debug, Clone)]
pub struct Obtained {
    pub url: String,
    pub expires_in: i64,
}

impl TokenClient {
    /// `auth_url` is scheme+host (`https://login.microsoftonline.com`).
    pub fn new(api: Api, auth_url: &str, resource_url: &str, creds: Credentials) -> Self {
        let token_url = api.token_url(auth_url, creds.tenant_id.expose());
        crate::log::register_secret(creds.client_secret.expose());
        TokenClient {
            api,
            token_url,
            resource_url: resource_url.trim_end_matches('/').to_string(),
            creds,
            token: None,
        }
    }

    /// The token URL with the tenant obfuscated, for logs.
    pub fn display_url(&self) -> String {
        let tenant = self.creds.tenant_id.expose();
        if tenant.is_empty() {
            return self.token_url.clone();
        }
        self.token_url
            .replace(tenant, &self.creds.tenant_id.obfuscated())
    }

    /// True when there is a token that needs no renewal at `now`. The margin is 5
    /// minutes, or half the token's lifetime for short-lived tokens.
    pub fn is_fresh(&self, now: i64) -> bool {
        match &self.token {
            None => false,
            Some(t) => {
                let lifetime = t.expires_at.saturating_sub(t.obtained_at).max(0);
                let margin = RENEW_MARGIN_SECS.min(lifetime.checked_div(2).unwrap_or(0));
                now < t.expires_at.saturating_sub(margin)
            }
        }
    }

    /// Forget the token (after a 401 on a data request).
    pub fn invalidate(&mut self) {
        self.token = None;
    }

    /// The current token, fetching a new one when missing or near expiry. Returns
    /// `Some(Obtained)` as second value when a request was made.
    pub fn token(&mut self, agent: &ureq::Agent, now: i64) -> Result<(String, Option<Obtained>)> {
        if self.is_fresh(now) {
            if let Some(t) = &self.token {
                return Ok((t.access.clone(), None));
            }
        }
        let (access, expires_in) = self.fetch(agent)?;
        crate::log::register_token(&access);
        self.token = Some(Token {
            access: access.clone(),
            obtained_at: now,
            expires_at: now.saturating_add(expires_in),
        });
        Ok((
            access,
            Some(Obtained {
                url: self.display_url(),
                expires_in,
            }),
        ))
    }

    fn fetch(&self, agent: &ureq::Agent) -> Result<(String, i64)> {
        let grant = [
            ("grant_type", "client_credentials"),
            ("client_id", self.creds.client_id.expose()),
            ("client_secret", self.creds.client_secret.expose()),
        ];
        let extra = self.api.token_audience(&self.resource_url);
        let resp = agent
            .post(&self.token_url)
            .header("Accept", "application/json")
            .send_form(grant.iter().copied().chain(std::iter::once(extra)))
            .map_err(http::transport)?;
        let status = resp.status().as_u16();
        let retry_after = http::retry_after(&resp);
        if let Some(to) = http::redirect_target(&resp) {
            return Err(Error::Setup {
                code: 101,
                message: format!("the token endpoint answered {status}, a {to}"),
                fix: "check tenant_id and override_base_auth_url",
            });
        }
        let (body, over) = http::read_bounded(resp);
        let text = String::from_utf8_lossy(&body);
        match status {
            200 if over => Err(Error::Setup {
                code: 102,
                message: format!(
                    "the token endpoint answered 200 with a body over the {} KiB limit of a token answer",
                    http::MAX_ERROR_BODY / 1024
                ),
                fix: "the endpoint may not be Microsoft's: check override_base_auth_url",
            }),
            200 => parse_token_answer(&text),
            401 => Err(Error::Setup {
                code: 100,
                message: format!(
                    "the token endpoint refused the credentials (401): {}",
                    describe_oauth_error(&text)
                ),
                fix: "check client_id and client_secret, and that the secret has not expired",
            }),
            429 | 500..=599 => Err(Error::Http {
                status,
                message: format!("token endpoint: {}", describe_oauth_error(&text)),
                retry_after,
            }),
            _ => Err(Error::Setup {
                code: 101,
                message: format!(
                    "unexpected status {status} from the token endpoint: {}",
                    describe_oauth_error(&text)
                ),
                fix: "check tenant_id and override_base_auth_url",
            }),
        }
    }
}

/// `access_token` and `expires_in` (a string in v1 answers, a number in v2).
pub fn parse_token_answer(body: &str) -> Result<(String, i64)> {
    let no_token = |why: &str| Error::Setup {
        code: 102,
        message: format!("the token endpoint answered 200 but {why}"),
        fix: "the endpoint may not be Microsoft's: check override_base_auth_url",
    };
    let value: Value = json::from_str(body).map_err(|_| no_token("not with JSON"))?;
    let Value::Object(obj) = value else {
        return Err(no_token("not with a JSON object"));
    };
    let access = match obj.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(no_token("without a usable access_token")),
    };
    let expires_in = match obj.get("expires_in") {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(Value::Number(n)) => n.to_string().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
    .unwrap_or(3599)
    .clamp(1, 86_400 * 7);
    Ok((access, expires_in))
}

/// Microsoft's `error: error_description` from an OAuth error body (first line only:
/// the description's trace/correlation ids follow on later lines), sanitised: the
/// endpoint may echo the posted form with the client secret (SPEC §10).
pub fn describe_oauth_error(body: &str) -> String {
    crate::log::sanitize_remote(&oauth_error_text(body))
}

fn oauth_error_text(body: &str) -> String {
    let Ok(Value::Object(obj)) = json::from_str::<Value>(body) else {
        let t = body.trim();
        return if t.is_empty() {
            "(empty answer)".to_string()
        } else {
            // Not cut here: `sanitize_remote` cuts after removing secrets.
            t.to_string()
        };
    };
    let field = |k: &str| match obj.get(k) {
        Some(Value::String(s)) => s.lines().next().unwrap_or("").trim().to_string(),
        _ => String::new(),
    };
    let (e, d) = (field("error"), field("error_description"));
    match (e.is_empty(), d.is_empty()) {
        (false, false) => format!("{e}: {d}"),
        (false, true) => e,
        (true, false) => d,
        (true, true) => "(no error text)".to_string(),
    }
}

/// The `roles` claim of a JWT access token (empty when absent or unreadable).
pub fn token_roles(token: &str) -> Vec<String> {
    let Some(payload) = token.split('.').nth(1) else {
        return Vec::new();
    };
    let Some(bytes) = base64url_decode(payload) else {
        return Vec::new();
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Vec::new();
    };
    let Ok(Value::Object(obj)) = json::from_str::<Value>(&text) else {
        return Vec::new();
    };
    match obj.get("roles") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Base64url without padding (padding tolerated), as JWT segments use it.
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len().saturating_mul(3).checked_div(4).unwrap_or(0));
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c.wrapping_sub(b'A'),
            b'a'..=b'z' => c.wrapping_sub(b'a').wrapping_add(26),
            b'0'..=b'9' => c.wrapping_sub(b'0').wrapping_add(52),
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        // `acc` keeps fewer than 8 pending bits, so shifting in 6 more never overflows.
        acc = (acc << 6) | u32::from(v);
        bits = bits.wrapping_add(6);
        if bits >= 8 {
            bits = bits.wrapping_sub(8);
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap_or(0));
            acc &= (1u32 << bits).wrapping_sub(1);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn creds() -> Credentials {
        Credentials {
            tenant_id: Secret::new("tenant-1234"),
            client_id: Secret::new("client"),
            client_secret: Secret::new("supersecret"),
        }
    }

    #[test]
    fn token_answer_v1_and_v2() {
        let (t, e) = parse_token_answer(
            r#"{"token_type":"Bearer","expires_in":"3599","access_token":"abc"}"#,
        )
        .unwrap();
        assert_eq!((t.as_str(), e), ("abc", 3599));
        let (_, e) = parse_token_answer(r#"{"expires_in":20,"access_token":"abc"}"#).unwrap();
        assert_eq!(e, 20);
        let err = parse_token_answer(r#"{"expires_in":20}"#).unwrap_err();
        assert!(matches!(err, Error::Setup { code: 102, .. }));
        assert!(matches!(
            parse_token_answer("<html>"),
            Err(Error::Setup { code: 102, .. })
        ));
    }

    #[test]
    fn renewal_margin_is_five_minutes_or_half_life() {
        let mut c = TokenClient::new(
            Api::Reporting,
            "https://login.example",
            "https://outlook.office365.com",
            creds(),
        );
        assert!(!c.is_fresh(0));
        c.token = Some(Token {
            access: "x".into(),
            obtained_at: 0,
            expires_at: 3600,
        });
        assert!(c.is_fresh(3299));
        assert!(!c.is_fresh(3300));
        c.token = Some(Token {
            access: "x".into(),
            obtained_at: 0,
            expires_at: 20,
        });
        assert!(c.is_fresh(9));
        assert!(!c.is_fresh(10));
    }

    #[test]
    fn urls_and_obfuscation() {
        let c = TokenClient::new(Api::Graph, "https://login.example/", "r", creds());
        assert_eq!(
            c.token_url,
            "https://login.example/tenant-1234/oauth2/v2.0/token"
        );
        assert_eq!(
            c.display_url(),
            "https://login.example/tena****/oauth2/v2.0/token"
        );
    }

    #[test]
    fn roles_from_jwt() {
        // {"roles":["ReportingWebService.Read.All"]}
        let payload = "eyJyb2xlcyI6WyJSZXBvcnRpbmdXZWJTZXJ2aWNlLlJlYWQuQWxsIl19";
        let tok = format!("e30.{payload}.sig");
        assert_eq!(
            token_roles(&tok),
            vec!["ReportingWebService.Read.All".to_string()]
        );
        assert!(token_roles("garbage").is_empty());
        assert!(token_roles("a.!!!.c").is_empty());
    }

    #[test]
    fn oauth_error_text() {
        let d = describe_oauth_error(
            r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x"}"#,
        );
        assert_eq!(
            d,
            "invalid_client: AADSTS7000215: Invalid client secret provided."
        );
    }
}
