//! The one error type of msgtrace.
//!
//! Owns: every failure a caller can see, its rendering (`a: b: c` context chains,
//! lowercase, naming the thing and the fix) and its classification
//! (`is_transient`, `exit_code`). Must not: carry a secret in any variant — callers
//! obfuscate credentials before they build an error.

use std::fmt;
use std::io;

/// Everything that can go wrong, in one enum (ureq, xsv). Hand-written Display/From.
#[derive(Debug)]
pub enum Error {
    /// Bad command line usage (exit 1).
    Usage(String),
    /// One or more configuration mistakes, each already rendered as
    /// `file:line:col: InitVariablesError(<code>): <key>: <what> — <fix>` (exit 2).
    Config(Vec<String>),
    /// SetupError 100/101/102 from the token endpoint, with Microsoft's text and the
    /// fix (exit 2).
    Setup {
        code: u16,
        message: String,
        fix: &'static str,
    },
    /// An HTTP answer with an unexpected status. `retry_after` in seconds when the server gave one.
    Http {
        status: u16,
        message: String,
        retry_after: Option<u64>,
    },
    /// The Reporting Web Service no longer serves message trace for the tenant
    /// (Microsoft's retirement answer); `fix` says how to move to Graph.
    Retired {
        status: u16,
        message: String,
        fix: &'static str,
    },
    /// Graph's 401 "Service principal-less authentication failed": the tenant lacks
    /// the service principal of Exchange message trace.
    ServicePrincipal,
    /// The app may not read message trace (403, "No permission"): a role is missing.
    Denied { status: u16, message: String },
    /// Connect, TLS or read failure talking to Microsoft or a receiver (transient).
    Transport(String),
    /// A malformed API answer (XML/JSON) — logged and the page retried, never skipped.
    Malformed(String),
    /// A TLS or certificate problem that will not fix itself (bad PEM, key mismatch, …).
    Tls(String),
    /// An output could not take events; `transient` says whether reconnecting may help.
    Output { message: String, transient: bool },
    /// The state file cannot be written or synced: fatal (exit 3).
    State(String),
    /// Filesystem error with the path it concerns.
    Io { path: String, source: io::Error },
    /// Shutdown was requested while waiting.
    Interrupted,
    /// `context: inner`.
    Context(String, Box<Error>),
}

impl Error {
    /// Wrap with a context prefix, rendered `context: inner`.
    pub fn context(self, ctx: impl Into<String>) -> Error {
        Error::Context(ctx.into(), Box::new(self))
    }

