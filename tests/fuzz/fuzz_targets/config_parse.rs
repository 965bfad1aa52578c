//! Fuzz the config parsers (YAML subset and JSON) and the validator: any text parses
//! or fails with positioned diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |_: &str| Some("x".to_string());
    if let Ok(node) = msgtrace::config::parse_yaml(text, &env) {
        let _ = msgtrace::config::validate(&node, "fuzz.yaml", Path::new("/nonexistent"));
    }
    let _ = msgtrace::config::parse_json(text, &env);
});
