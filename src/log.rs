//! Levelled log lines on stderr: `LEVEL Component -> message`, as the vendor's collector
//! writes them (SPEC §7).
//!
//! Owns: the line format, the DEBUG switch (`globals.debug`), and one write per line so
//! lines of concurrent workers never interleave. Must not: be handed secrets — callers
//! pass obfuscated values (`config::obfuscate`); `scrub_url` drops query secrets from URLs.

use std::fmt::Arguments;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

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

/// Render one line (without writing it): `LEVEL Component -> message`.
pub fn render(level: Level, component: &str, args: Arguments<'_>) -> String {
    let mut line = format!("{} {} -> {}", level.as_str(), component, args);
    // One event per line: a message with a newline (a multi-line error) is folded.
    if line.contains('\n') {
        line = line.replace('\n', " | ");
    }
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
    fn scrubs_secret_params() {
        assert_eq!(
            scrub_url("https://h/p?a=1&client_secret=abc&b=2"),
            "https://h/p?a=1&client_secret=****&b=2"
        );
        assert_eq!(scrub_url("https://h/p"), "https://h/p");
    }
}
