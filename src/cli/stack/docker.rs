//! The docker backend: `docker compose` (or `docker-compose`) with compose/, project name
//! `serphona-obs`, the files written under `<data_dir>/stack/` so their mounts resolve.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context as _, bail};

use super::components::{Backend, StackState, Started, stack_dir};
use crate::cli::assets::Assets;

/// The compose project name.
pub const PROJECT: &str = "serphona-obs";

/// `docker compose` when the plugin is there, else `docker-compose`.
pub fn compose_command() -> anyhow::Result<Vec<String>> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    if works("docker", &["compose", "version"]) {
        return Ok(vec!["docker".into(), "compose".into()]);
    }
    if works("docker-compose", &["version"]) {
        return Ok(vec!["docker-compose".into()]);
    }
    bail!(
        "neither `docker compose` nor `docker-compose` is installed. Install Docker (with its compose plugin), \
         or run the components installed on this machine with `serphona-obs up --backend native`"
    )
}

/// Checks that a Docker engine answers.
pub fn check_engine() -> anyhow::Result<()> {
    let out = Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "the Docker engine is not reachable ({}). Start Docker, or run the components installed on this machine \
             with `serphona-obs up --backend native`",
            first_line(&o)
        ),
        Err(e) => bail!(
            "cannot run `docker` ({e}). Install Docker, or run the components installed on this machine with \
             `serphona-obs up --backend native`"
        ),
    }
}

fn first_line(o: &Output) -> String {
    let text = if o.stderr.is_empty() { &o.stdout } else { &o.stderr };
    String::from_utf8_lossy(text).lines().find(|l| !l.trim().is_empty()).unwrap_or("no output").trim().to_string()
}

/// Writes compose/ and dashboards/ under `<data_dir>/stack/` and returns the compose file.
pub fn write_files(data_dir: &Path, assets: &Assets) -> anyhow::Result<PathBuf> {
    let root = stack_dir(data_dir);
    assets.extract("compose", &root)?;
    assets.extract("dashboards", &root)?;
    Ok(root.join("compose/docker-compose.yml"))
}

fn compose(base: &[String], file: &Path, password: &str) -> Command {
    let mut cmd = Command::new(&base[0]);
    cmd.args(&base[1..]).arg("-p").arg(PROJECT).arg("-f").arg(file).env("SERPHONA_OBS_GRAFANA_PASSWORD", password);
    cmd
}

/// `up -d`.
pub fn up(data_dir: &Path, assets: &Assets, password: &str) -> anyhow::Result<StackState> {
    let base = compose_command()?;
    check_engine()?;
    let file = write_files(data_dir, assets)?;
    let status = compose(&base, &file, password)
        .args(["up", "-d"])
        .status()
        .with_context(|| format!("cannot run {}", base.join(" ")))?;
    if !status.success() {
        bail!("`{} -p {PROJECT} -f {} up -d` failed ({status}); its output is above", base.join(" "), file.display());
    }
    Ok(StackState {
        backend: Backend::Docker,
        port_offset: 0,
        compose_file: Some(file),
        components: Started::all_at_default_ports(),
    })
}

/// `down [--volumes]`.
pub fn down(state: &StackState, volumes: bool, password: &str) -> anyhow::Result<()> {
    let base = compose_command()?;
    let file = state.compose_file.clone().context("the recorded stack has no compose file")?;
    let mut cmd = compose(&base, &file, password);
    cmd.arg("down");
    if volumes {
        cmd.arg("--volumes");
    }
    let status = cmd.status().with_context(|| format!("cannot run {}", base.join(" ")))?;
    if !status.success() {
        bail!("`{} down` failed ({status}); its output is above", base.join(" "));
    }
    Ok(())
}
