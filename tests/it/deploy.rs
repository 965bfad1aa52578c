//! Deployment recipes (examples/deploy/): the compose file, the Kubernetes manifest, the
//! systemd unit and the sample configs agree with each other, with Dockerfile.scratch and
//! with the vendor's volume layout.
//!
//! Owns: static checks of those files, `systemd-analyze verify`/`security` when installed,
//! YAML structure through python3's yaml module when present (else substring checks).
//! Must not: need Docker, Kubernetes or a running systemd, or touch anything outside a
//! temporary directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
