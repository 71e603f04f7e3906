//! Test support: starts the real test peers (see "Test peers" in ARCHITECTURE.md).
//!
//! A peer that is missing makes the test fail with a message that says how to get it
//! (`scripts/test.sh` installs them); no test skips silently.

// Not every test module uses every helper.
#![allow(dead_code)]

pub mod clickhouse;
pub mod grafana;
pub mod loki;
pub mod otlp;
pub mod prometheus;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

/// The real `serphona-obs` binary, isolated from the developer's environment (no
/// `SERPHONA_OBS_*` variables, no `RUST_LOG`).
pub fn bin() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_serphona-obs"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SERPHONA_OBS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
///
/// Another process may take it before the caller binds it; callers that hand it to a child
/// process should retry on "address already in use".
pub fn free_port() -> u16 {
    free_addr().port()
}

/// `127.0.0.1:<free port>` (see [`free_port`]).
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port");
    listener.local_addr().expect("local address of a bound listener")
}

/// Serves `app` on a free loopback port from a runtime of its own with `threads` workers; the
/// server stops when the runtime is dropped. `what` names it in a failure.
pub fn serve(app: axum::Router, threads: usize, what: &'static str) -> (tokio::runtime::Runtime, SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap_or_else(|e| panic!("bind {what}: {e}"));
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap_or_else(|e| panic!("{what}: {e}")) });
    (runtime, addr)
}

/// The last `lines` lines of a text file, for failure messages (empty when unreadable).
pub fn tail_file(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Where an executable is on PATH, if it is.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
