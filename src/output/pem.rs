//! PEM files: the TLS outputs' certificate chains and private keys, and the API
//! client's `ca_file` — the one PEM reader of msgtrace.
//!
//! Owns: reading `chain`/`cert`/`key`/`ca_file` files into rustls types with a message
//! naming the file and the fix. Accepts RSA and ECDSA keys in PKCS#1, PKCS#8 and SEC1
//! form.
//! Must not: log key material.

use std::path::Path;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

fn why(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(io) => io.to_string(),
        pem::Error::NoItemsFound => "no PEM block of the expected kind in it".into(),
        other => format!("not valid PEM ({other})"),
    }
}

/// All certificates of a PEM file, in order (leaf first for `cert`).
pub fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let shown = path.display();
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| {
            Error::Tls(format!(
                "{what} {shown}: cannot read certificates: {} — check `{what}`",
                why(&e)
            ))
        })?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| {
            Error::Tls(format!(
                "{what} {shown}: not a PEM certificate file: {} — check `{what}`",
                why(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{what} {shown}: holds no `BEGIN CERTIFICATE` block — check `{what}`"
        )));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#1, PKCS#8 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let shown = path.display();
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => Error::Tls(format!(
            "key {shown}: holds no private key (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` \
             or `BEGIN EC PRIVATE KEY`) — check `key`"
        )),
        other => Error::Tls(format!(
            "key {shown}: cannot read: {} — check `key`",
            why(&other)
        )),
    })
}

/// The X.509 version (1, 2 or 3) of a DER certificate, read from the start of its
/// `TBSCertificate` (RFC 5280 §4.1: `version [0] EXPLICIT` is absent in v1); `None`
/// when the bytes are not a certificate's.
pub fn x509_version(der: &[u8]) -> Option<u8> {
    /// The content of the DER element at the start of `b` (tag `tag`), and the rest.
    fn element(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        if *b.first()? != tag {
            return None;
        }
        let first = *b.get(1)?;
        let (len, head) = if first < 0x80 {
            (usize::from(first), 2usize)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for i in 0..n {
                len = len
                    .checked_mul(256)?
                    .checked_add(usize::from(*b.get(2usize.checked_add(i)?)?))?;
            }
            (len, 2usize.checked_add(n)?)
        };
        let end = head.checked_add(len)?;
        Some((b.get(head..end)?, b.get(end..)?))
    }
    let (cert, _) = element(der, 0x30)?;
    let (tbs, _) = element(cert, 0x30)?;
    match tbs.first()? {
        0x02 => Some(1),
        0xA0 => {
            let (explicit, _) = element(tbs, 0xA0)?;
            let (v, _) = element(explicit, 0x02)?;
            match v {
                [n] if *n < 3 => Some(n.saturating_add(1)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The words for a certificate that is not X.509 v3 (rustls/webpki accept only v3).
pub fn not_v3(what: &str, path: &Path, der: &[u8]) -> Option<String> {
    match x509_version(der)? {
        3 => None,
        v => Some(format!(
            "{what} {}: X.509 v{v} certificate: rustls needs v3 — reissue it with extensions",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x509_versions_are_read() {
        // SEQUENCE { SEQUENCE (tbs) { INTEGER serial … } } — v1 has no [0] version.
        let v1 = [0x30, 0x05, 0x30, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(x509_version(&v1), Some(1));
        let v3 = [
            0x30, 0x0a, 0x30, 0x08, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, 0x01,
        ];
        assert_eq!(x509_version(&v3), Some(3));
        assert_eq!(x509_version(b"garbage"), None);
        assert_eq!(x509_version(&[0x30, 0x82, 0xff]), None);
        let s = not_v3("cert", Path::new("c.pem"), &v1).unwrap_or_default();
        assert!(
            s.contains("X.509 v1 certificate: rustls needs v3 — reissue it with extensions"),
            "{s}"
        );
        assert_eq!(not_v3("cert", Path::new("c.pem"), &v3), None);
    }

    #[test]
    fn missing_and_garbage_files_say_which() {
        let e = load_certs(Path::new("/nonexistent/chain.crt"), "chain").unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("/nonexistent/chain.crt") && s.contains("`chain`"),
            "{s}"
        );
        let p = std::env::temp_dir().join(format!("msgtrace-pem-{}", std::process::id()));
        std::fs::write(&p, "hello\n").unwrap();
        let s = load_certs(&p, "cert").unwrap_err().to_string();
        assert!(
            s.contains("no `BEGIN CERTIFICATE`") || s.contains("no PEM block"),
            "{s}"
        );
        let s = load_key(&p).unwrap_err().to_string();
        assert!(s.contains("holds no private key"), "{s}");
        let _ = std::fs::remove_file(&p);
    }
}
