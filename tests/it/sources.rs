//! Source scanners and the event encoder against golden fixtures, cut bodies,
//! 1-byte reads, a 10 MB page and the fuzz corpus.
//!
//! Fixture runs print each record as the event line (`event::encode`, pulling id
//! 0), then `next: <link or none>` or `error: <message>`, then
//! `error_message: <text>` when `error_message` finds one in the body. Set
//! `MSGTRACE_BLESS=1` to rewrite the `.expected` files (review the diff!).

use std::io::Read;
use std::path::{Path, PathBuf};

use msgtrace::event;
use msgtrace::record::{Record, Value};
use msgtrace::source::{graph, reporting, PageCtx, PageEnd, MAX_BUFFER, READ_CHUNK};
use msgtrace::Result;

const REPORTING_URL: &str = "https://reports.office365.com/ecp/reportingwebservice/reporting.svc/MessageTrace?$filter=StartDate%20eq%20datetime'2026-11-24T10:00:00'%20and%20EndDate%20eq%20datetime'2026-11-24T10:15:00'";
const GRAPH_URL: &str = "https://graph.microsoft.com/v1.0/admin/exchange/tracing/messageTraces?$filter=receivedDateTime%20ge%202026-11-24T10:00:00Z%20and%20receivedDateTime%20le%202026-11-24T10:15:00Z&$top=5000";
/// 2026-11-24T10:00:00Z and 10:15:00Z.
const WINDOW: (i64, i64) = (1_795_514_400, 1_795_515_300);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Api {
    Reporting,
    Graph,
}

fn ctx(api: Api) -> PageCtx<'static> {
    PageCtx {
        request_url: match api {
            Api::Reporting => REPORTING_URL,
            Api::Graph => GRAPH_URL,
        },
        window_start: WINDOW.0,
        window_end: WINDOW.1,
    }
}

fn scan<R: Read>(api: Api, body: R, lines: &mut Vec<String>) -> Result<PageEnd> {
    let c = ctx(api);
    let mut out = Vec::new();
    let mut cb = |r: &Record<'_>| -> Result<()> {
        out.clear();
        event::encode(r, 0, &mut out);
        lines.push(String::from_utf8_lossy(&out).into_owned());
        Ok(())
    };
    match api {
        Api::Reporting => reporting::scan_page(body, &c, &mut cb),
        Api::Graph => graph::scan_page(body, &c, &mut cb),
    }
}

fn render(api: Api, body: &[u8]) -> String {
    let mut lines = Vec::new();
    let end = scan(api, body, &mut lines);
    let mut s: String = lines.concat();
    match end {
        Ok(end) => {
            assert_eq!(end.records as usize, lines.len());
            s.push_str(&format!(
                "next: {}\n",
                end.next_link.as_deref().unwrap_or("none")
            ));
        }
        Err(e) => s.push_str(&format!("error: {e}\n")),
    }
    let msg = match api {
        Api::Reporting => reporting::error_message(body),
        Api::Graph => graph::error_message(body),
    };
    if let Some(m) = msg {
        s.push_str(&format!("error_message: {m}\n"));
    }
    s
}

