//! The one integration test binary (ripgrep's layout): one module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]

#[path = "../emulator/mod.rs"]
pub mod emulator;
#[path = "../support/harness.rs"]
pub mod harness;
#[path = "../support/receivers.rs"]
pub mod receivers;

mod check;
mod cli;
mod config;
mod crash;
mod delivery;
mod deploy;
mod details;
mod e2e;
mod emulator_tests;
mod fuzz_replay;
mod hostile;
mod metrics;
mod outputs;
mod passes;
mod receivers_ng;
mod relp;
mod shards;
mod sources;
mod state;
mod tenants;
