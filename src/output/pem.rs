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

#[cfg(test)]
mod tests {
    use super::*;

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
