//! Deployment recipes (examples/deploy/): the compose file, the Kubernetes manifest, the
//! systemd unit and the sample configs agree with each other, with Dockerfile.scratch and
//! with the vendor's volume layout.
//!
//! Owns: static checks of those files, `systemd-analyze verify`/`security`, YAML
//! structure through python3's yaml module (else substring checks), and the image:
//! Dockerfile.scratch built with buildah around the `make static` binary, its root
//! filesystem unpacked and run as the image says (entrypoint, user, working directory,
//! environment) with the vendor's volumes, against the emulator and a TLS receiver.
//! Must not: need a container daemon, Kubernetes or a running systemd, or touch anything
//! outside a temporary directory (buildah keeps its storage there too). A missing tool is
//! a skip on a laptop and a failure under MSGTRACE_STRICT=1.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use miniserde::json::{self, Value};

use crate::emulator::{EmuOptions, Emulator};
use crate::harness::{
    json_lines, logged_start, s, tls_output_yaml, wait_with_deadline, Cfg, Workdir, RWS_SERVICE,
};
use crate::receivers::{Pki, RawOptions, RawReceiver};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(name: &str) -> PathBuf {
    root().join("examples/deploy").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn have(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn python_yaml() -> bool {
    let ok = have("python3", &["-c", "import yaml"]);
    if !ok {
        crate::harness::missing(
            "python3 with the yaml module not found (apt-get install python3-yaml); \
             YAML checked by substrings only",
        );
    }
    ok
}

/// Runs a python check script with the deploy folder as argv[1]; it prints `ok` on success.
fn python(script: &str) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(deploy(""))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "python check failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh directory under the system temp dir, removed by the caller.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("msgtrace-deploy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

// ---------------------------------------------------------------- sample configs

/// What msgtrace's YAML subset (SPEC §2) rejects: tabs, flow collections, anchors/aliases,
/// multiple documents. Checked on the text so this holds before the parser is wired in.
fn assert_yaml_subset(path: &Path, text: &str) {
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let at = format!("{}:{}", path.display(), n + 1);
        assert!(!line.contains('\t'), "{at}: tab");
        assert!(!line.starts_with("---"), "{at}: multi-document marker");
        let code = line.split(" #").next().unwrap_or("");
        if let Some((_, value)) = code.split_once(": ") {
            let v = value.trim();
            for bad in ["{", "[", "&", "*", "|", ">"] {
                assert!(!v.starts_with(bad), "{at}: value starts with {bad:?}: {v}");
            }
        }
    }
}

#[test]
fn sample_configs_stay_in_the_yaml_subset() {
    for name in ["config/config.yaml", "systemd/config.yaml"] {
        let p = deploy(name);
        let text = read(&p);
        assert_yaml_subset(&p, &text);
        for key in [
            "globals:",
            "outputs:",
            "inputs:",
            "credentials:",
            "persistence:",
        ] {
            assert!(text.contains(key), "{name}: no {key}");
        }
        assert!(
            !text
                .lines()
                .any(|l| l.trim_start().starts_with("client_secret:")),
            "{name}: the client secret belongs in a file, not in the config"
        );
    }
}

// ---------------------------------------------------------------- compose

const COMPOSE_PY: &str = r#"
import sys, os, yaml
d = sys.argv[1]
c = yaml.safe_load(open(os.path.join(d, "compose.yaml")))
s = c["services"]["msgtrace"]
assert s["image"] == "msgtrace:latest", s["image"]
assert s["build"] == {"context": "../..", "dockerfile": "Dockerfile.scratch"}, s["build"]
assert os.path.isfile(os.path.join(d, s["build"]["context"], s["build"]["dockerfile"]))
for v in ["./certs:/devo-collector/certs:ro", "./config:/devo-collector/config:ro",
          "./state:/devo-collector/state"]:
    assert v in s["volumes"], v
assert "CONFIG_FILE" in s["environment"], s["environment"]
assert s["restart"] == "unless-stopped"
assert s["read_only"] is True
assert s["user"] == "10001:10001"
assert s["cap_drop"] == ["ALL"]
assert "no-new-privileges:true" in s["security_opt"]
assert s["stop_signal"] == "SIGTERM"
refs = [x for x in s["secrets"] if isinstance(x, dict) and x["source"] == "o365_client_secret"]
assert len(refs) == 1, s["secrets"]
target = refs[0]["target"]
assert "file" in c["secrets"]["o365_client_secret"]
cfg = yaml.safe_load(open(os.path.join(d, "config", "config.yaml")))
creds = cfg["inputs"]["office365_exchange_message"]["credentials"]
assert creds["client_secret_file"] == "/run/secrets/" + target, creds
assert "client_secret" not in creds
assert cfg["globals"]["persistence"]["config"]["directory_name"] == "state"
print("ok")
"#;

#[test]
fn compose_matches_the_image_and_the_vendor_layout() {
    let dockerfile = read(&root().join("Dockerfile.scratch"));
    assert!(
        dockerfile.contains("USER 10001:10001"),
        "compose and k8s assume uid 10001"
    );
    assert!(dockerfile.contains("WORKDIR /devo-collector"));
    if python_yaml() {
        python(COMPOSE_PY);
        return;
    }
    let text = read(&deploy("compose.yaml"));
    for needle in [
        "image: msgtrace:latest",
        "context: ../..",
        "dockerfile: Dockerfile.scratch",
        "- ./certs:/devo-collector/certs:ro",
        "- ./config:/devo-collector/config:ro",
        "- ./state:/devo-collector/state",
        "CONFIG_FILE:",
        "restart: unless-stopped",
        "read_only: true",
        "source: o365_client_secret",
        "target: o365_client_secret",
    ] {
        assert!(text.contains(needle), "compose.yaml: no {needle:?}");
    }
    let cfg = read(&deploy("config/config.yaml"));
    assert!(cfg.contains("client_secret_file: /run/secrets/o365_client_secret"));
}

// ---------------------------------------------------------------- kubernetes

const KUBERNETES_PY: &str = r#"
import sys, os, yaml
d = sys.argv[1]
docs = [x for x in yaml.safe_load_all(open(os.path.join(d, "kubernetes.yaml"))) if x]
by = {}
for x in docs:
    by.setdefault(x["kind"], {})[x["metadata"]["name"]] = x
assert sorted((k, len(v)) for k, v in by.items()) == [
    ("ConfigMap", 1), ("Deployment", 1), ("PersistentVolumeClaim", 1), ("Secret", 2)], by.keys()
dep = list(by["Deployment"].values())[0]
spec = dep["spec"]
assert spec["replicas"] == 1
assert spec["strategy"] == {"type": "Recreate"}, spec["strategy"]
pod = spec["template"]["spec"]
psc = pod["securityContext"]
assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001 and psc["fsGroup"] == 10001
assert pod["automountServiceAccountToken"] is False
[c] = pod["containers"]
sc = c["securityContext"]
assert sc["readOnlyRootFilesystem"] is True
assert sc["allowPrivilegeEscalation"] is False
assert sc["runAsNonRoot"] is True
assert sc["capabilities"]["drop"] == ["ALL"]
assert c["resources"]["limits"]["memory"] == "64Mi"
env = {e["name"]: e["value"] for e in c["env"]}
vols = {v["name"]: v for v in pod["volumes"]}
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
def vol(path):
    return vols[mounts[path]["name"]]
cm = by["ConfigMap"][vol("/devo-collector/config")["configMap"]["name"]]
assert env["CONFIG_FILE"] in cm["data"], env
cfg = yaml.safe_load(cm["data"][env["CONFIG_FILE"]])
sample = yaml.safe_load(open(os.path.join(d, "config", "config.yaml")))
assert cfg == sample, "the ConfigMap's config.yaml differs from config/config.yaml"
certs = by["Secret"][vol("/devo-collector/certs")["secret"]["secretName"]]
out = cfg["outputs"]["devo_1"]["config"]
for k in ["chain", "cert", "key"]:
    assert out[k] in certs["stringData"], (k, out[k])
pvc = vol("/devo-collector/state")["persistentVolumeClaim"]["claimName"]
assert pvc in by["PersistentVolumeClaim"]
assert mounts["/devo-collector/state"].get("readOnly") is not True
for p in ["/devo-collector/config", "/devo-collector/certs"]:
    assert mounts[p]["readOnly"] is True, p
secret_file = cfg["inputs"]["office365_exchange_message"]["credentials"]["client_secret_file"]
found = False
for path, m in mounts.items():
    v = vols[m["name"]]
    for item in v.get("secret", {}).get("items", []):
        if path.rstrip("/") + "/" + item["path"] == secret_file:
            assert item["key"] in by["Secret"][v["secret"]["secretName"]]["stringData"]
            found = True
assert found, "no Secret item is mounted at " + secret_file
print("ok")
"#;

#[test]
fn kubernetes_manifest_is_one_hardened_collector() {
    if python_yaml() {
        python(KUBERNETES_PY);
        return;
    }
    let text = read(&deploy("kubernetes.yaml"));
    for needle in [
        "kind: Deployment",
        "kind: PersistentVolumeClaim",
        "kind: ConfigMap",
        "kind: Secret",
        "replicas: 1",
        "type: Recreate",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "- ALL",
        "memory: 64Mi",
        "fsGroup: 10001",
        "mountPath: /devo-collector/state",
        "mountPath: /devo-collector/certs",
        "mountPath: /devo-collector/config",
        "client_secret_file: /run/secrets/o365_client_secret",
        "path: o365_client_secret",
    ] {
        assert!(text.contains(needle), "kubernetes.yaml: no {needle:?}");
    }
}

// ---------------------------------------------------------------- systemd

/// `[Service]` keys of a unit file, each with its values in order.
fn service_keys(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]" {
            if let Some((k, v)) = line.split_once('=') {
                keys.entry(k.to_string()).or_default().push(v.to_string());
            }
        }
    }
    keys
}

