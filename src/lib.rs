//! msgtrace: collects Microsoft 365 Exchange Online message trace and delivers it to a
//! SIEM over one persistent TLS connection. The binary is a thin shell over this library;
//! what tests and fuzz targets need is public. The path of one record:
//!
//! ```text
//! HTTP body   http::query (token: auth) ← pull::Tenant::step (phase: tenant, window: window)
//!  → scanner  source::api::Api::scan_page → source/reporting.rs | source/graph.rs → record::Record
//!  → dedup    ledger::WindowSet::check (the delivery ledger's entries around the window)
//!  → encoder  event::encode into the page's batch → output::delivery::Page::write → each
//!             output's writer thread → output::Sink::write_events (devo, syslog, relp_sink, file, stdout)
//!  → confirm  output::delivery::Page::confirm (every output's Sink::confirm) → ledger::Ledger::append
//!             → state::StateFile::checkpoint (pull/mod.rs moves the cursor only then)
//! ```

// Input never panics (Cargo.toml [lints]) holds for src/; the in-file unit tests may.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod log;

pub mod app;
pub mod auth;
pub mod backoff;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deadletter;
pub mod detail_queue;
pub mod details;
pub mod error;
pub mod event;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod output;
pub mod paging;
pub mod preflight;
pub mod pull;
pub mod record;
pub mod run;
pub mod shard;
pub mod source;
pub mod state;
pub mod tenant;
pub mod time;
pub mod window;

pub use error::{Error, Result};
