//! Prometheus metrics and health probes (SPEC §7) through the real binary against the
//! emulator: `/metrics` is accepted by `promtool check metrics` and its counters match
//! what the output received; `/healthz` and `/readyz` answer, `/readyz` names an output
//! that is down; bad listen values and busy ports are setup errors. Also the Kubernetes
//! recipe's probes and scrape annotation.
//!
//! Must not: listen anywhere but 127.0.0.1, or wait without a deadline.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::emulator::{EmuOptions, Emulator, TenantSpec};
use crate::harness::{json_lines, Cfg, Workdir};

/// A config of `cfg` with `globals.metrics_listen` set.
fn with_listen(yaml: &str, listen: &str) -> String {
    yaml.replacen(
        "globals:\n",
        &format!("globals:\n  metrics_listen: {listen}\n"),
        1,
    )
}

fn setup(name: &str, emu: &Emulator, yaml: &str) -> Workdir {
    let w = Workdir::new(name);
    emu.write_ca(w.file("certs/emulator-ca.pem")).unwrap();
    w.write("config/config.yaml", yaml);
    w
}

fn emulator() -> Emulator {
    Emulator::start(EmuOptions {
        tenants: vec![TenantSpec::new("tenant-1")],
        records_per_hour: 12,
        data_days: 3,
        ..EmuOptions::default()
    })
}

/// Wait until stderr.log contains `needle`; returns the log.
fn wait_log(w: &Workdir, needle: &str, limit: Duration) -> String {
    w.wait_log("stderr.log", needle, limit)
}

/// The port msgtrace logged for its listener (`metrics on http://127.0.0.1:P/metrics`).
fn metrics_port(w: &Workdir) -> u16 {
    let log = wait_log(w, "/metrics, health on", Duration::from_secs(30));
    log.lines()
        .find_map(|l| l.split("metrics on http://127.0.0.1:").nth(1))
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no metrics port logged:\n{log}"))
}

/// One raw HTTP exchange: (status, head, body).
fn exchange(port: u16, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("response read to the end");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("Content-Length");
    assert_eq!(body.len(), len, "{head}");
    (status, head.to_string(), body.to_string())
}

fn get(port: u16, path: &str) -> (u16, String, String) {
    exchange(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: it\r\n\r\n")
            .as_bytes(),
    )
}

/// The value of the sample whose name and labels are exactly `series`.
fn value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// `promtool check metrics` on `body`: Some(verdict) or None when promtool is missing
/// (a failure under MSGTRACE_STRICT: CI installs Debian's `prometheus` package).
fn promtool(body: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("MSGTRACE_STRICT").is_none(),
                "promtool not found ({e}): install Debian's prometheus package"
            );
            eprintln!("note: promtool not found ({e}); `promtool check metrics` skipped");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[test]
fn metrics_match_deliveries_and_promtool_accepts_them() {
    let emu = emulator();
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    // A long period: after the catch-up the collector idles and the counters stand still.
    cfg.period = 3600;
    let w = setup("metrics", &emu, &with_listen(&cfg.yaml(), "127.0.0.1:0"));
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    let port = metrics_port(&w);
    wait_log(&w, "Remote data is up to date!", Duration::from_secs(60));

    let (status, head, body) = get(port, "/metrics");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let events = json_lines(&w.read("events.jsonl"));
    assert!(!events.is_empty(), "the run delivered events");
    let input = "input=\"office365_exchange_message\"";
    let sent = value(
        &body,
        &format!("msgtrace_events_sent_total{{{input},output=\"out_file\"}}"),
    );
    assert_eq!(sent, Some(events.len() as f64), "{body}");
    let ok_requests = value(
        &body,
        &format!("msgtrace_requests_total{{{input},api=\"reporting\",code=\"200\"}}"),
    )
    .unwrap_or(0.0);
    let served = emu
        .request_log()
        .iter()
        .filter(|r| r.api == "rws" && r.status == 200)
        .count();
    assert_eq!(ok_requests, served as f64, "{body}");
    assert_eq!(
        value(
            &body,
            &format!("msgtrace_requests_total{{{input},api=\"token\",code=\"200\"}}")
        ),
        Some(1.0),
        "{body}"
    );
    // Up to date: the cursor is within one window of now − delay.
    let lag = value(
        &body,
        &format!("msgtrace_lag_seconds{{{input},pass=\"first\"}}"),
    )
    .unwrap_or(-1.0);
    assert!(
        (3600.0..=3600.0 + 3600.0 + 120.0).contains(&lag),
        "lag {lag}:\n{body}"
    );
    for (series, want) in [
        (format!("msgtrace_window_failures_total{{{input}}}"), 0.0),
        ("msgtrace_output_up{output=\"out_file\"}".to_string(), 1.0),
        (format!("msgtrace_input_failing_periods{{{input}}}"), 0.0),
    ] {
        assert_eq!(value(&body, &series), Some(want), "{series}:\n{body}");
    }
    assert!(value(&body, &format!("msgtrace_events_filtered_total{{{input}}}")).is_some());
    assert!(value(&body, "msgtrace_output_queue_bytes{output=\"out_file\"}").is_some());
    assert!(value(&body, "msgtrace_resident_memory_bytes").is_some_and(|v| v > 1e5));
    assert!(
        body.lines().any(|l| l.starts_with(&format!(
            "msgtrace_build_info{{version=\"{}\",target=\"",
            env!("CARGO_PKG_VERSION")
        )) && l.ends_with("\"} 1")),
        "{body}"
    );
    if let Some((ok, said)) = promtool(&body) {
        assert!(ok, "promtool check metrics:\n{said}\n{body}");
    }
    eprintln!("[metrics] sample /metrics:\n{body}");

    assert_eq!(get(port, "/healthz").0, 200);
    let (status, _, body) = get(port, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(port, "/").0, 404);
    let (status, head, _) = exchange(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET"), "{head}");
    assert_eq!(exchange(port, b"GET /metrics HTTP/9.9\r\n\r\n").0, 505);
    assert_eq!(exchange(port, b"hello\r\n\r\n").0, 400);
    // A client that sends half a request and stalls is cut off; the listener still serves.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(b"GET /metr").unwrap();
    assert_eq!(get(port, "/healthz").0, 200);
    drop(stalled);

    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(8)).is_some(), "stopped");
}

