//! Real receivers for the output tests: rsyslogd (the syslog output's everyday peer, and
//! imrelp for the relp output), syslog-ng (a private unpacked copy, never the system's
//! daemon) and an in-process raw TLS receiver that records exact bytes (for Devo's line
//! format) and can misbehave on purpose (hang up after N bytes, stop reading).
//!
//! Owns: test PKI (rcgen), temp dirs, free loopback ports, starting and stopping
//! receivers with bounded waits. Must not: listen anywhere but 127.0.0.1, or leave a
//! process running (Drop stops everything).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Longest wait for a receiver to listen or to stop.
const START_WAIT: Duration = Duration::from_secs(15);
const STOP_WAIT: Duration = Duration::from_secs(5);

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("msgtrace-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bind :0, read, release).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Test certificates, written as PEM files under `dir`:
/// `ca.pem`; `server.pem`/`server.key` (localhost, 127.0.0.1); `client.pem`/`client.key`;
/// `wrong-ca.pem` and `wrong-client.pem`/`wrong-client.key` (signed by the wrong CA);
/// `other-host.pem`/`other-host.key` (a server cert by the right CA for receiver.example).
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// A TLS output to 127.0.0.1:`port` with this PKI's CA as `chain` and its client
    /// certificate, tagged `tag` (the output tests' common receiver config).
    pub fn client_output(&self, port: u16, tag: &str) -> msgtrace::config::TlsOutput {
        msgtrace::config::TlsOutput {
            address: "127.0.0.1".into(),
            port,
            tls: true,
            chain: Some(self.path("ca.pem")),
            cert: Some(self.path("client.pem")),
            key: Some(self.path("client.key")),
            tag: tag.into(),
            detail_tag: String::new(),
        }
    }

    pub fn create(dir: &Path) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params("msgtrace test CA").self_signed(&ca_key).unwrap();
        let wrong_key = KeyPair::generate().unwrap();
        let wrong = ca_params("msgtrace wrong CA")
            .self_signed(&wrong_key)
            .unwrap();
        let write = |name: &str, s: String| std::fs::write(dir.join(name), s).unwrap();
        write("ca.pem", ca.pem());
        write("ca.key", ca_key.serialize_pem());
        write("wrong-ca.pem", wrong.pem());
        let leaf = |names: &[&str],
                    eku: ExtendedKeyUsagePurpose,
                    issuer: &rcgen::Certificate,
                    ik: &KeyPair,
                    base: &str| {
            let k = KeyPair::generate().unwrap();
            let mut p =
                CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .unwrap();
            p.distinguished_name
                .push(DnType::CommonName, names.first().copied().unwrap_or("x"));
            p.extended_key_usages = vec![eku];
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let c = p.signed_by(&k, issuer, ik).unwrap();
            write(&format!("{base}.pem"), c.pem());
            write(&format!("{base}.key"), k.serialize_pem());
        };
        leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
            &ca_key,
            "server",
        );
        leaf(
            &["receiver.example"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &ca,
            &ca_key,
            "other-host",
        );
        leaf(
            &["msgtrace-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
            &ca_key,
            "client",
        );
        leaf(
            &["msgtrace-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &wrong,
            &wrong_key,
            "wrong-client",
        );
        Pki {
            dir: dir.to_owned(),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

/// Wait until something listens on 127.0.0.1:port.
pub fn wait_port(port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

// ---------------------------------------------------------------- rsyslog

/// Path of rsyslogd, installing it once (tests/support/install-receivers.sh) if missing.
pub fn rsyslogd() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let find = || {
                [
                    "/usr/sbin/rsyslogd",
                    "/sbin/rsyslogd",
                    "/usr/local/sbin/rsyslogd",
                ]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
            };
            if let Some(p) = find() {
                return Some(p);
            }
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/install-receivers.sh");
            let _ = Command::new("timeout")
                .arg("600")
                .arg("bash")
                .arg(script)
                .status();
            let p = find();
            if p.is_none() {
                eprintln!("SKIP: rsyslogd is not installed and could not be installed");
            }
            p
        })
        .clone()
}

/// A running rsyslogd with one imtcp input on 127.0.0.1:port. Every message's MSG part
/// goes to `msg.log` (one line each) and the raw message to `raw.log`.
pub struct Rsyslog {
    pub dir: PathBuf,
    pub port: u16,
    tls: bool,
    /// imrelp instead of imtcp.
    relp: bool,
    child: Option<Child>,
}

impl Rsyslog {
    /// `dir` must hold the Pki files when `tls`. Returns None (skip) without rsyslogd.
    pub fn start(dir: &Path, port: u16, tls: bool) -> Option<Rsyslog> {
        rsyslogd()?;
        let mut r = Rsyslog {
            dir: dir.to_owned(),
            port,
            tls,
            relp: false,
            child: None,
        };
        r.restart();
        Some(r)
    }

    /// rsyslogd with one imrelp input on 127.0.0.1:port over TLS, our client certificate
    /// required (`tls.authMode="certvalid"`: signed by `ca.pem`). Its ruleset has a
    /// Direct queue, so the `rsp 200` for a message is sent after omfile wrote it.
    /// Returns None (skip) without rsyslogd or its imrelp module.
    pub fn start_relp(dir: &Path, port: u16) -> Option<Rsyslog> {
        rsyslogd()?;
        if !imrelp_installed() {
            eprintln!("SKIP: rsyslog's imrelp (package rsyslog-relp) is not installed");
            return None;
        }
        let mut r = Rsyslog {
            dir: dir.to_owned(),
            port,
            tls: true,
            relp: true,
            child: None,
        };
        r.restart();
        Some(r)
    }

    pub fn msg_log(&self) -> PathBuf {
        self.dir.join("msg.log")
    }

    fn conf(&self) -> String {
        let d = self.dir.display();
        let work = self.dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        if self.relp {
            return format!(
                "global(workDirectory=\"{w}\" maxMessageSize=\"128k\")\n\
                 module(load=\"imrelp\" tls.tlslib=\"openssl\")\n\
                 template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n\
                 template(name=\"rawmsg\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 ruleset(name=\"in\" queue.type=\"Direct\") {{\n\
                   action(type=\"omfile\" file=\"{d}/msg.log\" template=\"msgonly\")\n\
                   action(type=\"omfile\" file=\"{d}/raw.log\" template=\"rawmsg\")\n\
                 }}\n\
                 input(type=\"imrelp\" port=\"{p}\" address=\"127.0.0.1\" ruleset=\"in\" \
                   maxDataSize=\"128k\" tls=\"on\" tls.caCert=\"{d}/ca.pem\" \
                   tls.myCert=\"{d}/server.pem\" tls.myPrivKey=\"{d}/server.key\" \
                   tls.authMode=\"certvalid\")\n",
                w = work.display(),
                p = self.port,
            );
        }
        let (global_tls, module) = if self.tls {
            (
                format!(
                    "DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" \
                     DefaultNetstreamDriverCertFile=\"{d}/server.pem\" \
                     DefaultNetstreamDriverKeyFile=\"{d}/server.key\""
                ),
                "module(load=\"imtcp\" StreamDriver.Name=\"ossl\" StreamDriver.Mode=\"1\" \
                 StreamDriver.AuthMode=\"x509/certvalid\")"
                    .to_owned(),
            )
        } else {
            (String::new(), "module(load=\"imtcp\")".to_owned())
        };
        format!(
            "global(workDirectory=\"{w}\" maxMessageSize=\"64k\" {global_tls})\n\
             {module}\n\
             template(name=\"msgonly\" type=\"string\" string=\"%msg%\\n\")\n\
             template(name=\"rawmsg\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             ruleset(name=\"in\") {{\n\
               action(type=\"omfile\" file=\"{d}/msg.log\" template=\"msgonly\")\n\
               action(type=\"omfile\" file=\"{d}/raw.log\" template=\"rawmsg\")\n\
             }}\n\
             input(type=\"imtcp\" port=\"{p}\" address=\"127.0.0.1\" ruleset=\"in\")\n",
            w = work.display(),
            p = self.port,
        )
    }

    /// (Re)start after `stop`; waits until the port listens.
    pub fn restart(&mut self) {
        let conf = self.dir.join("rsyslog.conf");
        std::fs::write(&conf, self.conf()).unwrap();
        let log = std::fs::File::create(self.dir.join("rsyslogd.stderr")).unwrap();
        let child = Command::new(rsyslogd().unwrap())
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < START_WAIT {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    let err = std::fs::read_to_string(self.dir.join("rsyslogd.stderr"))
                        .unwrap_or_default();
                    panic!("rsyslogd exited at start ({st}): {err}");
                }
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "rsyslogd did not listen on {} within {START_WAIT:?}",
            self.port
        );
    }

    /// `kill -9`: no chance to flush or answer anything more.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL after STOP_WAIT.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on the pid of our own child.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < STOP_WAIT {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Lines of msg.log once it holds at least `n` (or after `limit`).
    pub fn wait_lines(&self, n: usize, limit: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(self.msg_log()).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            if lines.len() >= n || start.elapsed() >= limit {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

fn imrelp_installed() -> bool {
    [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .any(|d| Path::new(d).join("rsyslog/imrelp.so").exists())
}

// ---------------------------------------------------------------- syslog-ng

/// Root of the private syslog-ng copy (install-receivers.sh unpacks Debian's
/// syslog-ng-core there with `dpkg-deb -x`; it conflicts with the rsyslog package).
fn syslog_ng_roots() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("MSGTRACE_SYSLOG_NG_DIR") {
        v.push(PathBuf::from(d));
    }
    v.push(PathBuf::from("/opt/msgtrace-test/syslog-ng"));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(c) = cache {
        v.push(c.join("msgtrace-test/syslog-ng"));
    }
    v
}

/// Root of the unpacked syslog-ng (holding usr/sbin/syslog-ng), installing it once.
pub fn syslog_ng_root() -> Option<PathBuf> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let find = || {
                syslog_ng_roots()
                    .into_iter()
                    .find(|r| r.join("usr/sbin/syslog-ng").exists())
            };
            if let Some(r) = find() {
                return Some(r);
            }
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/install-receivers.sh");
            let _ = Command::new("timeout")
                .arg("600")
                .arg("sh")
                .arg(script)
                .status();
            let r = find();
            if r.is_none() {
                eprintln!("SKIP: syslog-ng could not be fetched and unpacked (apt-get download)");
            }
            r
        })
        .clone()
}

/// A running syslog-ng (the private copy) with one `syslog()` source on 127.0.0.1:port
/// over TLS, `peer-verify(required-trusted)` against `ca.pem`: octet-counted RFC 5424.
/// Each message's MSG goes to `msg.log` and the raw message to `raw.log`, one line each.
/// Own config, persist file, pid file and control socket under `dir`.
pub struct SyslogNg {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl SyslogNg {
    /// `dir` must hold the Pki files. Returns None (skip) without syslog-ng.
    pub fn start(dir: &Path, port: u16) -> Option<SyslogNg> {
        let root = syslog_ng_root()?;
        let d = dir.display();
        let conf = format!(
            "@version: 3.38\n\
             options {{ log-msg-size(262144); keep-hostname(yes); stats-freq(0); }};\n\
             source s_in {{ syslog(ip(\"127.0.0.1\") port({port}) transport(\"tls\") \
               flags(store-raw-message) log-msg-size(262144) \
               tls(ca-file(\"{d}/ca.pem\") key-file(\"{d}/server.key\") \
                   cert-file(\"{d}/server.pem\") peer-verify(required-trusted))); }};\n\
             destination d_msg {{ file(\"{d}/msg.log\" template(\"${{MSG}}\\n\") \
               template-escape(no)); }};\n\
             destination d_raw {{ file(\"{d}/raw.log\" template(\"${{RAWMSG}}\\n\")); }};\n\
             log {{ source(s_in); destination(d_msg); destination(d_raw); \
               flags(flow-control); }};\n"
        );
        let conf_path = dir.join("syslog-ng.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let lib = |p: &str| root.join(p).display().to_string();
        let ld = [
            lib("usr/lib/x86_64-linux-gnu"),
            lib("lib/x86_64-linux-gnu"),
            lib("usr/lib/aarch64-linux-gnu"),
            lib("lib/aarch64-linux-gnu"),
            lib("usr/lib/syslog-ng"),
        ]
        .join(":");
        let modules = std::fs::read_dir(root.join("usr/lib/syslog-ng"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.is_dir() && p.join("libafsocket.so").exists())
            .expect("syslog-ng module directory");
        let log = std::fs::File::create(dir.join("syslog-ng.stderr")).unwrap();
        let child = Command::new(root.join("usr/sbin/syslog-ng"))
            .env("LD_LIBRARY_PATH", ld)
            .arg("--foreground")
            .arg("--stderr")
            .arg("--no-caps")
            .arg(format!("--cfgfile={}", conf_path.display()))
            .arg(format!("--persist-file={d}/syslog-ng.persist"))
            .arg(format!("--pidfile={d}/syslog-ng.pid"))
            .arg(format!("--control={d}/syslog-ng.ctl"))
            .arg(format!("--module-path={}", modules.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut ng = SyslogNg {
            dir: dir.to_owned(),
            port,
            child: Some(child),
        };
        let start = Instant::now();
        while start.elapsed() < START_WAIT {
            if let Some(c) = ng.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    let err =
                        std::fs::read_to_string(dir.join("syslog-ng.stderr")).unwrap_or_default();
                    panic!("syslog-ng exited at start ({st}): {err}");
                }
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(ng);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("syslog-ng did not listen on {port} within {START_WAIT:?}");
    }

    pub fn msg_log(&self) -> PathBuf {
        self.dir.join("msg.log")
    }

    /// Lines of msg.log once it holds at least `n` (or after `limit`).
    pub fn wait_lines(&self, n: usize, limit: Duration) -> Vec<String> {
        wait_file_lines(&self.msg_log(), n, limit)
    }

    /// SIGTERM, then SIGKILL after STOP_WAIT.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            terminate(c);
        }
    }
}

impl Drop for SyslogNg {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM a child, SIGKILL it after STOP_WAIT.
fn terminate(mut c: Child) {
    // SAFETY: plain kill(2) on the pid of our own child.
    unsafe {
        libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
    }
    let start = Instant::now();
    while start.elapsed() < STOP_WAIT {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// Lines of `path` once it holds at least `n` (or after `limit`).
pub fn wait_file_lines(path: &Path, n: usize, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n || start.elapsed() >= limit {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------- raw receiver

#[derive(Clone)]
pub struct RawOptions {
    pub tls: bool,
    /// Require a client certificate signed by `ca.pem`.
    pub require_client_cert: bool,
    /// Serve `other-host.pem` (valid for receiver.example only) instead of `server.pem`.
    pub wrong_host_cert: bool,
    /// Close each connection once this many bytes arrived.
    pub drop_after: Option<usize>,
    /// Accept but never read (and shrink the receive buffer): the send queue stays full.
    pub no_read: bool,
    /// Speak TLS 1.2 only (older relays).
    pub tls12_only: bool,
    /// Serve the CA certificate itself (`ca.pem`/`ca.key`) as the server's certificate.
    pub serve_ca: bool,
}

impl Default for RawOptions {
    fn default() -> Self {
        RawOptions {
            tls: true,
            require_client_cert: true,
            wrong_host_cert: false,
            drop_after: None,
            no_read: false,
            tls12_only: false,
            serve_ca: false,
        }
    }
}

/// An in-process receiver on 127.0.0.1 that records each connection's bytes.
pub struct RawReceiver {
    pub port: u16,
    conns: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

pub fn server_config(pki: &Pki, o: &RawOptions) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let base = if o.serve_ca {
        "ca"
    } else if o.wrong_host_cert {
        "other-host"
    } else {
        "server"
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(pki.path(&format!("{base}.pem")))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{base}.key"))).unwrap();
    let versions: &[&rustls::SupportedProtocolVersion] = if o.tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap();
    let b = if o.require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let v =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        b.with_client_cert_verifier(v)
    } else {
        b.with_no_client_auth()
    };
    Arc::new(b.with_single_cert(certs, key).unwrap())
}

impl RawReceiver {
    pub fn start(pki: &Pki, o: RawOptions) -> RawReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        if o.no_read {
            set_rcvbuf(&listener, 1024);
        }
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let config = o.tls.then(|| server_config(pki, &o));
        let (c2, s2) = (conns.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut workers = Vec::new();
            let mut held = Vec::new();
            while !s2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        sock.set_nonblocking(false).unwrap();
                        if o.no_read {
                            held.push(sock);
                            continue;
                        }
                        let idx = {
                            let mut g = c2.lock().unwrap();
                            g.push(Vec::new());
                            g.len() - 1
                        };
                        let (c3, s3, cfg, o3) = (c2.clone(), s2.clone(), config.clone(), o.clone());
                        workers.push(std::thread::spawn(move || {
                            serve(sock, idx, c3, s3, cfg, o3)
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(held);
            for w in workers {
                let _ = w.join();
            }
        });
        RawReceiver {
            port,
            conns,
            stop,
            handle: Some(handle),
        }
    }

    /// Bytes received so far, one entry per connection.
    pub fn connections(&self) -> Vec<Vec<u8>> {
        self.conns.lock().unwrap().clone()
    }

    /// Wait until all connections together received `n` bytes (or `limit` passes).
    pub fn wait_bytes(&self, n: usize, limit: Duration) -> Vec<Vec<u8>> {
        let start = Instant::now();
        loop {
            let c = self.connections();
            if c.iter().map(Vec::len).sum::<usize>() >= n || start.elapsed() >= limit {
                return c;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for RawReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn set_rcvbuf(l: &TcpListener, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on our own listening socket with a pointer to a c_int.
    unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn serve(
    mut sock: TcpStream,
    idx: usize,
    conns: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    cfg: Option<Arc<rustls::ServerConfig>>,
    o: RawOptions,
) {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut tls = cfg.map(|c| rustls::ServerConnection::new(c).unwrap());
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    while !stop.load(Ordering::SeqCst) {
        let r = match tls.as_mut() {
            Some(t) => {
                let mut s = rustls::Stream::new(t, &mut sock);
                s.read(&mut buf)
            }
            None => sock.read(&mut buf),
        };
        match r {
            Ok(0) => break,
            Ok(n) => {
                let n = match o.drop_after {
                    Some(limit) => n.min(limit.saturating_sub(total)),
                    None => n,
                };
                conns.lock().unwrap()[idx].extend_from_slice(&buf[..n]);
                total += n;
                if o.drop_after.is_some_and(|l| total >= l) {
                    // Hang up hard: unread data makes the kernel send a reset.
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    if let Some(t) = tls.as_mut() {
        t.send_close_notify();
        let _ = t.write_tls(&mut sock);
    }
    let _ = sock.flush();
}

/// The lines of a byte buffer as owned strings (events written, lines received).
pub fn text_lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(str::to_owned)
        .collect()
}
