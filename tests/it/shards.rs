//! Tenant shards (SPEC §1, §8): three processes `run --once --shard I/3` on one config of
//! nine tenants deliver every record exactly once between them, each owning at least one
//! tenant; bad shard specs are usage errors; `state show --shard` lists a shard's inputs;
//! the StatefulSet recipe runs `--shard auto/N` with N replicas.
//!
//! Must not: depend on the test host's name (the `auto` case checks what this host gives).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use crate::emulator::{EmuOptions, Emulator, ExpectedRecord, TenantSpec};
use crate::harness::{
    final_cursor, input_name, json_lines, logged_start, many_tenants, s, Cfg, Workdir, RWS_SERVICE,
};

const SHARDS: u32 = 3;

#[test]
fn three_shards_deliver_every_record_exactly_once() {
    let tenants = many_tenants(9);
    // The assignment is the documented hash: every shard owns at least one tenant.
    let owner: Vec<u32> = tenants
        .iter()
        .map(|t| msgtrace::shard::shard_of(&t.1, SHARDS))
        .collect();
    for i in 0..SHARDS {
        assert!(
            owner.contains(&i),
            "shard {i} owns no tenant: {owner:?} — pick other tenant ids"
        );
    }
    let specs: Vec<TenantSpec> = tenants.iter().map(|t| TenantSpec::new(&t.1)).collect();
    let emu = Emulator::start(EmuOptions {
        tenants: specs,
        records_per_hour: 12,
        data_days: 3,
        ..EmuOptions::default()
    });
    let w = Workdir::new("shards");
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.tenants = tenants.clone();
    cfg.cutoff_days = 1;
    for i in 0..SHARDS {
        cfg.outputs =
            format!("  out_file:\n    type: file\n    config:\n      path: events-{i}.jsonl\n");
        w.write(&format!("config/shard{i}.yaml"), &cfg.yaml());
    }
    // Three replicas side by side, one state directory (state files are per input id).
    let mut procs: Vec<_> = (0..SHARDS)
        .map(|i| {
            let conf = format!("config/shard{i}.yaml");
            let shard = format!("{i}/{SHARDS}");
            let args = [
                "run",
                "--once",
                "--shard",
                shard.as_str(),
                "-c",
                conf.as_str(),
            ];
            w.spawn_log(&args, &[], &format!("shard-{i}.log"))
        })
        .collect();
    for (i, p) in procs.iter_mut().enumerate() {
        let st = p.wait(Duration::from_secs(120)).expect("shard finished");
        assert!(
            st.success(),
            "shard {i}:\n{}",
            w.read(&format!("shard-{i}.log"))
        );
    }
    let mut owner_of_key: HashMap<(String, String), (usize, &ExpectedRecord)> = HashMap::new();
    let mut expected: Vec<Vec<ExpectedRecord>> = Vec::new();
    for (n, (suffix, tenant, _, _)) in tenants.iter().enumerate() {
        let shard = owner[n];
        let log = w.read(&format!("shard-{shard}.log"));
        let input = input_name(suffix);
        let start =
            logged_start(&log, &input).unwrap_or_else(|| panic!("{input}: start in shard {shard}"));
        let end = final_cursor(&w.file("state"), &(1000 + n).to_string(), RWS_SERVICE).window_start;
        let recs = emu.expected(tenant, start, end, crate::emulator::now_secs());
        assert!(!recs.is_empty(), "{tenant}: no data in its range");
        expected.push(recs);
    }
    for (n, recs) in expected.iter().enumerate() {
        for r in recs {
            owner_of_key.insert(r.key(), (n, r));
        }
    }
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut per_shard = Vec::new();
    for i in 0..SHARDS {
        let log = w.read(&format!("shard-{i}.log"));
        let owned = owner.iter().filter(|o| **o == i).count();
        assert!(
            log.contains(&format!(
                "shard {i}/{SHARDS}: this replica runs {owned} of 9 enabled input(s): "
            )),
            "{log}"
        );
        assert_eq!(
            log.matches("Remote data is up to date!").count(),
            owned,
            "{log}"
        );
        let events = json_lines(&w.read(&format!("events-{i}.jsonl")));
        for e in &events {
            let key = (
                s(e, "MessageTraceId").unwrap_or("").to_string(),
                s(e, "RecipientAddress").unwrap_or("").to_string(),
            );
            let Some((n, r)) = owner_of_key.get(&key) else {
                panic!("shard {i}: event of no tenant's range: {key:?}");
            };
            assert_eq!(owner[*n], i, "shard {i} sent a record of {}", r.tenant);
            assert_eq!(s(e, "Organization"), Some(r.organization.as_str()));
            *seen.entry(key).or_default() += 1;
        }
        per_shard.push((owned, events.len()));
    }
    let dups = seen.values().filter(|n| **n > 1).count();
    assert_eq!(dups, 0, "records delivered more than once");
    let missing = owner_of_key
        .keys()
        .filter(|k| !seen.contains_key(*k))
        .count();
    assert_eq!(missing, 0, "records delivered by no shard");
    eprintln!(
        "[shards] 9 tenants in 3 shards (tenants, events): {per_shard:?}; {} records, each exactly once",
        seen.len()
    );

    // `state show --shard` lists exactly the inputs a shard owns, with their state files.
    for i in 0..SHARDS {
        let shard = format!("{i}/{SHARDS}");
        let out = w.run(
            &[
                "state",
                "show",
                "--shard",
                &shard,
                "-c",
                "config/shard0.yaml",
            ],
            Duration::from_secs(30),
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        let owned = owner.iter().filter(|o| **o == i).count();
        assert!(
            text.starts_with(&format!("shard {shard} owns {owned} of 9 input(s)\n")),
            "{text}"
        );
        assert_eq!(text.matches("  file: ").count(), owned, "{text}");
        for (n, (suffix, _, _, _)) in tenants.iter().enumerate() {
            let line = format!("{}#{} {RWS_SERVICE}:", input_name(suffix), 1000 + n);
            assert_eq!(text.contains(&line), owner[n] == i, "{line} in\n{text}");
        }
    }
}

#[test]
fn bad_shard_specs_are_usage_errors() {
    let w = Workdir::new("shard-usage");
    let cfg = Cfg::new("https://127.0.0.1:9");
    w.write("config/config.yaml", &cfg.yaml());
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = w.run_env(args, env, Duration::from_secs(30));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let conf = ["-c", "config/config.yaml"];
    for (spec, why) in [
        ("3/3", "shard index 3 is not below the count 3"),
        ("1", "expected I/N"),
        (
            "0/0",
            "the shard count must be a whole number from 1 to 4096",
        ),
        ("x/3", "the shard index must be a whole number or `auto`"),
    ] {
        let (code, err) = run(
            &[&["run", "--once", "--shard", spec][..], &conf].concat(),
            &[],
        );
        assert_eq!(code, Some(1), "{spec}: {err}");
        assert!(
            err.contains(&format!("usage: --shard {spec:?}: {why}")),
            "{err}"
        );
    }
    let (code, err) = run(
        &[&["run", "--once"][..], &conf].concat(),
        &[("MSGTRACE_SHARD", "5/2")],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("usage: MSGTRACE_SHARD \"5/2\": shard index 5"),
        "{err}"
    );
    // `auto` takes this host's trailing ordinal; checked with `state show` (no network).
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    let ordinal = msgtrace::shard::host_ordinal(host);
    let out = w.run(
        &[&["state", "show", "--shard", "auto/3"][..], &conf].concat(),
        Duration::from_secs(30),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    match ordinal {
        Some(o) if o < 3 => {
            assert!(out.status.success(), "{stderr}");
            assert!(
                stdout.starts_with(&format!("shard {o}/3 owns ")),
                "{stdout}"
            );
        }
        Some(o) => {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains(&format!("shard index {o} is not below")),
                "{stderr}"
            );
        }
        None => {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(
                stderr.contains(&format!("host name {host:?} has no trailing ordinal")),
                "{stderr}"
            );
        }
    }
}

#[test]
fn a_shard_without_tenants_has_nothing_to_do() {
    let w = Workdir::new("shard-empty");
    let cfg = Cfg::new("https://127.0.0.1:9");
    // tenant-1 alone: the shards of 2 that do not own it own nothing.
    let mine = msgtrace::shard::shard_of("tenant-1", 2);
    // No emulator: nothing may be pulled, so no CA file is needed either.
    let yaml = cfg
        .yaml()
        .replace("        ca_file: certs/emulator-ca.pem\n", "");
    w.write("config/config.yaml", &yaml);
    let other = format!("{}/2", 1 - mine);
    let out = w.run(
        &[
            "run",
            "--once",
            "--shard",
            &other,
            "-c",
            "config/config.yaml",
        ],
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "shard {other}: this replica runs 0 of 1 enabled input(s)"
        )),
        "{err}"
    );
    assert!(
        err.contains("nothing to do: this shard owns no input"),
        "{err}"
    );
    assert!(!w.file("events.jsonl").exists(), "no output opened");
    // Without --once it idles until stopped, alive and ready (it has nothing to do).
    w.write(
        "config/config.yaml",
        &yaml.replacen("globals:\n", "globals:\n  metrics_listen: 127.0.0.1:0\n", 1),
    );
    let mut p = w.spawn(&["run", "--shard", &other, "-c", "config/config.yaml"], &[]);
    let log = w.wait_log("stderr.log", "idle until stopped", Duration::from_secs(30));
    let port: u16 = log
        .lines()
        .find_map(|l| l.split("metrics on http://127.0.0.1:").nth(1))
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no metrics port:\n{log}"));
    for path in ["/healthz", "/readyz"] {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n"),
            "{path}: {answer}"
        );
    }
    p.signal("TERM");
    let st = p.wait(Duration::from_secs(8)).expect("stopped");
    assert_eq!(st.code(), Some(0));
}

