//! Config loader: golden fixtures (`tests/fixtures/config/`), the vendor layout,
//! secrets never leaking, and a deterministic mutation run proving the parser never panics.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use msgtrace::check::{offline_steps_in, Step};
use msgtrace::config::{
    self, parse_json, parse_str_with_env, parse_yaml, validate, Config, OutputKind,
};
use msgtrace::Error;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

/// The environment the fixtures see.
fn fake_env(name: &str) -> Option<String> {
    match name {
        "MSGTRACE_TEST_PORT" => Some("443".into()),
        "MSGTRACE_TEST_TENANT" => Some("tenant-from-env".into()),
        "MSGTRACE_TEST_SECRET" => Some("secret-from-env".into()),
        _ => None,
    }
}

/// Values that must never appear in any rendering.
const SECRETS: &[&str] = &[
    "tenant-aaaa-0001",
    "client-bbbb-0002",
    "secret-cccc-0003",
    "tenant-dddd-0004",
    "secret-from-env",
    "tenant-from-env",
    "file-secret-value",
    "not-a-real-secret",
    "gcid-shared-app-0005",
    "ocid-own-app-0006",
    "tenant-eeee-0007",
    "tenant-ffff-0008",
];

fn opt_path(p: &Option<PathBuf>) -> String {
    p.as_ref().map_or("-".into(), |p| p.display().to_string())
}