#[test]
fn readyz_names_an_output_that_is_down_until_it_is_back() {
    let emu = emulator();
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.period = 3600;
    let receiver_port = crate::receivers::free_port();
    cfg.outputs = format!(
        "  sys_1:\n    type: syslog\n    config:\n      address: 127.0.0.1\n      port: {receiver_port}\n      type: TCP\n"
    );
    let w = setup("readyz", &emu, &with_listen(&cfg.yaml(), "127.0.0.1:0"));
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    let port = metrics_port(&w);
    wait_log(
        &w,
        "is not available, pulling paused",
        Duration::from_secs(30),
    );
    let (status, _, body) = get(port, "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (503, "output sys_1 is not connected\n")
    );
    assert_eq!(get(port, "/healthz").0, 200, "alive while not ready");
    let (_, _, metrics) = get(port, "/metrics");
    assert_eq!(
        value(&metrics, "msgtrace_output_up{output=\"sys_1\"}"),
        Some(0.0)
    );
    // The receiver comes up: the output connects, /readyz turns 200.
    let listener = std::net::TcpListener::bind(("127.0.0.1", receiver_port)).expect("bind");
    let drain = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = [0u8; 65536];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    });
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _, body) = get(port, "/readyz");
        if status == 200 {
            break;
        }
        assert!(Instant::now() < until, "still not ready: {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, _, metrics) = get(port, "/metrics");
    assert_eq!(
        value(&metrics, "msgtrace_output_up{output=\"sys_1\"}"),
        Some(1.0)
    );
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(8)).is_some(), "stopped");
    drop(p);
    let _ = drain.join();
}

