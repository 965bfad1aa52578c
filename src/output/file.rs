//! `file` output: JSON lines appended to `path`.
//!
//! Owns: the file handle, crash repair on open (a last line without its newline, left
//! by a crash mid-write, is cut back to the last complete line) and durability
//! (`confirm` = flush + `sync_data`). Must not: rewrite or rotate earlier lines.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{Sink, SinkStats};
use crate::error::{Error, Result};

/// Write buffer: a page of events becomes a few large writes.
const FILE_BUFFER: usize = 64 * 1024;
/// Chunk read backwards while looking for the last newline on open.
const SCAN_CHUNK: u64 = 8 * 1024;
/// Mode of a new output file: owner read/write, group read (events are not secrets
/// but are personal data).
const FILE_MODE: u32 = 0o640;

pub struct FileSink {
    name: String,
    path: PathBuf,
    out: BufWriter<File>,
    sent_total: u64,
}

impl FileSink {
    /// Open (create) `path` for appending, cutting a torn last line. A symlink at
    /// `path` is refused unless `follow_symlinks` (the output's `follow_symlinks: true`):
    /// a link planted there could make msgtrace append to, or cut the last line of,
    /// another file.
    pub fn open(name: &str, path: &Path, follow_symlinks: bool) -> Result<Self> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(FILE_MODE);
            if !follow_symlinks {
                opts.custom_flags(libc::O_NOFOLLOW);
            }
        }
        let shown = path.display().to_string();
        let existed = path.exists();
        let mut f = opts.open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) && !follow_symlinks {
                Error::Output {
                    message: format!(
                        "output {name}: {shown} is a symbolic link: refused — point `path` at \
                         the real file, or set `follow_symlinks: true` in this output's config"
                    ),
                    transient: false,
                }
            } else {
                Error::io(format!("output {name}: {shown}"), e)
            }
        })?;
        let keep = complete_len(&mut f).map_err(|e| Error::io(&shown, e))?;
        let len = f.metadata().map_err(|e| Error::io(&shown, e))?.len();
        if keep < len {
            f.set_len(keep).map_err(|e| Error::io(&shown, e))?;
            f.sync_data().map_err(|e| Error::io(&shown, e))?;
            crate::warning!(
                "OutputProcess::OutputSender",
                "output {name}: cut a torn last line ({} bytes) from {shown}",
                len.saturating_sub(keep)
            );
        }
        f.seek(SeekFrom::End(0)).map_err(|e| Error::io(&shown, e))?;
        if !existed {
            // A new file's directory entry must survive a crash too.
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            let dir = parent.unwrap_or_else(|| Path::new("."));
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::io(dir.display().to_string(), e))?;
        }
        Ok(FileSink {
            name: name.to_owned(),
            path: path.to_owned(),
            out: BufWriter::with_capacity(FILE_BUFFER, f),
            sent_total: 0,
        })
    }

    fn fail(&self, e: std::io::Error) -> Error {
        Error::Output {
            message: format!("output {}: {}: {e}", self.name, self.path.display()),
            transient: false,
        }
    }
}

/// Length of the file up to and including its last newline (0 when there is none).
fn complete_len(f: &mut File) -> std::io::Result<u64> {
    let len = f.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; SCAN_CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(SCAN_CHUNK);
        let n = end.min(SCAN_CHUNK) as usize; // end - start
        let chunk = buf.get_mut(..n).unwrap_or_default();
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(start.saturating_add(i as u64).saturating_add(1));
        }
        end = start;
    }
    Ok(0)
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn ensure_ready(&mut self) -> Result<()> {
        Ok(())
    }

    fn write_events(&mut self, json_lines: &[u8], count: u64) -> Result<()> {
        self.out.write_all(json_lines).map_err(|e| self.fail(e))?;
        self.sent_total = self.sent_total.saturating_add(count);
        Ok(())
    }

    fn confirm(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| self.fail(e))?;
        self.out.get_ref().sync_data().map_err(|e| self.fail(e))
    }

    fn generation(&self) -> u64 {
        0
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            sent_total: self.sent_total,
            connected: true,
            queued_bytes: self.out.buffer().len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("msgtrace-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn cuts_torn_tail_and_appends() {
        let p = tmp("torn");
        std::fs::write(&p, b"{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
        let mut s = FileSink::open("f", &p, false).unwrap();
        s.write_events(b"{\"d\":4}\n", 1).unwrap();
        s.confirm().unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n"
        );
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn no_newline_at_all_becomes_empty_and_long_tail_is_scanned() {
        let p = tmp("nonl");
        std::fs::write(&p, b"{\"partial").unwrap();
        drop(FileSink::open("f", &p, false).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"");
        let mut body = b"{\"x\":1}\n".to_vec();
        body.extend(std::iter::repeat_n(b'a', 3 * SCAN_CHUNK as usize + 5));
        std::fs::write(&p, &body).unwrap();
        drop(FileSink::open("f", &p, false).unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"x\":1}\n");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn a_symlink_is_refused_unless_allowed() {
        let victim = tmp("victim");
        let link = tmp("link");
        std::fs::write(&victim, b"precious\n{\"cut").unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = FileSink::open("f", &link, false)
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("symbolic link") && err.contains("follow_symlinks: true"),
            "{err}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n{\"cut");
        // Allowed: written through, as before.
        let mut s = FileSink::open("f", &link, true).unwrap();
        s.write_events(b"{\"e\":5}\n", 1).unwrap();
        s.confirm().unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n{\"e\":5}\n");
        let _ = std::fs::remove_file(&link);
        let _ = std::fs::remove_file(&victim);
    }
}
