//! `up`/`down`/`status` and compose/ (issue 6): the compose file through the real
//! `docker-compose config`, the Prometheus config and rules through the real `promtool`, and
//! the native backend starting, checking and stopping the real Prometheus.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{bin, free_port, which};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn tool(name: &str, package: &str) -> PathBuf {
    which(name).unwrap_or_else(|| panic!("{name} is not installed: scripts/test.sh installs it (apt-get install {package})"))
}

#[test]
fn docker_compose_accepts_the_compose_file_and_every_port_and_image_is_pinned_down() {
    let dc = tool("docker-compose", "docker-compose");
    let file = repo("compose/docker-compose.yml");
    let out = Command::new(&dc).arg("-f").arg(&file).arg("config").env("SERPHONA_OBS_GRAFANA_PASSWORD", "test-password").output().unwrap();
    assert!(out.status.success(), "docker-compose config: {}", text(&out));
    // Without a password Grafana would start with its default one: compose refuses.
    let out = Command::new(&dc).arg("-f").arg(&file).arg("config").env_remove("SERPHONA_OBS_GRAFANA_PASSWORD").output().unwrap();
    assert!(!out.status.success() && text(&out).contains("SERPHONA_OBS_GRAFANA_PASSWORD"), "{}", text(&out));

    let compose: serde_json::Value = serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let services = compose["services"].as_object().unwrap();
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    for want in ["prometheus", "loki", "tempo", "grafana", "clickhouse"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let exact = regex::Regex::new(r"^[a-z0-9./_-]+:v?\d+\.\d+\.\d+(\.\d+)?$").unwrap();
    let mut ports = 0;
    for (name, svc) in services {
        let image = svc["image"].as_str().unwrap_or_else(|| panic!("{name} has no image"));
        assert!(exact.is_match(image), "{name}: image {image:?} is not pinned to an exact version");
        for port in svc["ports"].as_array().into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(port.starts_with("127.0.0.1:"), "{name}: port {port:?} is not bound to 127.0.0.1");
            ports += 1;
        }
        for volume in svc["volumes"].as_array().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(
                source.starts_with('.') || compose["volumes"].get(source).is_some(),
                "{name}: volume {source:?} is neither a file of compose/ nor a named volume"
            );
        }
    }
    assert_eq!(ports, 8, "Prometheus, Loki, Grafana 1 each, Tempo 3, ClickHouse 2");
    for healthy in ["prometheus", "loki", "clickhouse", "grafana"] {
        assert!(services[healthy]["healthcheck"]["test"].is_array(), "{healthy} has no healthcheck");
    }
    assert_eq!(services["grafana"]["depends_on"]["prometheus"]["condition"], "service_healthy");
    assert_eq!(services["prometheus"]["extra_hosts"][0], "host.docker.internal:host-gateway");
    let grafana_env = services["grafana"]["environment"].as_object().unwrap();
    assert!(grafana_env["GF_SECURITY_ADMIN_PASSWORD"].as_str().unwrap().starts_with("${SERPHONA_OBS_GRAFANA_PASSWORD:?"));
    // The datasources the dashboards use are provisioned with their fixed uids.
    let ds = std::fs::read_to_string(repo("compose/grafana/provisioning/datasources/serphona.yml")).unwrap();
    for uid in ["serphona-prometheus", "serphona-loki", "serphona-tempo", "serphona-clickhouse"] {
        assert!(ds.contains(&format!("uid: {uid}")), "{uid} not provisioned");
    }
}