#[test]
fn bad_listen_values_and_busy_ports_are_setup_errors() {
    let emu = emulator();
    let cfg = Cfg::new(&emu.base_url());
    let w = setup("listen-bad", &emu, &with_listen(&cfg.yaml(), "127.0.0.1"));
    let out = w.run(
        &["check", "--offline", "-c", "config/config.yaml"],
        Duration::from_secs(30),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("config.yaml:2:19: globals.metrics_listen: \"127.0.0.1\" is not host:port"),
        "{text}"
    );
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap().to_string();
    let w = setup("listen-busy", &emu, &with_listen(&cfg.yaml(), &taken));
    let out = w.run(
        &["run", "--once", "-c", "config/config.yaml"],
        Duration::from_secs(30),
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(
        log.contains(&format!(
            "globals.metrics_listen: cannot listen on {taken}: "
        )),
        "{log}"
    );
    drop(busy);
}

const KUBERNETES_PROBES_PY: &str = r#"
import sys, os, yaml
d = sys.argv[1]
docs = [x for x in yaml.safe_load_all(open(os.path.join(d, "kubernetes.yaml"))) if x]
dep = [x for x in docs if x["kind"] == "Deployment"][0]
cm = [x for x in docs if x["kind"] == "ConfigMap"][0]
cfg = yaml.safe_load(list(cm["data"].values())[0])
host, port = cfg["globals"]["metrics_listen"].rsplit(":", 1)
assert host == "0.0.0.0", host
port = int(port)
tpl = dep["spec"]["template"]
ann = tpl["metadata"]["annotations"]
assert ann["prometheus.io/scrape"] == "true"
assert int(ann["prometheus.io/port"]) == port
assert ann["prometheus.io/path"] == "/metrics"
[c] = tpl["spec"]["containers"]
assert c["ports"][0]["containerPort"] == port
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
for p in ["livenessProbe", "readinessProbe"]:
    hp = c[p]["httpGet"]["port"]
    assert hp == port or hp == c["ports"][0]["name"], (p, hp)
print("ok")
"#;

#[test]
fn kubernetes_recipe_has_probes_and_the_scrape_annotation() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/deploy");
    let have_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have_yaml {
        let out = Command::new("python3")
            .arg("-c")
            .arg(KUBERNETES_PROBES_PY)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let text = std::fs::read_to_string(dir.join("kubernetes.yaml")).unwrap();
    for needle in [
        "metrics_listen: 0.0.0.0:9464",
        "prometheus.io/scrape: \"true\"",
        "path: /healthz",
        "path: /readyz",
    ] {
        assert!(text.contains(needle), "kubernetes.yaml: no {needle:?}");
    }
}

#[test]
fn graph_inputs_report_their_request_budget() {
    let emu = emulator();
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.graph = true;
    cfg.cutoff_days = 1;
    cfg.period = 3600;
    cfg.service_extra = "        max_requests_per_5_minutes: 50\n".into();
    let w = setup(
        "metrics-graph",
        &emu,
        &with_listen(&cfg.yaml(), "127.0.0.1:0"),
    );
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    let port = metrics_port(&w);
    wait_log(&w, "Remote data is up to date!", Duration::from_secs(60));
    let (_, _, body) = get(port, "/metrics");
    let input = "input=\"office365_exchange_message\"";
    let graph_requests: f64 = body
        .lines()
        .filter(|l| l.starts_with(&format!("msgtrace_requests_total{{{input},api=\"graph\",")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(graph_requests >= 1.0, "{body}");
    assert_eq!(
        value(
            &body,
            &format!("msgtrace_graph_budget_remaining{{{input}}}")
        ),
        Some(50.0 - graph_requests),
        "{body}"
    );
    let sent = value(
        &body,
        &format!("msgtrace_events_sent_total{{{input},output=\"out_file\"}}"),
    );
    assert_eq!(
        sent,
        Some(json_lines(&w.read("events.jsonl")).len() as f64),
        "{body}"
    );
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(8)).is_some(), "stopped");
}

#[test]
fn readyz_names_an_input_that_failed_three_periods_in_a_row() {
    let mut spec = TenantSpec::new("tenant-1");
    spec.unavailable = true;
    let emu = Emulator::start(EmuOptions {
        tenants: vec![spec],
        records_per_hour: 12,
        data_days: 3,
        ..EmuOptions::default()
    });
    let mut cfg = Cfg::new(&emu.base_url());
    cfg.cutoff_days = 1;
    cfg.period = 1;
    let w = setup(
        "readyz-input",
        &emu,
        &with_listen(&cfg.yaml(), "127.0.0.1:0"),
    );
    let mut p = w.spawn(&["run", "-c", "config/config.yaml"], &[]);
    let port = metrics_port(&w);
    let until = Instant::now() + Duration::from_secs(60);
    let body = loop {
        let (status, _, body) = get(port, "/readyz");
        if status == 503 && body.starts_with("input ") {
            break body;
        }
        assert!(Instant::now() < until, "still {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // 3 or, on a slow host, a period more by the time of the probe.
    let periods = body
        .strip_prefix("input office365_exchange_message#1000 failed ")
        .and_then(|r| r.strip_suffix(" periods in a row\n"))
        .and_then(|n| n.parse::<u32>().ok());
    assert!(periods.is_some_and(|n| (3..=4).contains(&n)), "{body}");
    let (_, _, metrics) = get(port, "/metrics");
    let input = "input=\"office365_exchange_message\"";
    assert!(
        value(
            &metrics,
            &format!("msgtrace_window_failures_total{{{input}}}")
        )
        .is_some_and(|v| v >= 3.0),
        "{metrics}"
    );
    assert!(
        value(
            &metrics,
            &format!("msgtrace_requests_total{{{input},api=\"reporting\",code=\"503\"}}")
        )
        .is_some_and(|v| v >= 18.0),
        "{metrics}"
    );
    assert_eq!(get(port, "/healthz").0, 200);
    p.signal("TERM");
    assert!(p.wait(Duration::from_secs(8)).is_some(), "stopped");
}