const STATEFULSET_PY: &str = r#"
import sys, os, yaml
d = sys.argv[1]
docs = [x for x in yaml.safe_load_all(open(os.path.join(d, "kubernetes-shards.yaml"))) if x]
[sts] = [x for x in docs if x["kind"] == "StatefulSet"]
[svc] = [x for x in docs if x["kind"] == "Service"]
[cm] = [x for x in docs if x["kind"] == "ConfigMap"]
spec = sts["spec"]
n = spec["replicas"]
assert n >= 2
assert spec["serviceName"] == svc["metadata"]["name"]
assert svc["spec"]["clusterIP"] == "None"
assert spec["podManagementPolicy"] == "Parallel"
tpl = spec["template"]
[c] = tpl["spec"]["containers"]
args = c["args"]
i = args.index("--shard")
assert args[i + 1] == "auto/%d" % n, args
[vct] = spec["volumeClaimTemplates"]
mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
assert mounts["/devo-collector/state"] == vct["metadata"]["name"]
cfg = yaml.safe_load(list(cm["data"].values())[0])
port = int(cfg["globals"]["metrics_listen"].rsplit(":", 1)[1])
ann = tpl["metadata"]["annotations"]
assert ann["prometheus.io/scrape"] == "true" and int(ann["prometheus.io/port"]) == port
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
sc = c["securityContext"]
assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
for name, inp in cfg["inputs"].items():
    assert inp["credentials"]["tenant_id"], name
print("ok")
"#;

#[test]
fn statefulset_recipe_runs_one_shard_per_replica() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/deploy");
    let text = std::fs::read_to_string(dir.join("kubernetes-shards.yaml")).unwrap();
    let have_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_yaml {
        for needle in [
            "kind: StatefulSet",
            "- auto/",
            "volumeClaimTemplates:",
            "path: /readyz",
        ] {
            assert!(
                text.contains(needle),
                "kubernetes-shards.yaml: no {needle:?}"
            );
        }
        return;
    }
    let out = Command::new("python3")
        .arg("-c")
        .arg(STATEFULSET_PY)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
