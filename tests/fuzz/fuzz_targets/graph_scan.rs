//! Fuzz `source::graph::scan_page` (and `error_message`) on arbitrary bytes: it
//! must never panic, and every yielded record must encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use msgtrace::source::{graph, PageCtx};

fuzz_target!(|data: &[u8]| {
    let ctx = PageCtx {
        request_url: "https://example.com/svc/MessageTrace?$filter=x",
        window_start: 1_795_514_400,
        window_end: 1_795_515_300,
    };
    let mut out = Vec::new();
    let _ = graph::scan_page(data, &ctx, &mut |r| {
        out.clear();
        msgtrace::event::encode(r, 0, &mut out);
        Ok(())
    });
    let _ = graph::error_message(data);
});
