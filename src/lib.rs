//! msgtrace: collects Microsoft 365 Exchange Online message trace and delivers it to a
//! SIEM over one persistent TLS connection. The binary is a thin shell over this library;
//! what tests and fuzz targets need is public.

pub mod check;
pub mod config;
pub mod error;
pub mod output;
pub mod record;
pub mod state;
pub mod time;

pub use error::{Error, Result};
pub mod event;
pub mod source;
