//! The one integration test binary (ripgrep's layout): one module per area.

#[path = "../emulator/mod.rs"]
pub mod emulator;
#[path = "../support/harness.rs"]
pub mod harness;

mod e2e;
mod state;
