//! The native backend: runs the components whose binaries are installed, with configs
//! generated under `<data_dir>/stack/native/<component>/`, each in its own process group (so a
//! Ctrl-C in this terminal does not stop them), and records their pids and logs.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::components::{Backend, COMPONENTS, Component, OTLP_PORTS, StackState, Started, find_binary, stack_dir};
use crate::cli::assets::Assets;

/// Starts what is installed. Components already running from an earlier `up` are an error
/// (run `down` first).
///
/// Every path handed to a component (its config, data and log files, the dashboards) is
/// absolute: a component resolves a relative one in its own working directory, not ours.
pub fn up(data_dir: &Path, assets: &Assets, offset: u16, metrics_target: &str, password: &str) -> anyhow::Result<StackState> {
    let root = std::path::absolute(stack_dir(data_dir).join("native"))
        .with_context(|| format!("cannot resolve {} against the current directory", data_dir.display()))?;
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    // The dashboards and rules as files, for Grafana's and Prometheus' configs.
    let dashboards = assets.extract("dashboards", &root)?;
    assets.extract("compose", &root)?;
    let mut components = BTreeMap::new();
    if let Err(e) = start_all(&mut components, &root, &dashboards, offset, metrics_target, password) {
        // What started before the failure goes too: nothing is left running unrecorded.
        let partial = StackState { backend: Backend::Native, port_offset: offset, compose_file: None, components };
        down(&partial, Duration::from_secs(5));
        return Err(e);
    }
    Ok(StackState { backend: Backend::Native, port_offset: offset, compose_file: None, components })
}

/// Starts each installed component, recording it in `components` as it goes.
fn start_all(
    components: &mut BTreeMap<String, Started>,
    root: &Path,
    dashboards: &Path,
    offset: u16,
    metrics_target: &str,
    password: &str,
) -> anyhow::Result<()> {
    for c in COMPONENTS {
        let port = c.port + offset;
        let url = format!("http://127.0.0.1:{port}");
        let Some(binary) = find_binary(c.binaries) else {
            components.insert(c.name.to_string(), Started { state: "not installed".into(), pid: None, binary: None, log: None, url });
            continue;
        };
        for p in ports(&c, offset) {
            if TcpListener::bind(("127.0.0.1", p)).is_err() {
                bail!(
                    "cannot start {}: port {p} is in use (another stack? `serphona-obs status`, `serphona-obs down`, or `up --port-offset N`)",
                    c.name
                );
            }
        }
        let dir = root.join(c.name);
        std::fs::create_dir_all(dir.join("data")).with_context(|| format!("cannot create {}", dir.display()))?;
        let args = configure(&c, &binary, &dir, root, dashboards, offset, metrics_target, password)?;
        let log = dir.join(format!("{}.log", c.name));
        let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(&binary);
        cmd.args(&args.args).envs(args.env).current_dir(&dir).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd.spawn().with_context(|| format!("cannot run {}", binary.display()))?;
        // One that exits at once (bad flag, bad config) is reported now, with its log.
        std::thread::sleep(Duration::from_millis(300));
        if let Some(status) = child.try_wait()? {
            bail!("{} exited at once ({status}); its log {}:\n{}", c.name, log.display(), tail(&log, 20));
        }
        components.insert(
            c.name.to_string(),
            Started { state: "started".into(), pid: Some(child.id()), binary: Some(binary), log: Some(log), url },
        );
    }
    Ok(())
}

/// Every port a component listens on.
fn ports(c: &Component, offset: u16) -> Vec<u16> {
    let mut p = vec![c.port + offset];
    match c.name {
        "tempo" => p.extend([OTLP_PORTS.0 + offset, OTLP_PORTS.1 + offset]),
        "clickhouse" => p.push(9000 + offset),
        _ => {}
    }
    p
}

struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