    /// The innermost error, below all context layers.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context(_, inner) => inner.root(),
            other => other,
        }
    }

    /// True when retrying later may succeed (network, 429, 5xx, receiver away).
    pub fn is_transient(&self) -> bool {
        match self.root() {
            Error::Transport(_) | Error::Malformed(_) | Error::Interrupted => true,
            Error::Http { status, .. } => *status == 429 || *status >= 500 || *status == 408,
            Error::Output { transient, .. } => *transient,
            _ => false,
        }
    }

    /// Process exit code per SPEC §1: 1 usage, 2 config/setup, 3 fatal runtime.
    pub fn exit_code(&self) -> u8 {
        match self.root() {
            Error::Usage(_) => 1,
            Error::Config(_) | Error::Setup { .. } | Error::Tls(_) => 2,
            Error::Interrupted => 0,
            _ => 3,
        }
    }

    /// The HTTP status of an answer that failed, if the error is one.
    pub fn status(&self) -> Option<u16> {
        match self.root() {
            Error::Http { status, .. }
            | Error::Retired { status, .. }
            | Error::Denied { status, .. } => Some(*status),
            Error::ServicePrincipal => Some(401),
            _ => None,
        }
    }

    /// The `Retry-After` seconds of an HTTP answer that gave one.
    pub fn retry_after(&self) -> Option<u64> {
        match self.root() {
            Error::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// True when no answer came at all (connect, TLS, timeout, cut body).
    pub fn is_transport(&self) -> bool {
        matches!(self.root(), Error::Transport(_))
    }

    /// True for a credentials problem found at the token endpoint (SetupError).
    pub fn is_setup(&self) -> bool {
        matches!(self.root(), Error::Setup { .. })
    }

    /// The fix this error names, when it knows one; `Display` appends it after ` — `.
    pub fn fix(&self) -> Option<&'static str> {
        match self.root() {
            Error::Setup { fix, .. } | Error::Retired { fix, .. } => Some(fix),
            Error::ServicePrincipal => Some(SP_FIX),
            Error::Denied { .. } => Some(DENIED_FIX),
            _ => None,
        }
    }

    /// The error rendered without its fix (`check` shows the fix in its own column).
    pub fn headline(&self) -> String {
        struct Head<'a>(&'a Error);
        impl fmt::Display for Head<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt_head(f)
            }
        }
        Head(self).to_string()
    }

    pub fn io(path: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// What a tenant admin does when Graph's service principal is missing.
const SP_FIX: &str = "a tenant admin runs once: New-MgServicePrincipal -AppId 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373 (or az ad sp create --id 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373), then grant admin consent again";
/// What fixes a 403 / "No permission" answer.
const DENIED_FIX: &str =
    "assign the app the Global Reader role (Entra ID → Roles and administrators)";

impl Error {
    /// Everything of `Display` but the ` — fix` tail.
    fn fmt_head(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(f, "usage: {m}"),
            Error::Config(list) => {
                for (i, line) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    f.write_str(line)?;
                }
                Ok(())
            }
            Error::Setup { code, message, .. } => write!(f, "SetupError({code}): {message}"),
            Error::Retired {
                status, message, ..
            }
            | Error::Denied { status, message } => write!(f, "http status {status}: {message}"),
            Error::ServicePrincipal => f.write_str(
                "Graph answered 401 \"Service principal-less authentication failed\": the tenant has not provisioned the service principal of Exchange message trace (app 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373)",
            ),
            Error::Http {
                status, message, ..
            } => {
                if message.is_empty() {
                    write!(f, "http status {status}")
                } else {
                    write!(f, "http status {status}: {message}")
                }
            }
            Error::Transport(m) => write!(f, "transport error: {m}"),
            Error::Malformed(m) => write!(f, "malformed answer: {m}"),
            Error::Tls(m) => write!(f, "tls: {m}"),
            Error::Output { message, .. } => f.write_str(message),
            Error::State(m) => write!(f, "state: {m}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Interrupted => f.write_str("interrupted by shutdown"),
            Error::Context(ctx, inner) => {
                write!(f, "{ctx}: ")?;
                inner.fmt_head(f)
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_head(f)?;
        match self.fix() {
            Some(fix) => write!(f, " — {fix}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_pinned() {
        // Keep the error small: it travels through every `?`.
        assert!(
            std::mem::size_of::<Error>() <= 56,
            "{}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn typed_fixes_render_once_and_classify() {
        let e = Error::Setup {
            code: 100,
            message: "refused".into(),
            fix: "check client_id",
        }
        .context("token request");
        assert_eq!(
            e.to_string(),
            "token request: SetupError(100): refused — check client_id"
        );
        assert_eq!(e.headline(), "token request: SetupError(100): refused");
        assert_eq!(e.fix(), Some("check client_id"));
        assert!(e.is_setup() && e.exit_code() == 2 && !e.is_transient());
        let sp = Error::ServicePrincipal;
        assert_eq!(sp.status(), Some(401));
        assert!(sp.to_string().contains("New-MgServicePrincipal"));
        assert_eq!(sp.exit_code(), 3);
        let d = Error::Denied {
            status: 403,
            message: "No permission".into(),
        };
        assert_eq!(d.headline(), "http status 403: No permission");
        assert!(!d.is_transient());
        let h = Error::Http {
            status: 429,
            message: String::new(),
            retry_after: Some(7),
        };
        assert_eq!(
            (h.fix(), h.retry_after(), h.status()),
            (None, Some(7), Some(429))
        );
    }

    #[test]
    fn context_chain_renders() {
        let e = Error::Transport("refused".into())
            .context("token")
            .context("tenant a");
        assert_eq!(e.to_string(), "tenant a: token: transport error: refused");
        assert!(e.is_transient());
    }
}
