//! msgtrace: collects Microsoft 365 Exchange Online message trace and delivers it to a
//! SIEM over one persistent TLS connection. The binary is a thin shell over this library;
//! what tests and fuzz targets need is public.

pub mod log;

pub mod app;
pub mod auth;
pub mod check;
pub mod cli;
pub mod config;
pub mod error;
pub mod event;
pub mod http;
pub mod ledger;
pub mod output;
pub mod pull;
pub mod record;
pub mod run;
pub mod source;
pub mod state;
pub mod time;
pub mod window;

pub use error::{Error, Result};