#[test]
fn promtool_accepts_the_prometheus_config_and_the_rules_and_the_rules_fire() {
    let promtool = tool("promtool", "prometheus");
    let out = Command::new(&promtool).args(["check", "config"]).arg(repo("compose/prometheus/prometheus.yml")).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // Every rule file prometheus.yml loads: the fixed-threshold alerts and the anomaly rules
    // (their own unit tests, compose/prometheus/anomaly_rules_test.yml, run in scripts/test.sh).
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(repo("compose/prometheus/rules.yml"))
        .arg(repo("compose/prometheus/anomaly_rules.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let rules = String::from_utf8_lossy(&out.stdout).to_string();
    let counts: Vec<&str> = rules.lines().filter(|l| l.contains("rules found")).map(str::trim).collect();
    assert_eq!(counts, ["SUCCESS: 10 rules found", "SUCCESS: 33 rules found"], "{rules}");
    let config = std::fs::read_to_string(repo("compose/prometheus/prometheus.yml")).unwrap();
    assert!(config.contains("rule_files:\n  - rules.yml\n  - anomaly_rules.yml\n"), "{config}");

    // Unit tests of three rules with promtool's rule tests: dropped events, an error burst and
    // a slow agent fire; a quiet series does not.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo("compose/prometheus/rules.yml"), dir.path().join("rules.yml")).unwrap();
    let test = r#"
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'serphona_obs_events_dropped_total{job="serphona-obs",instance="svc:9464",reason="queue_full"}'
        values: '0 0 0 50 100 150 200 250'
      - series: 'error_rate{service="agent-orchestrator",error_type="llm_timeout"}'
        values: '0+30x20'
      - series: 'error_rate{service="agent-orchestrator",error_type="rare"}'
        values: '0+1x20'
      - series: 'agent_response_time_seconds_bucket{tenant_id="acme",agent_id="slow-bot",le="1"}'
        values: '0+0x30'
      - series: 'agent_response_time_seconds_bucket{tenant_id="acme",agent_id="slow-bot",le="5"}'
        values: '0+10x30'
      - series: 'agent_response_time_seconds_bucket{tenant_id="acme",agent_id="slow-bot",le="+Inf"}'
        values: '0+10x30'
    alert_rule_test:
      - eval_time: 5m
        alertname: EventsDropped
        exp_alerts:
          - exp_labels: {severity: warning, job: serphona-obs, instance: "svc:9464", reason: queue_full}
            exp_annotations:
              summary: "svc:9464 dropped 150 events (queue_full) in 5 minutes"
              description: "Raise pipeline.queue_capacity or check the sinks' health (serphona_obs_sink_events_failed_total)."
      - eval_time: 15m
        alertname: ErrorRateHigh
        exp_alerts:
          - exp_labels: {severity: critical, service: agent-orchestrator, error_type: llm_timeout}
            exp_annotations:
              summary: "agent-orchestrator: llm_timeout errors at 500m/s"
      - eval_time: 25m
        alertname: AgentResponseTimeHigh
        exp_alerts:
          - exp_labels: {severity: warning, tenant_id: acme, agent_id: slow-bot}
            exp_annotations:
              summary: "p95 agent response time of slow-bot (acme) above 3 s"
              description: "p95 over 5 minutes is 4.8s."
"#;
    std::fs::write(dir.path().join("rules_test.yml"), test).unwrap();
    let out = Command::new(&promtool).args(["test", "rules", "rules_test.yml"]).current_dir(dir.path()).output().unwrap();
    assert!(out.status.success(), "promtool test rules: {}", text(&out));
}

fn status_json(data_dir: &Path) -> (Output, serde_json::Value) {
    let out = bin().args(["status", "--output", "json", "--data-dir"]).arg(data_dir).output().unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

fn component<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["components"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name} not in {report}"))
}

/// A `--port-offset` that puts Prometheus (9090) and ClickHouse (8123) on ports free a moment ago
/// (the default ones may be taken on a developer's machine).
fn free_offset() -> u16 {
    loop {
        let p = free_port();
        if p > 9090 + 1000 && p < 56_000 && std::net::TcpListener::bind(("127.0.0.1", p - 9090 + 8123)).is_ok() {
            return p - 9090;
        }
    }
}

/// `up --backend native --wait --timeout T --output json` with `env`, and its report.
fn up_native(data_dir: &Path, offset: u16, timeout: &str, env: &[(&str, &str)]) -> (Output, serde_json::Value) {
    let out = bin()
        .args(["up", "--backend", "native", "--wait", "--timeout", timeout, "--output", "json", "--port-offset", &offset.to_string(), "--data-dir"])
        .arg(data_dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, report)
}

/// Kills the process group of a component `up` started when the test ends, whatever happens
/// in it (each component runs in a group of its own).
struct ReapGroup(u64);

impl Drop for ReapGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0)]).status();
    }
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().next() != Some("Z")))
        .unwrap_or(false)
}

