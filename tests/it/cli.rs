//! The command line through the real binary: version, config errors, offline check,
//! the scratch (empty root) claim.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{bin, Workdir};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn version_names_target_and_profile() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(
        v.starts_with(&format!("msgtrace {} (", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(
        v.contains("-linux-") && (v.contains("debug)") || v.contains("release)")),
        "{v}"
    );
}

#[test]
fn usage_errors_exit_1() {
    let out = Command::new(bin()).arg("bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = Command::new(bin()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn several_mistakes_exit_2_and_name_each_one() {
    let w = Workdir::new("mistakes");
    copy_dir(&fixtures().join("certs"), &w.file("certs"));
    std::fs::copy(
        fixtures().join("030_several_mistakes.yaml"),
        w.file("config/030_several_mistakes.yaml"),
    )
    .unwrap();
    let out = w.run(&["run", "--once"], Duration::from_secs(20));
    // Without -c and without CONFIG_FILE, ./config.yaml is looked for.
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.yaml"));
    let out = w.run_env(
        &["run", "--once"],
        &[("CONFIG_FILE", "030_several_mistakes.yaml")],
        Duration::from_secs(20),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in [
        ":4:3: globals.debgu: unknown key — did you mean `debug`?",
        ":10:13: outputs.devo_1.config.port: `eighty` is not a number",
        "InitVariablesError(11)",
        "InitVariablesError(14)",
        "InitVariablesError(20)",
        "did you mean `window_in_seconds`?",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

#[test]
fn vendor_layout_passes_offline_check() {
    let w = Workdir::new("vendor");
    copy_dir(&fixtures().join("vendor"), &w.path);
    let out = w.run_env(
        &["check", "--offline"],
        &[("CONFIG_FILE", "config.yaml")],
        Duration::from_secs(20),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().all(|l| l.starts_with('✓')), "{stdout}");
    assert!(stdout.lines().count() >= 4, "{stdout}");
    // A missing key file fails that step with the fix, exit 2.
    std::fs::remove_file(w.file("certs/mydomain.key")).unwrap();
    let out = w.run_env(
        &["check", "--offline"],
        &[("CONFIG_FILE", "config.yaml")],
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains('✗'));
}

/// The scratch image holds nothing but the binary: prove it runs in an empty root.
#[test]
fn static_binary_runs_in_an_empty_root() {
    let Some(static_bin) = std::env::var_os("MSGTRACE_STATIC_BIN") else {
        crate::skip!("MSGTRACE_STATIC_BIN is not set (`make test` sets it after `make static`)");
    };
    let w = Workdir::new("scratch");
    let root = w.file("root");
    copy_dir(&fixtures().join("vendor"), &root.join("devo-collector"));
    std::fs::copy(&static_bin, root.join("msgtrace")).unwrap();
    let out = Command::new("unshare")
        .args([
            "--root",
            root.to_str().unwrap(),
            "--wd",
            "/devo-collector",
            "/msgtrace",
            "check",
            "--offline",
        ])
        .env_clear()
        .env("CONFIG_FILE", "config.yaml")
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("Operation not permitted") {
        crate::skip!("chroot (unshare --root) is not permitted here: {stderr}");
    }
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("✓ config config/config.yaml is valid"),
        "{stdout}"
    );
    let out = Command::new("unshare")
        .args(["--root", root.to_str().unwrap(), "/msgtrace", "--version"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("release)"));
}

/// The README's configuration reference is the validator's own table, so the two
/// cannot drift; and it keeps its two set-up commands.
#[test]
fn readme_carries_the_validators_key_table() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let table = msgtrace::config::reference_table_markdown();
    assert!(
        readme.contains(&table),
        "README's service key table differs from config::SERVICE_KEYS:\n{table}"
    );
    for cmd in ["make demo", "make test"] {
        assert!(readme.contains(cmd), "README lost `{cmd}`");
    }
    for code in 0..=20 {
        assert!(
            readme.contains(&format!("InitVariablesError({code})"))
                || readme.contains(&format!("({code})")),
            "README troubleshooting lacks code {code}"
        );
    }
}
