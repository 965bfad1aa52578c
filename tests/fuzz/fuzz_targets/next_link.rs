//! Fuzz the next-link resolver and the origin rule: input is `base\nhref`. Nothing
//! panics; the rule is reflexive and symmetric; a link resolved from a path or query
//! (`/x`, `?x`) keeps the base's origin; an origin found is always normalised.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    msgtrace::source::link::fuzz_check(data);
});