#[test]
fn up_native_runs_the_real_prometheus_status_reports_it_and_down_stops_it() {
    tool("prometheus", "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let offset = free_offset();
    let port = 9090 + offset;
    let metrics = crate::support::free_addr();
    let (out, report) = up_native(dir.path(), offset, "60s", &[("SERPHONA_OBS_METRICS_LISTEN", &metrics.to_string())]);
    let prom = component(&report, "prometheus");
    let pid = prom["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {}", text(&out)));
    let _reap = ReapGroup(pid);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(prom["state"], "healthy", "{report}");
    assert_eq!(prom["url"], format!("http://127.0.0.1:{port}"));
    for (name, binaries) in [("loki", &["loki"][..]), ("tempo", &["tempo"]), ("clickhouse", &["clickhouse"]), ("grafana", &["grafana", "grafana-server"])] {
        let installed = binaries.iter().any(|b| which(b).is_some());
        if !installed {
            assert_eq!(component(&report, name)["state"], "not installed", "{report}");
        }
    }

    // The real Prometheus runs with compose/'s rules and scrapes the library's metrics address.
    let http = reqwest::blocking::Client::new();
    let rules: serde_json::Value = http.get(format!("http://127.0.0.1:{port}/api/v1/rules")).send().unwrap().json().unwrap();
    let loaded: usize = rules["data"]["groups"].as_array().unwrap().iter().map(|g| g["rules"].as_array().unwrap().len()).sum();
    assert_eq!(loaded, 10 + 33, "rules.yml and anomaly_rules.yml: {rules}");
    // (Discovery takes a moment after the server is ready.)
    let until = std::time::Instant::now() + Duration::from_secs(20);
    let scraped = loop {
        let targets: serde_json::Value = http.get(format!("http://127.0.0.1:{port}/api/v1/targets")).send().unwrap().json().unwrap();
        let scraped: Vec<String> = targets["data"]["activeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_string))
            .collect();
        if scraped.contains(&metrics.to_string()) || std::time::Instant::now() > until {
            break scraped;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(scraped.contains(&metrics.to_string()), "{scraped:?} does not include {metrics}");

    let (out, status) = status_json(dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(component(&status, "prometheus")["state"], "healthy");
    assert_eq!(component(&status, "prometheus")["pid"].as_u64(), Some(pid));

    // A second `up` while it runs is refused.
    let again = bin().args(["up", "--backend", "native", "--port-offset", &offset.to_string(), "--data-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("down"), "{}", text(&again));

    let out = bin().args(["down", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("prometheus: stopped (pid {pid})")), "{}", text(&out));
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(pid), "Prometheus (pid {pid}) still runs after down");
    let leftover = Command::new("pgrep").arg("-f").arg(dir.path().to_str().unwrap()).output().unwrap();
    assert!(leftover.stdout.is_empty(), "processes of the stack left: {}", String::from_utf8_lossy(&leftover.stdout));
}

#[test]
fn up_with_docker_but_no_engine_says_so_and_suggests_native() {
    // The real docker client, pointed at a socket where no engine listens (on machines with an
    // engine too); without a docker client at all the message is the same advice.
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .env("DOCKER_HOST", format!("unix://{}/no-engine.sock", dir.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let message = text(&out);
    assert!(message.contains("--backend native"), "{message}");
    assert!(message.contains("Docker"), "{message}");
    assert!(!dir.path().join("stack/state.json").exists(), "nothing was started, nothing recorded");
}

#[test]
fn up_native_starts_a_clickhouse_on_path_applies_the_schema_and_down_stops_its_process_group() {
    use std::os::unix::fs::PermissionsExt;
    // A `clickhouse` on PATH that serves the real ClickHouse engine (the tests' chDB front) on
    // the port `up` gives it; it runs the front as a child, so `down` must stop the whole group.
    let python = crate::support::clickhouse::chdb_python();
    let bin_dir = tempfile::tempdir().unwrap();
    let shim = bin_dir.path().join("clickhouse");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\n# stands in for `clickhouse server -- --path=DIR --http_port=N ...`\n\
             for a in \"$@\"; do case \"$a\" in --http_port=*) port=\"${{a#--http_port=}}\";; --path=*) data=\"${{a#--path=}}\";; esac; done\n\
             \"{}\" -u \"{}\" --data \"$data\" --port \"$port\"\n",
            python.display(),
            crate::support::clickhouse::FRONT_SCRIPT
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    // PATH: the stand-in first, then the system's tools.
    let path = format!("{}:/usr/bin:/bin", bin_dir.path().display());

    let dir = tempfile::tempdir().unwrap();
    let offset = free_offset();
    let ch_port = 8123 + offset;
    let (up, report) = up_native(dir.path(), offset, "90s", &[("PATH", &path), ("SERPHONA_OBS_CLICKHOUSE_COMPRESSION", "none")]);
    let ch = component(&report, "clickhouse");
    let pid = ch["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {}", text(&up)));
    let _reap = ReapGroup(pid);
    // (The real Prometheus in /usr/bin starts too; `down` stops it with the rest.)
    let _reap_prometheus = component(&report, "prometheus")["pid"].as_u64().map(ReapGroup);
    assert!(up.status.success(), "{}", text(&up));
    assert_eq!(ch["state"], "healthy", "{report}");
    assert_eq!(ch["url"], format!("http://127.0.0.1:{ch_port}"));
    let note = report["schema"].as_str().unwrap_or_default();
    assert!(note.contains(&format!("{} migration(s) applied", serphona_obs::analytics::schema::BUILT_IN.len())), "{report}");

    // The schema is there, recorded once per migration.
    let http = reqwest::blocking::Client::new();
    let count = http
        .post(format!("http://127.0.0.1:{ch_port}/"))
        .body("SELECT count() FROM analytics.schema_migrations FINAL")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(count.trim(), serphona_obs::analytics::schema::BUILT_IN.len().to_string());

    let down = bin().args(["down", "--data-dir"]).arg(dir.path()).env("PATH", &path).output().unwrap();
    assert!(down.status.success(), "{}", text(&down));
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let group_left = || {
        let out = Command::new("pgrep").args(["-g", &pid.to_string()]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().filter(|p| alive(p.trim().parse().unwrap_or(0))).count()
    };
    while group_left() > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(group_left(), 0, "processes of the ClickHouse group left after down: {}", text(&down));
    assert!(std::net::TcpListener::bind(("127.0.0.1", ch_port)).is_ok(), "port {ch_port} still taken after down");
}

// Regression test for issue 12, item 3: `up --backend native` with the default data dir (the
// relative `.serphona-obs`) handed Prometheus a relative --config.file, which it resolved in its
// own working directory, and it exited at once.
#[test]
fn up_native_with_the_default_relative_data_dir_brings_prometheus_up_and_down_stops_it() {
    tool("prometheus", "prometheus");
    let cwd = tempfile::tempdir().unwrap();
    let offset = free_offset();
    let metrics = crate::support::free_addr();
    // No --data-dir: the default, relative to the working directory.
    let out = bin()
        .args(["up", "--backend", "native", "--wait", "--timeout", "60s", "-o", "json", "--port-offset", &offset.to_string()])
        .current_dir(cwd.path())
        .env("SERPHONA_OBS_METRICS_LISTEN", metrics.to_string())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    let prom = component(&report, "prometheus");
    let pid = prom["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {}", text(&out)));
    let _reap = ReapGroup(pid);
    // Whatever else is installed here started too; it goes when the test ends.
    let _others: Vec<ReapGroup> = ["loki", "tempo", "clickhouse", "grafana"]
        .into_iter()
        .filter_map(|n| component(&report, n)["pid"].as_u64().map(ReapGroup))
        .collect();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(prom["state"], "healthy", "{report}");
    let log = Path::new(prom["log"].as_str().unwrap());
    assert!(log.is_absolute(), "{report}");
    assert!(cwd.path().join(".serphona-obs/stack/state.json").is_file());

    let (out, status) = {
        let out = bin().args(["status", "-o", "json"]).current_dir(cwd.path()).output().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, json)
    };
    assert_eq!(component(&status, "prometheus")["state"], "healthy", "{}", text(&out));

    let out = bin().args(["down"]).current_dir(cwd.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("prometheus: stopped (pid {pid})")), "{}", text(&out));
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(pid), "Prometheus (pid {pid}) still runs after down");
}

// Regression test for issue 12, item 11: `status` with nothing started said "unhealthy:
// connection refused".
#[test]
fn status_with_nothing_started_says_not_running() {
    let dir = tempfile::tempdir().unwrap();
    // The default ports nothing listens on right now (a developer's machine may run some).
    let free: Vec<&str> = [("prometheus", 9090), ("loki", 3100), ("tempo", 3200), ("clickhouse", 8123), ("grafana", 3000)]
        .into_iter()
        .filter(|(_, port)| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .map(|(name, _)| name)
        .collect();
    assert!(!free.is_empty(), "every default port of the stack is taken on this machine");
    let (out, report) = status_json(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for name in &free {
        let c = component(&report, name);
        assert_eq!(c["state"], "not running", "{report}");
        assert!(!c["error"].as_str().unwrap_or_default().contains("refused"), "{report}");
    }
    let out = bin().args(["status", "--data-dir"]).arg(dir.path()).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.contains("not running") && !table.contains("unhealthy: connection refused"), "{table}");
    if free.len() == 5 {
        assert!(text(&out).contains("nothing is running") && text(&out).contains("serphona-obs up"), "{}", text(&out));
    }
}
