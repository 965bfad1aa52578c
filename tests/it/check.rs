//! `msgtrace check` (online) through the real binary against the emulator: every step
//! passes, and each way it can fail names the fix.

use std::time::Duration;

use crate::emulator::{EmuOptions, Emulator, TenantSpec, ROLE_GRAPH, ROLE_RWS};
use crate::harness::{Cfg, Workdir};

fn check(emu: &Emulator, cfg: &Cfg, name: &str) -> (Option<i32>, String) {
    let w = Workdir::new(name);
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", &cfg.yaml());
    let out = w.run(
        &["check", "-c", "config/config.yaml"],
        Duration::from_secs(60),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn every_step_passes_against_the_emulator() {
    let emu = Emulator::start(EmuOptions::default());
    for graph in [false, true] {
        let mut cfg = Cfg::new(&emu.base_url());
        cfg.graph = graph;
        let (code, out) = check(&emu, &cfg, "check-ok");
        assert_eq!(code, Some(0), "{out}");
        let ticks = out.lines().filter(|l| l.starts_with('✓')).count();
        assert!(ticks >= 5, "{out}");
        assert!(out.contains("token obtained"), "{out}");
        let role = if graph { ROLE_GRAPH } else { ROLE_RWS };
        assert!(out.contains(&format!("token's roles hold {role}")), "{out}");
        assert!(out.contains("message trace service answers"), "{out}");
        assert!(out.contains("output out_file:"), "{out}");
        assert!(out.contains("state directory"), "{out}");
        assert!(!out.contains("secret-tenant-1"));
    }
}

#[test]
fn wrong_secret_fails_the_token_step() {
    let emu = Emulator::start(EmuOptions::default());
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants[0].3 = "not-the-secret".into();
    let (code, out) = check(&emu, &cfg, "check-secret");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("✗") && out.contains("SetupError(100)"),
        "{out}"
    );
    assert!(out.contains("check client_id and client_secret"), "{out}");
    assert!(!out.contains("not-the-secret"));
}

#[test]
fn missing_role_names_the_admin_consent_fix() {
    let mut t = TenantSpec::new("tenant-1");
    t.roles = vec![ROLE_RWS.to_string()];
    let emu = Emulator::start(EmuOptions {
        tenants: vec![t],
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    let (code, out) = check(&emu, &cfg, "check-role");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("lack {ROLE_GRAPH}")), "{out}");
    assert!(out.contains("Grant admin consent"), "{out}");
}

#[test]
fn graph_service_principal_missing_fails_the_service_step() {
    let mut t = TenantSpec::new("tenant-1");
    t.service_principal_missing = true;
    let emu = Emulator::start(EmuOptions {
        tenants: vec![t],
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    let (code, out) = check(&emu, &cfg, "check-sp");
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("New-MgServicePrincipal -AppId 8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"),
        "{out}"
    );
}

#[test]
fn unreachable_receiver_fails_the_output_step() {
    let emu = Emulator::start(EmuOptions::default());
    // A port nothing listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.outputs = format!(
        "  siem:\n    type: syslog\n    config:\n      address: 127.0.0.1\n      port: {port}\n      type: TCP\n"
    );
    let (code, out) = check(&emu, &cfg, "check-output");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.lines().any(|l| l.starts_with("✗ output siem")), "{out}");
    assert!(out.contains("check address, port"), "{out}");
}
