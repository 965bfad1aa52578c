//! The one integration test binary: one module per area.

#[path = "../support/receivers.rs"]
mod receivers;

mod outputs;