/// A stable text form of a loaded config (secrets only obfuscated).
fn summary(cfg: &Config) -> String {
    let mut s = String::from("ok\n");
    let g = &cfg.globals;
    let _ = writeln!(
        s,
        "globals: debug={} id={:?} name={:?} state_dir={}",
        g.debug,
        g.id,
        g.name,
        g.state_dir.display()
    );
    for o in &cfg.outputs {
        let kind = match &o.kind {
            OutputKind::Stdout => "stdout".to_string(),
            OutputKind::File { path, .. } => format!("file path={}", path.display()),
            OutputKind::Devo(t) | OutputKind::Syslog(t) | OutputKind::Relp(t) => format!(
                "{} {}:{} tls={} chain={} cert={} key={} tag={}",
                match o.kind {
                    OutputKind::Devo(_) => "devo",
                    OutputKind::Relp(_) => "relp",
                    _ => "syslog",
                },
                t.address,
                t.port,
                t.tls,
                opt_path(&t.chain),
                opt_path(&t.cert),
                opt_path(&t.key),
                t.tag
            ),
        };
        let _ = writeln!(s, "output {}: {kind}", o.name);
    }
    for i in &cfg.inputs {
        let c = &i.credentials;
        let _ = writeln!(
            s,
            "input {}: id={:?} enabled={} cutoff_days={} margin_secs={} tenant_id={} client_id={} client_secret={}",
            i.name, i.id, i.enabled, i.cutoff_days, i.margin_secs, c.tenant_id, c.client_id, c.client_secret
        );
        let v = &i.service;
        let _ = writeln!(
            s,
            "  service {:?}: timeout={} retries={} wait={} period={} window={} delay={} reset={:?} max_req={}",
            v.api, v.timeout_secs, v.retries, v.retry_wait_secs, v.period_secs, v.window_secs,
            v.delay_secs, v.reset_persistence_auth, v.max_requests_per_5_minutes
        );
        let _ = writeln!(
            s,
            "  reporting_url={}\n  auth_url={}\n  resource_url={}\n  graph_url={}\n  ca_file={}",
            v.reporting_url,
            v.auth_url,
            v.resource_url,
            v.graph_url,
            opt_path(&v.ca_file)
        );
    }
    for w in &cfg.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

fn render(name: &str, text: &str, base: &Path) -> String {
    let out = match parse_str_with_env(text, name, base, &fake_env) {
        Ok(cfg) => summary(&cfg),
        Err(Error::Config(lines)) => {
            let mut s = lines.join("\n");
            s.push('\n');
            s
        }
        Err(other) => format!("other error: {other}\n"),
    };
    out.replace(&base.display().to_string(), "<base>")
}

#[test]
fn golden_fixtures() {
    let dir = fixtures();
    let bless = crate::harness::bless();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml") | Some("json")
            )
        })
        .collect();
    names.sort();
    assert!(names.len() >= 30, "fixtures missing: {}", names.len());
    let mut failures = Vec::new();
    for path in names {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let got = render(&name, &text, &dir);
        for secret in SECRETS {
            assert!(!got.contains(secret), "{name} leaks a secret:\n{got}");
        }
        let expected_path = path.with_extension(format!(
            "{}.expected",
            path.extension().unwrap().to_str().unwrap()
        ));
        let expected_path = expected_path.with_file_name(
            expected_path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .replace(".yaml.expected", ".expected")
                .replace(".json.expected", ".expected"),
        );
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("missing {}", expected_path.display()));
        if got != want {
            failures.push(format!("--- {name}\nwant:\n{want}got:\n{got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_error_code_has_a_fixture() {
    let dir = fixtures();
    for code in 0..=20 {
        let exp = dir.join(format!("{code:03}_code_{code:02}.expected"));
        let text = std::fs::read_to_string(&exp).unwrap();
        assert!(
            text.contains(&format!("InitVariablesError({code}):")),
            "{} does not show code {code}:\n{text}",
            exp.display()
        );
    }
}

#[test]
fn several_mistakes_are_all_reported_with_positions() {
    let dir = fixtures();
    let name = "030_several_mistakes.yaml";
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    let Err(Error::Config(lines)) = parse_str_with_env(&text, name, &dir, &fake_env) else {
        panic!("expected config errors");
    };
    let all = lines.join("\n");
    for needle in [
        "030_several_mistakes.yaml:4:3: globals.debgu: unknown key — did you mean `debug`?",
        "030_several_mistakes.yaml:10:13: outputs.devo_1.config.port: `eighty` is not a number",
        "InitVariablesError(11): inputs.office365_exchange_message.max_historic_date_cutoff_days_back: 2000000 is out of range",
        "window_in_secods: unknown key — did you mean `window_in_seconds`?",
        "InitVariablesError(14)",
        "InitVariablesError(20)",
        "missing.crt` not found",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    assert!(lines.len() >= 7, "{all}");
}

#[test]
fn vendor_layout_loads_unchanged() {
    let base = fixtures().join("vendor");
    let cfg = config::load_from(Path::new("config/config.yaml"), &base).unwrap();
    assert_eq!(cfg.globals.name, "o365_emt_collector");
    assert_eq!(cfg.globals.state_dir, base.join("state"));
    assert!(!cfg.globals.debug);
    assert_eq!(cfg.outputs.len(), 1);
    let OutputKind::Devo(t) = &cfg.outputs[0].kind else {
        panic!("not devo")
    };
    assert_eq!(
        (t.address.as_str(), t.port, t.tls),
        ("collector-us.devo.io", 443, true)
    );
    assert_eq!(
        t.chain.as_deref(),
        Some(base.join("certs/chain.crt").as_path())
    );
    assert_eq!(t.tag, "cloud.office365.messagetracing");
    let input = &cfg.inputs[0];
    assert_eq!((input.id.as_str(), input.enabled), ("12345", true));
    assert_eq!(input.service.api, msgtrace::config::Api::Reporting);
    assert_eq!(
        input.service.reporting_url,
        "https://reports.office365.com/ecp/reportingwebservice/reporting.svc/MessageTrace"
    );
    assert_eq!(input.service.auth_url, "https://login.microsoftonline.com");
    assert_eq!(input.service.resource_url, "https://outlook.office365.com");
    assert_eq!(
        input.service.reset_persistence_auth.as_deref(),
        Some("2026-01-01")
    );
    assert_eq!(input.credentials.tenant_id.to_string(), "0f1e****");
    assert!(cfg.warnings.is_empty());
    assert!(!format!("{cfg:?}").contains("not-a-real-secret"));
}

#[test]
fn offline_check_of_vendor_layout_passes() {
    let tmp = std::env::temp_dir().join(format!("msgtrace-cfg-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_dir(&fixtures().join("vendor"), &tmp);
    let (cfg, steps) = offline_steps_in(Path::new("config/config.yaml"), &tmp);
    let shown: Vec<String> = steps.iter().map(Step::to_string).collect();
    assert!(cfg.is_some(), "{shown:#?}");
    assert!(steps.iter().all(|s| s.ok), "{shown:#?}");
    assert!(
        shown
            .iter()
            .any(|s| s.contains("cert and key belong together")),
        "{shown:#?}"
    );
    assert!(tmp.join("state").is_dir());
    assert!(
        !std::fs::read_dir(tmp.join("state")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".msgtrace-write-probe")),
        "the write probe is left behind"
    );

    // A broken key and a certificate that is not PEM: each step says so.
    std::fs::write(
        tmp.join("certs/mydomain.key"),
        "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    std::fs::write(tmp.join("certs/chain.crt"), "not a certificate\n").unwrap();
    let (_, steps) = offline_steps_in(Path::new("config/config.yaml"), &tmp);
    let shown: Vec<String> = steps.iter().map(Step::to_string).collect();
    let failed: Vec<&String> = shown.iter().filter(|s| s.starts_with('✗')).collect();
    assert_eq!(failed.len(), 2, "{shown:#?}");
    assert!(
        failed
            .iter()
            .any(|s| s.contains("chain") && s.contains("BEGIN CERTIFICATE")),
        "{shown:#?}"
    );

    // Valid base64 that is not a certificate.
    std::fs::write(
        tmp.join("certs/chain.crt"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (_, steps) = offline_steps_in(Path::new("config/config.yaml"), &tmp);
    assert!(
        steps
            .iter()
            .any(|s| !s.ok && s.what.contains("not valid X.509")),
        "{steps:#?}"
    );

    // An invalid config: one failed step per config error line.
    std::fs::write(tmp.join("config/config.yaml"), "globals:\n  debgu: 1\n").unwrap();
    let (cfg, steps) = offline_steps_in(Path::new("config/config.yaml"), &tmp);
    assert!(cfg.is_none());
    assert!(
        steps.len() >= 3 && steps.iter().all(|s| !s.ok),
        "{steps:#?}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn reference_table_lists_every_service_key() {
    let md = config::reference_table_markdown();
    assert!(md.starts_with(
        "| key | type | range | default | API | codes | meaning |\n|---|---|---|---|---|---|---|\n"
    ));
    assert_eq!(md.lines().count(), config::SERVICE_KEYS.len() + 2);
    for k in config::SERVICE_KEYS {
        assert!(md.contains(&format!("| {} |", k.name)));
    }
}

/// `globals.credentials` is inherited by every input, each key separately; the input's
/// own value wins (the fixture shows only obfuscated values, so check the real ones).
#[test]
fn global_credentials_are_inherited_key_by_key() {
    let dir = fixtures();
    let name = "064_ok_global_credentials.yaml";
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    let cfg = parse_str_with_env(&text, name, &dir, &fake_env).unwrap();
    let got: Vec<(&str, &str, &str)> = cfg
        .inputs
        .iter()
        .map(|i| {
            let c = &i.credentials;
            (
                c.tenant_id.expose(),
                c.client_id.expose(),
                c.client_secret.expose(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "tenant-aaaa-0001",
                "gcid-shared-app-0005",
                "file-secret-value"
            ),
            ("tenant-dddd-0004", "ocid-own-app-0006", "file-secret-value"),
            (
                "tenant-eeee-0007",
                "gcid-shared-app-0005",
                "secret-cccc-0003"
            ),
            ("tenant-ffff-0008", "client-bbbb-0002", "secret-from-env"),
        ]
    );
    // With both keys shared, an input without `credentials:` only lacks its tenant.
    let text = "globals:\n  credentials:\n    client_id: gcid-shared-app-0005\n    client_secret: s\noutputs:\n  o:\n    type: stdout\ninputs:\n  office365_exchange_message:\n    id: 1\n    services:\n      office365_exchange_message_service:\n";
    let Err(Error::Config(lines)) = parse_str_with_env(text, "c.yaml", &dir, &fake_env) else {
        panic!("a tenant is required")
    };
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("InitVariablesError(0)")
            && lines[0].contains(
                "with tenant_id (client_id and client_secret come from globals.credentials)"
            ),
        "{lines:?}"
    );
    // Without globals.credentials the messages are the vendor's (codes 4 and 6).
    let text = "outputs:\n  o:\n    type: stdout\ninputs:\n  office365_exchange_message:\n    id: 1\n    credentials:\n      tenant_id: t\n    services:\n      office365_exchange_message_service:\n";
    let Err(Error::Config(lines)) = parse_str_with_env(text, "c.yaml", &dir, &fake_env) else {
        panic!("client id and secret are required")
    };
    assert_eq!(
        lines,
        [
            "c.yaml:7:5: InitVariablesError(4): inputs.office365_exchange_message.credentials.client_id: missing — add `client_id:` (or `client_id_file: PATH`)",
            "c.yaml:7:5: InitVariablesError(6): inputs.office365_exchange_message.credentials.client_secret: missing — add `client_secret:` (or `client_secret_file: PATH`)",
        ]
    );
}

/// An MSSP's config: 1,000 tenants sharing one app registration (SPEC §2, issue 16).
/// Loading it (read, parse, validate, one secret file read) stays far below a second;
/// the bound here is loose for debug builds on a shared machine.
#[test]
fn thousand_inputs_with_inherited_credentials_load_fast() {
    let tmp = std::env::temp_dir().join(format!("msgtrace-cfg-1000-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(tmp.join("secrets")).unwrap();
    std::fs::write(tmp.join("secrets/app"), "shared-secret-value\n").unwrap();
    let mut text = String::from(
        "globals:\n  credentials:\n    client_id: 7c1e0000-aaaa-bbbb-cccc-000000000001\n    client_secret_file: secrets/app\noutputs:\n  o:\n    type: stdout\ninputs:\n",
    );
    for i in 0..1_000 {
        let _ = write!(
            text,
            "  office365_exchange_message_t{i:04}:\n    id: t{i:04}\n    credentials:\n      tenant_id: 0f1e{i:04}-0000-4000-8000-000000000000\n    services:\n      office365_exchange_message_graph_service:\n        max_requests_per_5_minutes: 50\n"
        );
    }
    assert!(text.len() < config::MAX_CONFIG_BYTES, "{}", text.len());
    std::fs::write(tmp.join("config.yaml"), &text).unwrap();
    let t0 = std::time::Instant::now();
    let cfg = config::load_from(Path::new("config.yaml"), &tmp).unwrap();
    let took = t0.elapsed();
    println!(
        "1,000 inputs with inherited credentials ({} bytes): loaded in {took:?}",
        text.len()
    );
    assert_eq!(cfg.inputs.len(), 1_000);
    assert!(cfg.inputs.iter().all(|i| {
        i.credentials.client_id.expose() == "7c1e0000-aaaa-bbbb-cccc-000000000001"
            && i.credentials.client_secret.expose() == "shared-secret-value"
            && i.service.max_requests_per_5_minutes == 50
    }));
    assert_eq!(
        cfg.inputs[999].credentials.tenant_id.expose(),
        "0f1e0999-0000-4000-8000-000000000000"
    );
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// xorshift64*: deterministic, no rand crate.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that exercise the grammar's corners.
const INTERESTING: &[&str] = &[
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    ":",
    ": ",
    "#",
    " #",
    "\"",
    "'",
    "''",
    "\\",
    "\\u",
    "\\x4",
    "\\U0010FFFF",
    "${",
    "${A}",
    "}",
    "&",
    "*",
    "!",
    "{",
    "[",
    "|",
    ">",
    "- ",
    "?",
    "---",
    "...",
    "%",
    "~",
    "null",
    "true",
    "-",
    "+",
    ".",
    "1e",
    "9999999999999999999999",
    "é",
    "\u{feff}",
    "\0",
];

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut s: Vec<char> = seed.chars().collect();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !s.is_empty() => {
                let at = rng.below(s.len());
                s.remove(at);
            }
            1 => {
                let at = rng.below(s.len() + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                for (k, c) in ins.chars().enumerate() {
                    s.insert(at + k, c);
                }
            }
            2 if !s.is_empty() => {
                let at = rng.below(s.len());
                s[at] = char::from_u32(rng.below(0x80) as u32).unwrap_or('x');
            }
            3 => {
                let cut = rng.below(s.len() + 1);
                s.truncate(cut);
            }
            _ if !s.is_empty() => {
                // Duplicate a random slice (re-indentation, repeated keys).
                let a = rng.below(s.len());
                let b = (a + rng.below(40)).min(s.len());
                let piece: Vec<char> = s[a..b].to_vec();
                let at = rng.below(s.len() + 1);
                for (k, c) in piece.into_iter().enumerate() {
                    s.insert(at + k, c);
                }
            }
            _ => {}
        }
    }
    s.into_iter().collect()
}

fn any_env(name: &str) -> Option<String> {
    (name.len() % 2 == 0).then(|| format!("v:{name}"))
}

/// CPU time consumed by the calling thread so far.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn parser_never_panics_on_mutated_and_truncated_input() {
    let dir = fixtures();
    let mut seeds: Vec<String> = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("json")
        ) {
            seeds.push(std::fs::read_to_string(&p).unwrap());
        }
    }
    seeds.push(std::fs::read_to_string(dir.join("vendor/config/config.yaml")).unwrap());
    let mut runs = 0usize;
    // Every prefix (by char) of every seed.
    for seed in &seeds {
        for (i, _) in seed.char_indices() {
            let prefix = &seed[..i];
            let _ = parse_yaml(prefix, &any_env).map(|t| validate(&t, "p.yaml", &dir));
            let _ = parse_json(prefix, &any_env).map(|t| validate(&t, "p.json", &dir));
            runs += 1;
        }
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..5_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let text = mutate(&mut rng, seed);
        let _ = parse_str_with_env(&text, "m.yaml", &dir, &any_env);
        let _ = parse_str_with_env(&text, "m.json", &dir, &any_env);
        runs += 1;
    }
    // Pathological shapes: deep nesting, long lines, many keys.
    let deep: String = (0..200)
        .map(|d| format!("{}k{d}:\n", " ".repeat(d)))
        .collect();
    assert!(parse_yaml(&deep, &any_env).is_err());
    let deep_json = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    assert!(parse_json(&deep_json, &any_env).is_err());
    let big = "a: ".to_string() + &"x".repeat(config::MAX_CONFIG_BYTES);
    assert!(parse_str_with_env(&big, "big.yaml", &dir, &any_env).is_err());
    // Huge flat shapes stay linear (duplicate keys, JSON key lookup, many mistakes).
    let flat: String = (0..100_000)
        .map(|i| format!("k{}: 1\n", i % 50_000))
        .collect();
    // This thread's CPU time, not the wall clock: other tests and jobs share the cores.
    let t0 = thread_cpu();
    let Err(Error::Config(lines)) = parse_str_with_env(&flat, "flat.yaml", &dir, &any_env) else {
        panic!("duplicates must be reported")
    };
    assert!(lines.len() <= config::MAX_DIAGS + 1);
    let flat_json = format!(
        "{{{}\"z\": 1}}",
        (0..60_000)
            .map(|i| format!("\"k{i}\": 1,"))
            .collect::<String>()
    );
    assert!(parse_str_with_env(&flat_json, "flat.json", &dir, &any_env).is_err());
    let long_key = format!("{}: 1\n", "k".repeat(100_000));
    assert!(parse_yaml(&long_key, &any_env).is_err());
    let long_json_key = format!("{{\"{}\": 1}}", "k".repeat(100_000));
    let Err(Error::Config(lines)) = parse_str_with_env(&long_json_key, "k.json", &dir, &any_env)
    else {
        panic!()
    };
    assert!(lines.iter().all(|l| l.len() < 2_000), "{lines:?}");
    let cpu = thread_cpu().saturating_sub(t0);
    assert!(cpu < std::time::Duration::from_secs(20), "{cpu:?} of CPU");
    assert!(runs > 5_000);
}