fn fixtures(area: &str, ext: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(area);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

fn golden(area: &str, ext: &str, run: impl Fn(&[u8]) -> String) {
    let bless = crate::harness::bless();
    let mut failures = Vec::new();
    for path in fixtures(area, ext) {
        let body = std::fs::read(&path).unwrap();
        let got = run(&body);
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- want\n{want}--- got\n{got}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn atom_fixtures() {
    golden("atom", "xml", |b| render(Api::Reporting, b));
}

#[test]
fn graph_fixtures() {
    golden("graph", "json", |b| render(Api::Graph, b));
}

#[test]
fn event_fixtures() {
    golden("event", "txt", |b| {
        let subject = String::from_utf8(b.to_vec()).unwrap();
        let mut r = Record::new();
        r.push("Organization", Value::Text("contoso.com".into()));
        r.push("MessageId", Value::Null);
        r.push("Subject", Value::Text(subject.into()));
        r.push("Size", Value::Number("1".into()));
        let mut out = Vec::new();
        event::encode(&r, 1_764_000_000_000, &mut out);
        String::from_utf8(out).unwrap()
    });
}

/// A reader that hands out one byte per `read`.
struct OneByte<'a>(&'a [u8]);

impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(slot)) => {
                *slot = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn one_byte_reads_match_one_big_read() {
    for (api, area, ext) in [
        (Api::Reporting, "atom", "xml"),
        (Api::Graph, "graph", "json"),
    ] {
        for path in fixtures(area, ext) {
            let body = std::fs::read(&path).unwrap();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let ra = scan(api, &body[..], &mut a).map_err(|e| e.to_string());
            let rb = scan(api, OneByte(&body), &mut b).map_err(|e| e.to_string());
            assert_eq!(a, b, "{}", path.display());
            assert_eq!(
                ra.map(|e| (e.next_link, e.records)),
                rb.map(|e| (e.next_link, e.records)),
                "{}",
                path.display()
            );
        }
    }
}

/// A reader that hands out at most `.1` bytes per `read`.
struct Chunks<'a>(&'a [u8], usize);

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.1.min(buf.len()).min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        buf[..n].copy_from_slice(head);
        self.0 = rest;
        Ok(n)
    }
}

/// The Atom fast path (an entry read at its `properties` tag when it is all in the
/// buffer) and the general walk (an entry split by a read or the buffer's end, or
/// unusual) must agree: every fixture and a page over several buffers, whose
/// entries hold entities, CDATA and comments, read in pieces of many sizes, give
/// what one big read gives.
#[test]
fn reads_of_any_size_match_one_big_read() {
    let mut pages: Vec<(Api, String, Vec<u8>)> = Vec::new();
    for (api, area, ext) in [
        (Api::Reporting, "atom", "xml"),
        (Api::Graph, "graph", "json"),
    ] {
        for path in fixtures(area, ext) {
            pages.push((
                api,
                path.display().to_string(),
                std::fs::read(&path).unwrap(),
            ));
        }
    }
    let (mut big, _) = big_atom(3 * READ_CHUNK);
    let text = String::from_utf8(big.clone()).unwrap();
    let odd = text.replace("<d:Status>", "<!-- c --><d:Status>").replace(
        "Quarterly report",
        "Quarterly &amp; <![CDATA[<report>]]> &#x1F600;",
    );
    big = odd.into_bytes();
    pages.push((Api::Reporting, "big atom page".into(), big));
    let (graph_big, _) = big_graph(3 * READ_CHUNK);
    pages.push((Api::Graph, "big graph page".into(), graph_big));
    for (api, name, body) in &pages {
        let mut want = Vec::new();
        let want_end = scan(*api, &body[..], &mut want).map_err(|e| e.to_string());
        for size in [2, 7, 64, 1000, 4099, READ_CHUNK - 1] {
            let mut got = Vec::new();
            let end = scan(*api, Chunks(body, size), &mut got).map_err(|e| e.to_string());
            assert_eq!(got, want, "{name} in reads of {size}");
            assert_eq!(
                end.map(|e| (e.next_link, e.records)),
                want_end.clone().map(|e| (e.next_link, e.records)),
                "{name} in reads of {size}"
            );
        }
    }
}

