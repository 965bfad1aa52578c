//! Levelled log lines on stderr: `LEVEL Component -> message`, as the vendor's collector
//! writes them (SPEC §7), and the one chokepoint that keeps secrets out of them (§10).
//!
//! Owns: the line format, the DEBUG switch (`globals.debug`), one write per line so
//! lines of concurrent workers never interleave, the registry of secrets (client secrets
//! from the config, every access token when obtained) that every line is scrubbed
//! against, and [`sanitize_remote`], which every piece of remote text (an error body, an
//! OAuth description) goes through before it enters an `Error`. Must not: be handed
//! secrets on purpose — callers still pass obfuscated values (`config::obfuscate`); the
//! scrubbing is the net under that, not a licence. `scrub_url` drops query secrets.

use std::collections::VecDeque;
use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Secrets never to print: config secrets (kept for the process's life) and recent
/// access tokens (a bounded ring: older tokens have expired, and the JWT rule below
/// still catches their shape).
struct Registry {
    fixed: Vec<String>,
    tokens: VecDeque<String>,
}

static SECRETS: RwLock<Registry> = RwLock::new(Registry {
    fixed: Vec::new(),
    tokens: VecDeque::new(),
});

/// Shorter values are not registered: scrubbing a 3-character secret would mangle
/// every line, and such a secret is not one (Entra secrets are 40 characters).
pub const MIN_SECRET_LEN: usize = 6;
/// Most config secrets remembered (one per tenant; far above any deployment).
pub const MAX_FIXED_SECRETS: usize = 10_000;
/// Most access tokens remembered: a few renewals of each of ~100 tenants.
pub const MAX_TOKENS: usize = 512;
/// What a removed secret is replaced with.
pub const REDACTED: &str = "****";
/// Remote text kept in an error (characters, after sanitising): Microsoft's messages
/// are one sentence; a page of echo is not worth logging.
pub const MAX_REMOTE_CHARS: usize = 600;

/// Log levels in the vendor's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

/// Turn DEBUG lines on or off (`globals.debug`).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// The forms a secret can take in remote text: as is, and percent-encoded the ways a
/// form or a URL encodes it (a token endpoint echoing the posted form shows
/// `client_secret=` encoded; encoders differ on `~`, `*` and the space).
fn forms(secret: &str) -> Vec<String> {
    let encode = |keep: &[u8], space_plus: bool| {
        let mut enc = String::with_capacity(secret.len());
        for b in secret.bytes() {
            if b.is_ascii_alphanumeric() || keep.contains(&b) {
                enc.push(char::from(b));
            } else if b == b' ' && space_plus {
                enc.push('+');
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        enc
    };
    let mut out = vec![secret.to_owned()];
    for f in [
        encode(b"-._*", true),
        encode(b"-._~", false),
        encode(b"-._~", true),
    ] {
        if !out.contains(&f) {
            out.push(f);
        }
    }
    out
}

fn registry_write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    SECRETS.write().unwrap_or_else(|p| p.into_inner())
}

/// Remember a secret from the config (a client secret) for the process's life.
pub fn register_secret(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut r = registry_write();
    for f in forms(secret) {
        if !r.fixed.contains(&f) && r.fixed.len() < MAX_FIXED_SECRETS {
            r.fixed.push(f);
        }
    }
}

/// Remember an access token just obtained (bounded: the oldest is forgotten).
pub fn register_token(token: &str) {
    if token.len() < MIN_SECRET_LEN {
        return;
    }
    let mut r = registry_write();
    if r.tokens.iter().any(|t| t == token) {
        return;
    }
    if r.tokens.len() >= MAX_TOKENS {
        r.tokens.pop_front();
    }
    r.tokens.push_back(token.to_owned());
}

fn is_b64url(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A JWS (`h.p.s`) or JWE (five parts) in base64url: the header is JSON, so it starts
/// with `eyJ` (`{"`); without that, every part must be long (no host name matches).
fn looks_like_jwt(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    if !(parts.len() == 3 || parts.len() == 5) {
        return false;
    }
    if !parts.iter().all(|p| p.chars().all(is_b64url)) {
        return false;
    }
    let first = parts.first().copied().unwrap_or("");
    let second = parts.get(1).copied().unwrap_or("");
    (first.starts_with("eyJ") && second.len() >= 4) || parts.iter().all(|p| p.len() >= 16)
}

/// Replace `Bearer <token>`, JWT-shaped words and `client_secret=<value>` /
/// `access_token=<value>` parameters with [`REDACTED`].
fn redact_shapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut after_bearer = false;
    while !rest.is_empty() {
        // Split off the next run of token characters (base64url, dots, `=`, `%`, `+`, `/`).
        let is_tok = |c: char| is_b64url(c) || matches!(c, '.' | '=' | '%' | '+' | '/' | '~');
        let start = rest.find(is_tok).unwrap_or(rest.len());
        let (gap, tail) = rest.split_at(start);
        out.push_str(gap);
        if !gap.is_empty() && !gap.chars().all(|c| c == ' ' || c == '\t') {
            after_bearer = false;
        }
        let end = tail.find(|c: char| !is_tok(c)).unwrap_or(tail.len());
        let (word, next) = tail.split_at(end);
        rest = next;
        if word.is_empty() {
            continue;
        }
        if after_bearer {
            out.push_str(REDACTED);
            after_bearer = false;
            continue;
        }
        if word
            .rsplit(['=', '/'])
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("bearer"))
        {
            out.push_str(word);
            after_bearer = true;
            continue;
        }
        let lower = word.to_ascii_lowercase();
        let param = [
            "client_secret=",
            "access_token=",
            "refresh_token=",
            "client_assertion=",
        ]
        .iter()
        .find(|p| lower.contains(*p));
        let value_follows = |p: &&&str| {
            let at = lower.find(**p).unwrap_or(0).saturating_add(p.len());
            word.get(at..)
                .is_some_and(|v| !v.is_empty() && !v.starts_with('&'))
        };
        // An empty value (already redacted: `****` is not a token character) stays.
        if let Some(p) = param.filter(value_follows) {
            // Keep what precedes the parameter, cut its value at the next `&`.
            let at = lower.find(*p).unwrap_or(0).saturating_add(p.len());
            let head = word.get(..at).unwrap_or("");
            let tail_val = word.get(at..).unwrap_or("");
            out.push_str(head);
            out.push_str(REDACTED);
            if let Some(amp) = tail_val.find('&') {
                out.push_str(&redact_shapes(tail_val.get(amp..).unwrap_or("")));
            }
            continue;
        }
        // `x=<jwt>` or `<jwt>.`: look at each `=`-separated piece, trimmed of punctuation.
        for (i, piece) in word.split('=').enumerate() {
            if i > 0 {
                out.push('=');
            }
            let bare = piece.trim_matches(|c| matches!(c, '.' | '/'));
            if looks_like_jwt(bare) {
                out.push_str(&piece.replace(bare, REDACTED));
            } else {
                out.push_str(piece);
            }
        }
    }
    out
}

/// Remove every registered secret, bearer token and JWT-shaped word from `text`, and
/// escape control characters (`\r`, ESC of ANSI sequences, …) as `\u{..}`/`\r`/`\t`;
/// newlines are escaped as `\n` too. What every log line and every piece of remote text
/// goes through.
pub fn scrub(text: &str) -> String {
    let mut s = redact_shapes(text);
    {
        let r = SECRETS.read().unwrap_or_else(|p| p.into_inner());
        for secret in r.fixed.iter().chain(r.tokens.iter()) {
            if s.contains(secret.as_str()) {
                s = s.replace(secret.as_str(), REDACTED);
            }
        }
    }
    if !s.chars().any(char::is_control) {
        return s;
    }
    let mut out = String::with_capacity(s.len().saturating_add(8));
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Remote text (an error body, an OAuth `error_description`) made fit for an `Error`
/// and a log line: [`scrub`]bed and cut to [`MAX_REMOTE_CHARS`] characters.
pub fn sanitize_remote(text: &str) -> String {
    let clean = scrub(text.trim());
    if clean.chars().count() <= MAX_REMOTE_CHARS {
        return clean;
    }
    let mut cut: String = clean.chars().take(MAX_REMOTE_CHARS).collect();
    cut.push('…');
    cut
}

/// Render one line (without writing it): `LEVEL Component -> message`, scrubbed.
pub fn render(level: Level, component: &str, args: Arguments<'_>) -> String {
    let msg = args.to_string();
    // One event per line: a message with a newline (a multi-line error) is folded.
    let folded = if msg.contains('\n') {
        msg.replace('\n', " | ")
    } else {
        msg
    };
    let mut line = format!("{} {} -> {}", level.as_str(), component, scrub(&folded));
    line.push('\n');
    line
}

/// Write one line to stderr in a single call.
pub fn write(level: Level, component: &str, args: Arguments<'_>) {
    if level == Level::Debug && !debug_enabled() {
        return;
    }
    let line = render(level, component, args);
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A URL for DEBUG lines: query parameters that could carry secrets are cut.
pub fn scrub_url(url: &str) -> String {
    const SECRET_PARAMS: [&str; 4] = ["client_secret", "access_token", "code", "sig"];
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<String> = query
        .split('&')
        .map(|kv| {
            let name = kv.split('=').next().unwrap_or("");
            if SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s)) {
                format!("{name}=****")
            } else {
                kv.to_string()
            }
        })
        .collect();
    format!("{base}?{}", kept.join("&"))
}

#[macro_export]
macro_rules! info {
    ($comp:expr, $($arg:tt)*) => { $crate::log::write($crate::log::Level::Info, &$comp, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! warning {
    ($comp:expr, $($arg:tt)*) => { $crate::log::write($crate::log::Level::Warning, &$comp, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! error {
    ($comp:expr, $($arg:tt)*) => { $crate::log::write($crate::log::Level::Error, &$comp, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! debug {
    ($comp:expr, $($arg:tt)*) => {
        if $crate::log::debug_enabled() {
            $crate::log::write($crate::log::Level::Debug, &$comp, format_args!($($arg)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format_matches_vendor() {
        let l = render(
            Level::Info,
            "InputProcess::MainThread",
            format_args!("Starting {}", 1),
        );
        assert_eq!(l, "INFO InputProcess::MainThread -> Starting 1\n");
        let l = render(Level::Error, "X", format_args!("a\nb"));
        assert_eq!(l, "ERROR X -> a | b\n");
    }

    #[test]
    fn registered_secrets_and_tokens_are_removed_in_both_forms() {
        register_secret("s3cr~t+with/odd&chars=1");
        register_secret("abc"); // too short: not registered, lines stay readable
        register_token("opaque-token-0123456789");
        let line = render(
            Level::Error,
            "C",
            format_args!(
                "echo: grant_type=client_credentials&client_id=x&secret=s3cr~t%2Bwith%2Fodd%26chars%3D1 raw s3cr~t+with/odd&chars=1 tok opaque-token-0123456789 abc"
            ),
        );
        assert!(!line.contains("s3cr"), "{line}");
        assert!(!line.contains("opaque-token"), "{line}");
        assert!(line.contains("abc"), "{line}");
        assert!(line.contains("client_id=x"), "{line}");
    }

    #[test]
    fn bearer_jwt_and_form_secrets_are_removed_without_registration() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJl";
        let cases = [
            (
                format!("Authorization: Bearer {jwt}\r\nHost: x"),
                "Authorization: Bearer ****\\r\\nHost: x",
            ),
            (
                "authorization: bearer abc.def-ghi".to_string(),
                "authorization: bearer ****",
            ),
            (format!("token={jwt}."), "token=****."),
            (
                "grant_type=client_credentials&client_secret=Zx8Q~abc&scope=s".to_string(),
                "grant_type=client_credentials&client_secret=****&scope=s",
            ),
            (
                "\"client_secret=pa%20ss\"".to_string(),
                "\"client_secret=****\"",
            ),
            (
                "x ACCESS_TOKEN=abc&y=1".to_string(),
                "x ACCESS_TOKEN=****&y=1",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize_remote(&input), want, "{input}");
        }
        // Host names, versions, dates and URLs are not token-shaped.
        for keep in [
            "login.microsoftonline.com",
            "reports.office365.com:443",
            "127.0.0.1",
            "v1.2.3",
            "2026-12-02T10:00:00.1234567Z",
            "https://graph.microsoft.com/v1.0/admin/exchange/tracing/messageTraces?$skiptoken=RU1VX1",
            "AADSTS7000215: Invalid client secret provided.",
        ] {
            assert_eq!(sanitize_remote(keep), keep);
        }
    }

    #[test]
    fn scrubbing_twice_changes_nothing() {
        let once = sanitize_remote("a&client_secret=xyz123&b=Bearer q.w.e \x1b x");
        assert_eq!(scrub(&once), once);
        assert_eq!(once, "a&client_secret=****&b=Bearer **** \\u{1b} x");
    }

    #[test]
    fn control_characters_are_escaped_and_text_bounded() {
        assert_eq!(
            sanitize_remote("a\r\x1b[31mred\x1b[0m\tb\u{85}c"),
            "a\\r\\u{1b}[31mred\\u{1b}[0m\\tb\\u{85}c"
        );
        let line = render(Level::Warning, "C", format_args!("x\ry\nz"));
        assert_eq!(line, "WARNING C -> x\\ry | z\n");
        let long = "é".repeat(5000);
        let cut = sanitize_remote(&long);
        assert_eq!(cut.chars().count(), MAX_REMOTE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn token_ring_is_bounded() {
        for i in 0..(MAX_TOKENS + 10) {
            register_token(&format!("ring-token-{i:06}"));
        }
        let r = SECRETS.read().unwrap();
        assert!(r.tokens.len() <= MAX_TOKENS);
        assert!(!r.tokens.iter().any(|t| t == "ring-token-000000"));
    }

    #[test]
    fn scrubs_secret_params() {
        assert_eq!(
            scrub_url("https://h/p?a=1&client_secret=abc&b=2"),
            "https://h/p?a=1&client_secret=****&b=2"
        );
        assert_eq!(scrub_url("https://h/p"), "https://h/p");
    }
}
