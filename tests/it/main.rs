//! The one integration test binary: one module per area.

#[path = "../emulator/mod.rs"]
pub mod emulator;

mod emulator_tests;