#[test]
fn systemd_unit_has_every_hardening_key() {
    let unit = read(&deploy("msgtrace.service"));
    let keys = service_keys(&unit);
    for (k, v) in [
        (
            "ExecStart",
            "/usr/local/bin/msgtrace run -c /etc/msgtrace/config.yaml",
        ),
        ("DynamicUser", "yes"),
        ("StateDirectory", "msgtrace"),
        ("WorkingDirectory", "/var/lib/msgtrace"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("MemoryMax", "64M"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        (
            "LoadCredential",
            "client_secret:/etc/msgtrace/client_secret",
        ),
        ("LoadCredential", "devo.key:/etc/msgtrace/devo.key"),
        ("Restart", "on-failure"),
        ("RestartSec", "10s"),
        ("KillSignal", "SIGTERM"),
        ("TimeoutStopSec", "10"),
    ] {
        let got = keys.get(k).map(Vec::as_slice).unwrap_or(&[]);
        assert!(
            got.iter().any(|g| g == v),
            "msgtrace.service: {k}={v} missing (has {got:?})"
        );
    }
    assert!(unit.contains("WantedBy=multi-user.target"));
    // The config the unit reads finds its secrets and state where the unit puts them.
    let cfg = filled("systemd/config.yaml");
    for needle in [
        "client_secret_file: ${CREDENTIALS_DIRECTORY}/client_secret",
        "key: ${CREDENTIALS_DIRECTORY}/devo.key",
        "directory_name: /var/lib/msgtrace",
    ] {
        assert!(cfg.contains(needle), "systemd/config.yaml: no {needle:?}");
    }
}

fn show(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn systemd_analyze_accepts_the_unit() {
    if !have("systemd-analyze", &["--version"]) {
        crate::skip!("systemd-analyze is not installed (apt-get install systemd)");
    }
    // verify insists that ExecStart exists: point it at the binary under test.
    let unit = read(&deploy("msgtrace.service")).replace(
        "ExecStart=/usr/local/bin/msgtrace ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_msgtrace")),
    );
    let dir = temp_dir("systemd");
    let path = dir.join("msgtrace.service");
    std::fs::write(&path, unit).expect("write unit");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    // Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    let clean = verify.status.success() && verify.stderr.is_empty() && verify.stdout.is_empty();
    // Exposure score 0-100 (shown as 0.0-10.0); the unit scores about 11.
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(clean, "systemd-analyze verify:\n{}", show(&verify));
    assert!(
        security.status.success(),
        "systemd-analyze security:\n{}",
        show(&security)
    );
}

// ---------------------------------------------------------------- README

#[test]
fn readme_gives_each_recipe() {
    let text = read(&deploy("README.md"));
    for needle in [
        "make static && docker build -f Dockerfile.scratch -t msgtrace .",
        "docker compose up -d",
        "systemctl daemon-reload && systemctl enable --now msgtrace",
        "journalctl -u msgtrace",
        "kubectl apply",
        "make cross",
    ] {
        assert!(
            text.contains(needle),
            "examples/deploy/README.md: no {needle:?}"
        );
    }
}

// ---------------------------------------------------------------- the real binary

/// The sample configs with their `<tenant_id>`/`<client_id>` placeholders filled in.
fn filled(name: &str) -> String {
    read(&deploy(name))
        .replace("<tenant_id>", "7a1e2f0c-3b4d-4e5f-8a9b-0c1d2e3f4a5b")
        .replace("<client_id>", "0f9e8d7c-6b5a-4f3e-9d2c-1b0a9f8e7d6c")
}

/// A self-signed certificate and key in PEM, standing in for Devo's.
fn cert_and_key() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["collector.example".to_string()]).expect("rcgen");
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

