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
    /// SetupError 100/101/102 from the token endpoint, with Microsoft's text (exit 2 in `check`).
    Setup { code: u16, message: String },
    /// An HTTP answer with an unexpected status. `retry_after` in seconds when the server gave one.
    Http {
        status: u16,
        message: String,
        retry_after: Option<u64>,
    },
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

    pub fn io(path: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
            Error::Setup { code, message } => write!(f, "SetupError({code}): {message}"),
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
            Error::Context(ctx, inner) => write!(f, "{ctx}: {inner}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Transport(e.to_string())
    }
}

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
    fn context_chain_renders() {
        let e = Error::Transport("refused".into())
            .context("token")
            .context("tenant a");
        assert_eq!(e.to_string(), "tenant a: token: transport error: refused");
        assert!(e.is_transient());
    }
}
