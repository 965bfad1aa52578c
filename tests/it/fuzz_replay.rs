//! Stable-Rust replay of the config, state and next-link fuzz corpora (the scanners' corpora are
//! replayed in `sources`): every file, and every prefix of it, never panics.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

#[test]
fn config_corpus_never_panics() {
    let env = |_: &str| Some("x".to_string());
    for f in corpus("config_parse") {
        let bytes = std::fs::read(&f).unwrap();
        for end in 0..=bytes.len() {
            let Ok(text) = std::str::from_utf8(&bytes[..end]) else {
                continue;
            };
            if let Ok(node) = msgtrace::config::parse_yaml(text, &env) {
                let _ = msgtrace::config::validate(&node, "fuzz.yaml", Path::new("/nonexistent"));
            }
            let _ = msgtrace::config::parse_json(text, &env);
        }
    }
}

#[test]
fn state_corpus_never_panics() {
    for f in corpus("state_decode") {
        let bytes = std::fs::read(&f).unwrap();
        for end in 0..=bytes.len() {
            let rec = msgtrace::state::decode_log(&bytes[..end]);
            assert!(rec.valid_len <= end);
            let checked = msgtrace::state::recover(&bytes[..end]);
            assert!(checked.valid_len <= rec.valid_len);
            if let Some(c) = &checked.cursor {
                assert_eq!(msgtrace::state::validate(c), Ok(()));
            }
        }
    }
}

#[test]
fn next_link_corpus_keeps_the_origin_rule() {
    for f in corpus("next_link") {
        let bytes = std::fs::read(&f).unwrap();
        for end in 0..=bytes.len() {
            msgtrace::source::link::fuzz_check(&bytes[..end]);
        }
    }
}