#[allow(clippy::too_many_arguments)]
fn configure(
    c: &Component,
    binary: &Path,
    dir: &Path,
    root: &Path,
    dashboards: &Path,
    offset: u16,
    metrics_target: &str,
    password: &str,
) -> anyhow::Result<Launch> {
    let port = c.port + offset;
    let data = dir.join("data");
    let write = |name: &str, text: String| -> anyhow::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    };
    let d = |p: &Path| p.display().to_string();
    Ok(match c.name {
        "prometheus" => {
            // compose/'s config, pointed at this machine instead of host.docker.internal.
            let compose_cfg = std::fs::read_to_string(root.join("compose/prometheus/prometheus.yml"))?;
            let cfg = compose_cfg
                .replace("host.docker.internal:9464", metrics_target)
                .replace("localhost:9090", &format!("127.0.0.1:{port}"));
            // The rule files prometheus.yml lists (rule_files), beside the config.
            for rules in ["rules.yml", "anomaly_rules.yml"] {
                std::fs::copy(root.join("compose/prometheus").join(rules), dir.join(rules))
                    .with_context(|| format!("cannot copy compose/prometheus/{rules}"))?;
            }
            let config = write("prometheus.yml", cfg)?;
            Launch {
                args: vec![
                    format!("--config.file={}", d(&config)),
                    format!("--storage.tsdb.path={}", d(&data)),
                    format!("--web.listen-address=127.0.0.1:{port}"),
                    "--web.enable-lifecycle".into(),
                ],
                env: vec![],
            }
        }
        "loki" => {
            let cfg = std::fs::read_to_string(root.join("compose/loki/loki.yaml"))?
                .replace("http_listen_port: 3100", &format!("http_listen_port: {port}"))
                .replace("grpc_listen_port: 9096", &format!("grpc_listen_port: {}", 9096 + offset))
                .replace("/loki", &d(&data));
            let config = write("loki.yaml", cfg)?;
            Launch { args: vec![format!("-config.file={}", d(&config))], env: vec![] }
        }
        "tempo" => {
            let cfg = std::fs::read_to_string(root.join("compose/tempo/tempo.yaml"))?
                .replace("http_listen_port: 3200", &format!("http_listen_port: {port}"))
                .replace("0.0.0.0:4317", &format!("127.0.0.1:{}", OTLP_PORTS.0 + offset))
                .replace("0.0.0.0:4318", &format!("127.0.0.1:{}", OTLP_PORTS.1 + offset))
                .replace("/var/tempo", &d(&data));
            let config = write("tempo.yaml", cfg)?;
            Launch { args: vec![format!("-config.file={}", d(&config))], env: vec![] }
        }
        "clickhouse" => Launch {
            args: vec![
                "server".into(),
                "--".into(),
                format!("--path={}/", d(&data)),
                format!("--http_port={port}"),
                format!("--tcp_port={}", 9000 + offset),
                "--listen_host=127.0.0.1".into(),
                format!("--logger.log={}", d(&dir.join("clickhouse-server.log"))),
                format!("--logger.errorlog={}", d(&dir.join("clickhouse-server.err.log"))),
            ],
            env: vec![],
        },
        "grafana" => {
            // Datasources at this machine's ports, and the dashboards as files.
            let prov = dir.join("provisioning");
            for sub in ["datasources", "dashboards", "plugins", "alerting"] {
                std::fs::create_dir_all(prov.join(sub))?;
            }
            let ds = std::fs::read_to_string(root.join("compose/grafana/provisioning/datasources/serphona.yml"))?
                .replace("http://prometheus:9090", &format!("http://127.0.0.1:{}", 9090 + offset))
                .replace("http://loki:3100", &format!("http://127.0.0.1:{}", 3100 + offset))
                .replace("http://tempo:3200", &format!("http://127.0.0.1:{}", 3200 + offset))
                .replace("host: clickhouse", "host: 127.0.0.1")
                .replace("port: 8123", &format!("port: {}", 8123 + offset));
            std::fs::write(prov.join("datasources/serphona.yml"), ds)?;
            let dash = std::fs::read_to_string(root.join("compose/grafana/provisioning/dashboards/serphona.yml"))?
                .replace("/var/lib/grafana/dashboards/serphona", &d(dashboards));
            std::fs::write(prov.join("dashboards/serphona.yml"), dash)?;
            let home = ["/usr/share/grafana", "/usr/local/share/grafana", "/opt/grafana"]
                .into_iter()
                .find(|h| Path::new(h).join("conf/defaults.ini").exists())
                .unwrap_or("/usr/share/grafana");
            let server = binary.file_name().is_some_and(|n| n == "grafana");
            let mut args = if server { vec!["server".to_string()] } else { vec![] };
            args.push(format!("--homepath={home}"));
            Launch {
                args,
                env: vec![
                    ("GF_SERVER_HTTP_ADDR".into(), "127.0.0.1".into()),
                    ("GF_SERVER_HTTP_PORT".into(), port.to_string()),
                    ("GF_PATHS_DATA".into(), d(&data)),
                    ("GF_PATHS_LOGS".into(), d(dir)),
                    ("GF_PATHS_PLUGINS".into(), d(&data.join("plugins"))),
                    ("GF_PATHS_PROVISIONING".into(), d(&prov)),
                    ("GF_SECURITY_ADMIN_USER".into(), "admin".into()),
                    ("GF_SECURITY_ADMIN_PASSWORD".into(), password.into()),
                    ("GF_USERS_ALLOW_SIGN_UP".into(), "false".into()),
                    ("GF_ANALYTICS_REPORTING_ENABLED".into(), "false".into()),
                ],
            }
        }
        other => bail!("unknown component {other}"),
    })
}

/// Stops what `up` started: SIGTERM, then SIGKILL after `grace`. Only processes that are
/// still the recorded binary (a recycled pid is left alone). Returns (name, what happened).
pub fn down(state: &StackState, grace: Duration) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, started) in &state.components {
        let (Some(pid), Some(binary)) = (started.pid, &started.binary) else {
            continue;
        };
        if !is_ours(pid, binary) {
            out.push((name.clone(), "not running".into()));
            continue;
        }
        // The whole process group `up` started it in: its children (plugins, watchdogs) too.
        signal_group(pid, "TERM");
        let until = Instant::now() + grace;
        while is_ours(pid, binary) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        let stubborn = is_ours(pid, binary);
        // Whatever of the group is left goes now.
        signal_group(pid, "KILL");
        if stubborn {
            std::thread::sleep(Duration::from_millis(200));
            out.push((name.clone(), format!("killed (pid {pid}; did not stop within {}s)", grace.as_secs())));
        } else {
            out.push((name.clone(), format!("stopped (pid {pid})")));
        }
    }
    out
}

/// Whether `pid` is alive (not a zombie) and runs `binary`.
pub fn is_ours(pid: u32, binary: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the command name in parentheses.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X")) {
        return false;
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let name = binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The binary itself, or a script run by its interpreter (`/bin/sh /usr/sbin/grafana-server`):
    // then the script is the second argument.
    exe.as_deref().is_some_and(|e| e == binary || e.file_name().is_some_and(|n| n.to_string_lossy() == name))
        || String::from_utf8_lossy(&cmdline).split('\0').take(2).any(|arg| Path::new(arg).file_name().is_some_and(|n| n.to_string_lossy() == name))
}

/// Signals the process group `pid` leads (each component runs in a group of its own).
fn signal_group(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