/// Cutting a page at every byte: no panic, never a half record, and only the
/// full body (or one cut in trailing whitespace) scans without error.
#[test]
fn cut_at_every_byte() {
    for (api, path) in [
        (Api::Reporting, "atom/001_documented_example.xml"),
        (Api::Reporting, "atom/015_comments_count_and_pi.xml"),
        (Api::Graph, "graph/001_documented_example.json"),
        (Api::Graph, "graph/006_unknown_fields.json"),
    ] {
        let body = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(path),
        )
        .unwrap();
        let mut full = Vec::new();
        let full_end = scan(api, &body[..], &mut full).unwrap();
        assert!(!full.is_empty());
        for cut in 0..body.len() {
            let mut got = Vec::new();
            let r = scan(api, &body[..cut], &mut got);
            assert!(got.len() <= full.len(), "{path} cut {cut}");
            assert_eq!(got[..], full[..got.len()], "{path} cut {cut}");
            let rest_is_space = body[cut..].iter().all(u8::is_ascii_whitespace);
            match r {
                Ok(end) => {
                    assert!(rest_is_space, "{path} cut {cut} scanned without error");
                    assert_eq!(end.next_link, full_end.next_link);
                    assert_eq!(got, full);
                }
                Err(e) => assert!(
                    matches!(e.root(), msgtrace::Error::Malformed(_)),
                    "{path} cut {cut}: {e}"
                ),
            }
        }
    }
}

fn atom_entry(i: usize) -> String {
    format!(
        "<entry><id>https://r.example/MessageTrace({i})</id><content type=\"application/xml\"><m:properties>\
<d:Organization>contoso.onmicrosoft.com</d:Organization><d:MessageId>&lt;m{i}@contoso.com&gt;</d:MessageId>\
<d:Received m:type=\"Edm.DateTime\">2026-11-24T10:03:12.5872303</d:Received><d:SenderAddress>megan@fabrikam.com</d:SenderAddress>\
<d:RecipientAddress>adele@contoso.com</d:RecipientAddress><d:Subject>Quarterly report {i}</d:Subject><d:Status>Delivered</d:Status>\
<d:ToIP m:null=\"true\"/><d:FromIP>203.0.113.25</d:FromIP><d:Size m:type=\"Edm.Int32\">8352</d:Size>\
<d:MessageTraceId m:type=\"Edm.Guid\">8ed8ad72-97a9-4a4c-9a2e-{i:012}</d:MessageTraceId>\
<d:StartDate m:type=\"Edm.DateTime\">2026-11-24T10:00:00</d:StartDate><d:EndDate m:type=\"Edm.DateTime\">2026-11-24T10:15:00</d:EndDate>\
<d:Index m:type=\"Edm.Int64\">{i}</d:Index></m:properties></content></entry>\n"
    )
}

fn big_atom(min_len: usize) -> (Vec<u8>, usize) {
    let mut s = String::from("<?xml version=\"1.0\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\" xmlns:d=\"http://schemas.microsoft.com/ado/2007/08/dataservices\" xmlns:m=\"http://schemas.microsoft.com/ado/2007/08/dataservices/metadata\">\n");
    let mut n = 0;
    while s.len() < min_len {
        s.push_str(&atom_entry(n));
        n += 1;
    }
    s.push_str("<link rel=\"next\" href=\"MessageTrace?$skiptoken=2000\"/></feed>\n");
    (s.into_bytes(), n)
}

fn big_graph(min_len: usize) -> (Vec<u8>, usize) {
    let mut s = String::from(
        "{\"@odata.context\":\"https://graph.microsoft.com/v1.0/$metadata#x\",\"value\":[",
    );
    let mut n = 0;
    while s.len() < min_len {
        if n > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":\"4c2a3c5e-8b1f-4d2a-9e3f-{n:012}\",\"senderAddress\":\"megan@fabrikam.com\",\"recipientAddress\":\"adele@contoso.com\",\
\"messageId\":\"<m{n}@contoso.com>\",\"receivedDateTime\":\"2026-11-24T10:03:12Z\",\"subject\":\"Quarterly report {n} \\u00e9\",\
\"size\":45678,\"status\":\"delivered\",\"fromIP\":\"203.0.113.25\",\"toIP\":null}}\n"
        ));
        n += 1;
    }
    s.push_str("],\"@odata.nextLink\":\"https://graph.microsoft.com/next\"}");
    (s.into_bytes(), n)
}