fn check_offline(dir: &Path, args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_msgtrace"));
    cmd.current_dir(dir)
        .arg("check")
        .args(args)
        .arg("--offline");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("msgtrace runs")
}

#[test]
fn sample_configs_pass_check_offline() {
    let (cert, key) = cert_and_key();

    // Container layout: working directory /devo-collector, CONFIG_FILE under config/.
    let dir = temp_dir("container");
    for sub in ["config", "certs", "state", "secrets"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let secret = dir.join("secrets/o365_client_secret");
    std::fs::write(&secret, "not-a-real-secret\n").expect("secret");
    let cfg = filled("config/config.yaml").replace(
        "/run/secrets/o365_client_secret",
        &secret.display().to_string(),
    );
    std::fs::write(dir.join("config/config.yaml"), cfg).expect("config");
    for (name, pem) in [
        ("chain.crt", &cert),
        ("your_domain.crt", &cert),
        ("your_domain.key", &key),
    ] {
        std::fs::write(dir.join("certs").join(name), pem).expect("cert");
    }
    let out = check_offline(&dir, &[], &[("CONFIG_FILE", Path::new("config.yaml"))]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "container config:\n{}", show(&out));

    // systemd layout: absolute paths, secrets from $CREDENTIALS_DIRECTORY.
    let dir = temp_dir("unit");
    for sub in ["certs", "state", "creds"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let d = dir.display().to_string();
    let cfg = filled("systemd/config.yaml")
        .replace("/etc/msgtrace/certs", &format!("{d}/certs"))
        .replace("/var/lib/msgtrace", &format!("{d}/state"));
    std::fs::write(dir.join("config.yaml"), cfg).expect("config");
    std::fs::write(dir.join("certs/chain.crt"), &cert).expect("chain");
    std::fs::write(dir.join("certs/devo.crt"), &cert).expect("cert");
    std::fs::write(dir.join("creds/devo.key"), &key).expect("key");
    std::fs::write(dir.join("creds/client_secret"), "not-a-real-secret\n").expect("secret");
    let config = dir.join("config.yaml");
    let creds = dir.join("creds");
    let out = check_offline(
        &dir,
        &["-c", &config.display().to_string()],
        &[("CREDENTIALS_DIRECTORY", &creds)],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "systemd config:\n{}", show(&out));
}

// ---------------------------------------------------------------- the image

/// Whether buildah runs here, installing it once (tests/support/install-tools.sh) if not.
fn buildah_installed() -> bool {
    if have("buildah", &["--version"]) {
        return true;
    }
    let _ = Command::new("timeout")
        .arg("900")
        .arg("bash")
        .arg(root().join("tests/support/install-tools.sh"))
        .status();
    have("buildah", &["--version"])
}

/// `buildah ARGS` with its storage under `storage` (nothing global is touched), within
/// a deadline; panics with buildah's output when it fails.
fn buildah(storage: &Path, args: &[&str]) -> String {
    let child = Command::new("buildah")
        .arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("run"))
        .args(["--storage-driver", "vfs"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn buildah");
    let out = wait_with_deadline(child, Duration::from_secs(300));
    assert!(out.status.success(), "buildah {args:?}:\n{}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    match v {
        Value::Object(o) => o.get(key).unwrap_or(&Value::Null),
        _ => &Value::Null,
    }
}

fn text(v: &Value) -> &str {
    match v {
        Value::String(s) => s,
        _ => "",
    }
}

fn texts(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().map(|x| text(x).to_string()).collect(),
        _ => Vec::new(),
    }
}

/// What an OCI runtime takes from the image config to start the container.
struct ImageConfig {
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<(String, String)>,
    workdir: String,
    uid: u32,
    gid: u32,
    volumes: BTreeSet<String>,
}

/// Push the image to an OCI `dir:` layout, unpack its layers in order into `rootfs`,
/// and read its config.
fn unpack_image(storage: &Path, image: &str, layout: &Path, rootfs: &Path) -> ImageConfig {
    let dest = format!("dir:{}", layout.display());
    buildah(storage, &["push", "--disable-compression", image, &dest]);
    let blob = |digest: &str| layout.join(digest.strip_prefix("sha256:").unwrap_or(digest));
    let manifest: Value = json::from_str(&read(&layout.join("manifest.json"))).expect("manifest");
    std::fs::create_dir_all(rootfs).unwrap();
    let Value::Array(layers) = field(&manifest, "layers") else {
        panic!(
            "manifest without layers: {}",
            read(&layout.join("manifest.json"))
        );
    };
    for layer in layers {
        let out = Command::new("tar")
            .arg("-xf")
            .arg(blob(text(field(layer, "digest"))))
            .arg("-C")
            .arg(rootfs)
            .output()
            .expect("tar runs");
        assert!(out.status.success(), "unpack layer:\n{}", show(&out));
    }
    let config_path = blob(text(field(field(&manifest, "config"), "digest")));
    let config: Value = json::from_str(&read(&config_path)).expect("image config");
    let c = field(&config, "config");
    let user = text(field(c, "User"));
    let (uid, gid) = user
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .unwrap_or_else(|| panic!("image user {user:?} is not numeric uid:gid"));
    let env = texts(field(c, "Env"))
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let volumes = match field(c, "Volumes") {
        Value::Object(o) => o.keys().cloned().collect(),
        _ => BTreeSet::new(),
    };
    ImageConfig {
        entrypoint: texts(field(c, "Entrypoint")),
        cmd: texts(field(c, "Cmd")),
        env,
        workdir: text(field(c, "WorkingDir")).to_string(),
        uid,
        gid,
        volumes,
    }
}

/// Run the image's entrypoint with `args` (replacing its Cmd) the way a container
/// runtime would, minus namespaces: chroot into `rootfs`, the image's working
/// directory, user and environment only. `Err` when chroot is not permitted here.
fn run_image(
    rootfs: &Path,
    image: &ImageConfig,
    args: &[&str],
    deadline: Duration,
) -> std::io::Result<Output> {
    let root = CString::new(rootfs.as_os_str().as_bytes()).unwrap();
    let workdir = CString::new(image.workdir.as_str()).unwrap();
    let (uid, gid) = (image.uid, image.gid);
    let (program, entry_args) = image.entrypoint.split_first().expect("entrypoint");
    let mut cmd = Command::new(program);
    cmd.args(entry_args)
        .args(args)
        .env_clear()
        .envs(image.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe syscalls between fork and exec, on CStrings made
    // before the fork; the order is the runtime's: new root, then cwd, then drop to
    // the image's user (after which chroot would no longer be allowed).
    unsafe {
        cmd.pre_exec(move || {
            if libc::chroot(root.as_ptr()) != 0
                || libc::chdir(workdir.as_ptr()) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(wait_with_deadline(cmd.spawn()?, deadline))
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
}

/// Below its builder stage, examples/deploy/Dockerfile.source (build from a clean clone) is
/// Dockerfile.scratch (the tested, prebuilt path) line for line, so the two images agree.
#[test]
fn both_dockerfiles_make_the_same_final_image() {
    let final_stage = |name: &str| -> Vec<String> {
        let text = read(&root().join(name));
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        let at = lines
            .iter()
            .rposition(|l| l == "FROM scratch")
            .unwrap_or_else(|| panic!("{name}: no final `FROM scratch` stage"));
        lines[at..].to_vec()
    };
    let prebuilt = final_stage("Dockerfile.scratch");
    let source = final_stage("examples/deploy/Dockerfile.source");
    assert_eq!(prebuilt[1], "COPY target/msgtrace-static /msgtrace");
    assert_eq!(source[1], "COPY --from=build /msgtrace-static /msgtrace");
    assert_eq!(prebuilt[2..], source[2..], "final stages differ");
    assert_eq!(prebuilt.len(), 8, "{prebuilt:#?}");
    let dockerignore = read(&root().join(".dockerignore"));
    assert!(dockerignore.lines().any(|l| l == "!target/msgtrace-static"));
}

/// Issue 16 item 4: the image is built (buildah, as `make image` does with
/// `--isolation chroot`) and its root filesystem runs `--version`, `check --offline` and
/// `run --once` against the emulator and a Devo-like TLS receiver on loopback, with the
/// config, certs and state volumes of the vendor's layout.
#[test]
fn scratch_image_builds_and_runs_with_the_vendor_volumes() {
    let Some(static_bin) = std::env::var_os("MSGTRACE_STATIC_BIN") else {
        crate::skip!("MSGTRACE_STATIC_BIN is not set (`make test` sets it after `make static`)");
    };
    if !buildah_installed() {
        crate::skip!(
            "buildah is not installed and tests/support/install-tools.sh could not install it"
        );
    }
    let started = Instant::now();
    let w = Workdir::new("image");

    // Build context: only what Dockerfile.scratch copies.
    let ctx = w.file("context");
    std::fs::create_dir_all(ctx.join("target")).unwrap();
    for name in ["Dockerfile.scratch", ".dockerignore"] {
        std::fs::copy(root().join(name), ctx.join(name)).unwrap();
    }
    std::fs::copy(&static_bin, ctx.join("target/msgtrace-static")).unwrap();
    let storage = w.file("storage");
    let tag = "localhost/msgtrace-it:test";
    let ctx_arg = ctx.display().to_string();
    buildah(
        &storage,
        &[
            "bud",
            "--isolation",
            "chroot",
            "-f",
            "Dockerfile.scratch",
            "-t",
            tag,
            &ctx_arg,
        ],
    );
    let rootfs = w.file("rootfs");
    let image = unpack_image(&storage, tag, &w.file("oci"), &rootfs);

    // The image is the binary and its working directory, nothing else.
    let mut entries: Vec<String> = std::fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["devo-collector", "msgtrace"], "image root");
    assert_eq!(
        std::fs::read(rootfs.join("msgtrace")).unwrap(),
        std::fs::read(&static_bin).unwrap()
    );
    assert_eq!(image.entrypoint, ["/msgtrace"]);
    assert_eq!(image.cmd, ["run"]);
    assert_eq!(image.workdir, "/devo-collector");
    assert_eq!((image.uid, image.gid), (10001, 10001));
    assert!(image
        .env
        .contains(&("CONFIG_FILE".to_string(), "config.yaml".to_string())));
    let volumes: Vec<&str> = image.volumes.iter().map(String::as_str).collect();
    assert_eq!(
        volumes,
        [
            "/devo-collector/certs",
            "/devo-collector/config",
            "/devo-collector/state"
        ]
    );

    // The vendor's volumes, as `docker run -v` would mount them; state/ belongs to the
    // image's user (README: chown -R 10001:10001 state).
    let emu = Emulator::start(EmuOptions::default());
    let pki_dir = w.file("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let pki = Pki::create(&pki_dir);
    let rx = RawReceiver::start(&pki, RawOptions::default());
    let vol = rootfs.join("devo-collector");
    for sub in ["config", "certs", "state"] {
        std::fs::create_dir_all(vol.join(sub)).unwrap();
    }
    chown(&vol.join("state"), image.uid, image.gid);
    for (from, to) in [
        ("ca.pem", "chain.crt"),
        ("client.pem", "mydomain.crt"),
        ("client.key", "mydomain.key"),
    ] {
        std::fs::copy(pki.path(from), vol.join("certs").join(to)).unwrap();
    }
    emu.write_ca(vol.join("certs/emulator-ca.pem")).unwrap();
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.outputs = tls_output_yaml(
        "devo_1",
        "devo_platform",
        rx.port,
        Path::new("chain.crt"),
        Path::new("mydomain.crt"),
        Path::new("mydomain.key"),
    );
    std::fs::write(vol.join("config/config.yaml"), cfg.yaml()).unwrap();

    let limit = Duration::from_secs(60);
    let out = match run_image(&rootfs, &image, &["--version"], limit) {
        Ok(out) => out,
        Err(e) => crate::skip!("cannot chroot into the image's root filesystem here: {e}"),
    };
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--version:\n{}", show(&out));
    assert!(
        version.contains("-linux-musl, release)"),
        "the image holds the musl release build: {version}"
    );

    let out = run_image(&rootfs, &image, &["check", "--offline"], limit).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "check --offline:\n{}", show(&out));
    assert!(
        stdout.contains("✓ config config/config.yaml is valid"),
        "{stdout}"
    );
    assert!(!stdout.contains('✗'), "{stdout}");

    let out = run_image(&rootfs, &image, &["run", "--once"], limit).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run --once:\n{}", show(&out));
    // Every record of the covered range reached the receiver once, as Devo lines.
    let input = "office365_exchange_message";
    let start = logged_start(&stderr, input).expect("start logged");
    // The state file belongs to the image's user (10001): `peek` refuses to read another
    // user's file (SPEC §6), so the test decodes its bytes directly.
    let state = msgtrace::state::state_path(&vol.join("state"), "1000", RWS_SERVICE);
    let end = msgtrace::state::recover(&std::fs::read(&state).unwrap())
        .cursor
        .expect("a cursor in the image's state file")
        .window_start;
    let expected: BTreeSet<(String, String)> = emu
        .expected("tenant-1", start, end, crate::emulator::now_secs())
        .iter()
        .map(|x| (x.message_trace_id.clone(), x.recipient.clone()))
        .collect();
    assert!(!expected.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let conns = rx.connections();
        let text = String::from_utf8_lossy(&conns.concat()).into_owned();
        if text.matches('\n').count() >= expected.len() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let payloads: Vec<&str> = lines
        .lines()
        .map(|l| {
            l.split_once(" cloud.office365.messagetracing: ")
                .unwrap_or_else(|| panic!("not a Devo line: {l}"))
                .1
        })
        .collect();
    let events = json_lines(&payloads.join("\n"));
    let got: BTreeSet<(String, String)> = events
        .iter()
        .map(|e| {
            (
                s(e, "MessageTraceId").unwrap_or("").to_string(),
                s(e, "RecipientAddress").unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(events.len(), expected.len(), "one line per record");
    assert!(
        got == expected,
        "delivered records differ from the emulator's"
    );
    // The cursor was written by the image's user into the state volume.
    let state = msgtrace::state::state_path(&vol.join("state"), "1000", RWS_SERVICE);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&state).unwrap().uid(), image.uid);
    eprintln!(
        "image: built and ran in {:.1}s; {} records delivered from its root filesystem",
        started.elapsed().as_secs_f64(),
        events.len()
    );
}
