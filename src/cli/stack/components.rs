//! The five components of the stack, their ports and health endpoints, and the state `up`
//! records so `status` and `down` know what it started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// One component of the stack.
#[derive(Debug, Clone, Copy)]
pub struct Component {
    /// Name, as in compose/docker-compose.yml.
    pub name: &'static str,
    /// Its HTTP port (the one the health endpoint and users reach).
    pub port: u16,
    /// Health endpoint path on that port.
    pub health: &'static str,
    /// Binaries that run it natively, in order of preference.
    pub binaries: &'static [&'static str],
    /// What a user finds there.
    pub what: &'static str,
}

/// Prometheus, Loki, Tempo, ClickHouse, Grafana (the order they start in).
pub const COMPONENTS: [Component; 5] = [
    Component {
        name: "prometheus",
        port: 9090,
        health: "/-/ready",
        binaries: &["prometheus"],
        what: "metrics: PromQL, alerts (Status → Rules)",
    },
    Component { name: "loki", port: 3100, health: "/ready", binaries: &["loki"], what: "event log lines (push API)" },
    Component {
        name: "tempo",
        port: 3200,
        health: "/ready",
        binaries: &["tempo"],
        what: "traces; OTLP on 4317 (gRPC) and 4318 (HTTP)",
    },
    Component {
        name: "clickhouse",
        port: 8123,
        health: "/ping",
        binaries: &["clickhouse"],
        what: "analytics tables (HTTP interface), database analytics",
    },
    Component {
        name: "grafana",
        port: 3000,
        health: "/api/health",
        binaries: &["grafana", "grafana-server"],
        what: "dashboards (folder Serphona); user admin",
    },
];

/// OTLP ports of Tempo (gRPC, HTTP).
pub const OTLP_PORTS: (u16, u16) = (4317, 4318);

/// How the stack runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// docker compose with compose/.
    Docker,
    /// Locally installed binaries.
    Native,
}

/// What `up` started (`<data_dir>/stack/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackState {
    /// docker or native.
    pub backend: Backend,
    /// Added to every port (native).
    #[serde(default)]
    pub port_offset: u16,
    /// The compose file used (docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_file: Option<PathBuf>,
    /// Per component: what happened to it.
    pub components: BTreeMap<String, Started>,
}

/// One component as `up` left it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    /// `started` or `not installed` (native) / `started` (docker).
    pub state: String,
    /// Its process (native).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The binary run (native).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// Its log file (native).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
    /// Base URL.
    pub url: String,
}

impl Started {
    /// Every component, started, at its default port on this machine: what the docker backend
    /// runs, and what `status` checks when no `up` was recorded.
    pub fn all_at_default_ports() -> BTreeMap<String, Started> {
        COMPONENTS
            .iter()
            .map(|c| {
                let url = format!("http://127.0.0.1:{}", c.port);
                (c.name.to_string(), Started { state: "started".into(), pid: None, binary: None, log: None, url })
            })
            .collect()
    }

    /// Whether `up` started it (so it should be up).
    pub fn should_run(&self) -> bool {
        self.state == "started"
    }
}

/// `<data_dir>/stack`.
pub fn stack_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("stack")
}

fn state_path(data_dir: &Path) -> PathBuf {
    stack_dir(data_dir).join("state.json")
}

/// The recorded state, if `up` ran.
pub fn load_state(data_dir: &Path) -> anyhow::Result<Option<StackState>> {
    let path = state_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("{} is not a stack state", path.display()))?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Records the state.
pub fn save_state(data_dir: &Path, state: &StackState) -> anyhow::Result<()> {
    let path = state_path(data_dir);
    std::fs::create_dir_all(stack_dir(data_dir)).with_context(|| format!("cannot create {}", stack_dir(data_dir).display()))?;
    std::fs::write(&path, serde_json::to_vec_pretty(state)?).with_context(|| format!("cannot write {}", path.display()))
}

/// Forgets the state (after `down`).
pub fn remove_state(data_dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(state_path(data_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context("cannot remove the stack state"),
        _ => Ok(()),
    }
}

/// The Grafana admin password: `$SERPHONA_OBS_GRAFANA_PASSWORD`, else the one generated on the
/// first `up` and kept in `<data_dir>/stack/grafana-admin-password` (mode 0600).
pub fn grafana_password(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("SERPHONA_OBS_GRAFANA_PASSWORD") {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    let path = stack_dir(data_dir).join("grafana-admin-password");
    if let Ok(p) = std::fs::read_to_string(&path) {
        if !p.trim().is_empty() {
            return Ok(p.trim().to_string());
        }
    }
    use rand::Rng;
    let password: String = rand::rng().sample_iter(rand::distr::Alphanumeric).take(24).map(char::from).collect();
    std::fs::create_dir_all(stack_dir(data_dir))?;
    std::fs::write(&path, &password).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(password)
}

/// What [`check`] says when nothing listens.
pub const REFUSED: &str = "connection refused";

/// Health of one endpoint: `Ok(())` on a 2xx within the timeout, else why not ([`REFUSED`] when
/// nothing listens).
pub async fn check(client: &reqwest::Client, url: &str) -> Result<(), String> {
    match client.get(url).timeout(Duration::from_secs(2)).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
        Err(e) if e.is_connect() => Err(REFUSED.into()),
        Err(e) if e.is_timeout() => Err("no answer within 2 s".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The first of `names` on PATH.
pub fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if is_executable(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}
