//! Fuzz the state log decoder: any bytes decode without panic, the valid prefix
//! and torn offset agree, and a recovered cursor re-encodes to a record that
//! decodes to the same cursor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msgtrace::state::{decode_log, encode_record};

fuzz_target!(|data: &[u8]| {
    let rec = decode_log(data);
    assert!(rec.valid_len <= data.len());
    match &rec.torn {
        Some(t) => assert_eq!(t.offset, rec.valid_len),
        None => assert_eq!(rec.valid_len, data.len()),
    }
    assert_eq!(rec.cursor.is_some(), rec.records > 0);
    // The range check only ever ends the log earlier, and keeps what it keeps plausible.
    let checked = msgtrace::state::recover(data);
    assert!(checked.valid_len <= rec.valid_len);
    if let Some(c) = &checked.cursor {
        assert_eq!(msgtrace::state::validate(c), Ok(()));
    }
    if let Some(c) = &rec.cursor {
        let again = decode_log(&encode_record(c));
        assert_eq!(again.cursor.as_ref(), Some(c));
        assert_eq!(again.torn, None);
    }
});