#[test]
fn ten_megabyte_pages_use_a_bounded_buffer() {
    for api in [Api::Reporting, Api::Graph] {
        let (body, n) = match api {
            Api::Reporting => big_atom(10_000_000),
            Api::Graph => big_graph(10_000_000),
        };
        let c = ctx(api);
        let mut count = 0usize;
        let mut out = Vec::with_capacity(1024);
        let mut cb = |r: &Record<'_>| -> Result<()> {
            out.clear();
            event::encode(r, 1, &mut out);
            count += 1;
            Ok(())
        };
        let end = match api {
            Api::Reporting => reporting::scan_page(&body[..], &c, &mut cb),
            Api::Graph => graph::scan_page(&body[..], &c, &mut cb),
        }
        .unwrap();
        assert_eq!(count, n);
        assert_eq!(end.records as usize, n);
        assert!(end.next_link.is_some());
        assert!(end.stats.max_buffer <= MAX_BUFFER);
        // Entries are small: the buffer never grew past one read chunk.
        assert_eq!(end.stats.max_buffer, READ_CHUNK, "{api:?}");
    }
}

#[test]
fn an_entry_larger_than_the_buffer_is_malformed() {
    let huge = "x".repeat(MAX_BUFFER + 1);
    let atom = format!(
        "<feed>{}<entry><m:properties><d:Subject>{huge}</d:Subject></m:properties></entry></feed>",
        atom_entry(0)
    );
    let graph = format!("{{\"value\":[{{\"id\":\"a\"}},{{\"subject\":\"{huge}\"}}]}}");
    for (api, body) in [(Api::Reporting, atom), (Api::Graph, graph)] {
        let mut lines = Vec::new();
        let e = scan(api, body.as_bytes(), &mut lines).unwrap_err();
        assert!(matches!(e.root(), msgtrace::Error::Malformed(_)), "{e}");
        assert!(e.to_string().contains("larger than"), "{e}");
        assert_eq!(
            lines.len(),
            1,
            "{api:?}: the record before the huge one was yielded"
        );
    }
}

#[test]
fn callback_error_stops_the_scan() {
    let (body, _) = big_atom(10_000);
    let c = ctx(Api::Reporting);
    let mut seen = 0;
    let r = reporting::scan_page(&body[..], &c, &mut |_| {
        seen += 1;
        Err(msgtrace::Error::Interrupted)
    });
    assert!(matches!(r, Err(msgtrace::Error::Interrupted)));
    assert_eq!(seen, 1);
}

/// Stable-Rust replay of the fuzz corpus and of every prefix of every fixture:
/// the scanners must never panic.
#[test]
fn fuzz_corpus_and_fixture_prefixes_never_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (api, target) in [(Api::Reporting, "atom_scan"), (Api::Graph, "graph_scan")] {
        let dir = root.join("tests/fuzz/corpus").join(target);
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            for a in [Api::Reporting, Api::Graph] {
                let _ = scan(a, &body[..], &mut Vec::new());
            }
            files += 1;
        }
        assert!(files > 0, "empty corpus {}", dir.display());
        let _ = api;
    }
    for (api, area, ext) in [
        (Api::Reporting, "atom", "xml"),
        (Api::Graph, "graph", "json"),
    ] {
        for path in fixtures(area, ext) {
            let body = std::fs::read(&path).unwrap();
            for cut in 0..=body.len() {
                let _ = scan(api, &body[..cut], &mut Vec::new());
                let _ = reporting::error_message(&body[..cut]);
                let _ = graph::error_message(&body[..cut]);
            }
        }
    }
}

#[test]
fn query_urls() {
    assert_eq!(
        reporting::query_url(
            "https://reports.office365.com/ecp/reportingwebservice/reporting.svc/MessageTrace",
            WINDOW.0,
            WINDOW.1
        ),
        REPORTING_URL
    );
    assert_eq!(
        graph::query_url(
            "https://graph.microsoft.com/v1.0/admin/exchange/tracing/messageTraces",
            WINDOW.0,
            WINDOW.1,
            5000
        ),
        GRAPH_URL
    );
}
