//! Dead letters (SPEC §3 "Faults that must not stall"): a page Microsoft answers
//! malformed in `MAX_PARSE_FAILURE_PERIODS` periods in a row stops blocking its
//! tenant. What parses was delivered; the raw bytes of the page, secret-free, go to a
//! dead-letter file in the persistence directory, named by input id and time.
//!
//! Owns: the capture of one page's raw bytes (`Capture`, bounded by
//! `MAX_DEAD_LETTER_BYTES`), the file's name and writing it (opened like the state file:
//! `state::open_private`, never following a symlink, mode 0600), counting the entries
//! the file holds. Must not: log (the caller logs the path), keep anything after the
//! write, or write a secret (the text goes through `log::scrub`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::source::Api;

/// Periods in a row one page may fail to parse before it becomes a dead letter.
pub const MAX_PARSE_FAILURE_PERIODS: u32 = 3;
/// Raw bytes of one page kept for its dead letter (larger pages are cut, and the file
/// says so).
pub const MAX_DEAD_LETTER_BYTES: usize = 16 << 20;

/// What a capture kept.
#[derive(Debug, Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// More was read than kept.
    pub cut: bool,
}

/// Shared view of what a `Capture` keeps, readable after the scanner took the reader.
pub type Shared = std::rc::Rc<std::cell::RefCell<Captured>>;

/// A body reader that keeps a copy of what was read (up to `MAX_DEAD_LETTER_BYTES`).
pub struct Capture<R> {
    inner: R,
    out: Option<Shared>,
}

impl<R: Read> Capture<R> {
    /// Wrap `inner`; when `armed`, also the handle to the copy.
    pub fn new(inner: R, armed: bool) -> (Self, Option<Shared>) {
        let out = armed.then(Shared::default);
        (
            Capture {
                inner,
                out: out.clone(),
            },
            out,
        )
    }
}

impl<R: Read> Read for Capture<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(out) = &self.out {
            let mut o = out.borrow_mut();
            let got = buf.get(..n).unwrap_or_default();
            let room = MAX_DEAD_LETTER_BYTES.saturating_sub(o.bytes.len());
            if got.len() > room {
                o.cut = true;
            }
            o.bytes
                .extend_from_slice(got.get(..room.min(got.len())).unwrap_or_default());
        }
        Ok(n)
    }
}

/// The dead-letter file of input `input_id` for a page given up at `at` (epoch secs).
pub fn path(dir: &Path, input_id: &str, at: i64) -> PathBuf {
    let id: String = input_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stamp: String = crate::time::rfc3339(at)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    dir.join(format!("{id}_{stamp}.deadletter"))
}

/// Entries (Atom `<entry>`, Graph elements with an `"id"`) in raw page bytes: what the
/// dead letter holds, for `rejected_entries`.
pub fn count_entries(api: Api, raw: &[u8]) -> u64 {
    let needle: &[u8] = match api {
        Api::Reporting => b"<entry",
        Api::Graph => b"\"id\"",
    };
    let n = raw.windows(needle.len()).filter(|w| *w == needle).count();
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Write one dead letter: a header (URL scrubbed, the parse error, whether the bytes
/// were cut), then the page's bytes as text with every secret removed. Appends when
/// the file exists (two pages given up in the same second).
pub fn write(
    dir: &Path,
    input_id: &str,
    at: i64,
    url: &str,
    error: &str,
    page: &Captured,
) -> Result<PathBuf> {
    let path = path(dir, input_id, at);
    let mut file = crate::state::open_private(&path, crate::state::Access::AppendCreate)
        .map_err(|e| Error::State(format!("{}: cannot open dead letter: {e}", path.display())))?;
    let text = crate::log::scrub(&String::from_utf8_lossy(&page.bytes));
    let header = format!(
        "# msgtrace dead letter\n# page: {}\n# given up at: {}\n# parse error: {}\n# bytes: {}{}\n",
        crate::log::scrub_url(url),
        crate::time::rfc3339(at),
        crate::log::sanitize_remote(error),
        page.bytes.len(),
        if page.cut {
            format!(" (cut at {MAX_DEAD_LETTER_BYTES}: the page was larger)")
        } else {
            String::new()
        }
    );
    file.write_all(header.as_bytes())
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::State(format!("{}: cannot write dead letter: {e}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_a_bounded_copy_only_when_armed() {
        let body = vec![b'a'; 100];
        let (mut r, shared) = Capture::new(&body[..], true);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let shared = shared.unwrap();
        assert_eq!(shared.borrow().bytes, body);
        assert!(!shared.borrow().cut);
        let (mut r, none) = Capture::new(&body[..], false);
        r.read_to_end(&mut out).unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn names_counts_and_writes_without_secrets() {
        let dir = std::env::temp_dir().join(format!("msgtrace-dl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = path(&dir, "in/put 1", 1_795_000_000);
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("in_put_1_2026") && name.ends_with("Z.deadletter"),
            "{name}"
        );
        assert_eq!(count_entries(Api::Reporting, b"<entry><entry/><x>"), 2);
        assert_eq!(count_entries(Api::Graph, br#"[{"id":1},{"id":2}]"#), 2);
        let raw = b"<entry>bad Authorization: Bearer eyJabc.def.ghi</entry>".to_vec();
        let page = Captured {
            bytes: raw,
            cut: false,
        };
        let written = write(
            &dir,
            "in1",
            1_795_000_000,
            "https://h/x?$skiptoken=1",
            "bad",
            &page,
        )
        .unwrap();
        let text = std::fs::read_to_string(&written).unwrap();
        assert!(text.contains("# page: https://h/x?$skiptoken=1"), "{text}");
        assert!(!text.contains("eyJabc.def.ghi"), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&written).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
