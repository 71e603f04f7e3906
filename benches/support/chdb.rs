//! The chDB HTTP front of the tests (tests/it/support/chdb_front.py), for the benchmarks that
//! reach the ClickHouse engine.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The chDB HTTP front, killed on drop.
pub struct Front {
    /// The front process.
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Front {
    /// Starts the front on a free port and waits until it listens.
    pub fn start() -> Front {
        let python = chdb_python();
        let dir = tempfile::Builder::new().prefix("serphona-obs-bench-chdb-").tempdir().unwrap();
        let stderr = dir.path().join("front.stderr");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/chdb_front.py");
        let mut child = Command::new(&python)
            .arg("-u")
            .arg(script)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        // The front prints `LISTENING <port>` once it accepts connections; keep draining after.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(port.trim().to_string());
                }
            }
        });
        let port = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "the chDB front did not print LISTENING within 60 s; its stderr:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        });
        Front { child, url: format!("http://127.0.0.1:{port}"), stderr, _dir: dir }
    }

    /// A client of the front (compression off: the front does not speak ClickHouse's LZ4 framing).
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default().with_url(&self.url).with_compression(clickhouse::Compression::None)
    }

    /// The last 30 lines of the front's stderr, for failure messages.
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The venv Python of the tests' chDB front (`$SERPHONA_OBS_TEST_CHDB_PYTHON`, else
/// `<target dir>/chdb-venv/bin/python`); panics, saying how to install it, when missing.
pub fn chdb_python() -> PathBuf {
    if let Some(python) = std::env::var_os("SERPHONA_OBS_TEST_CHDB_PYTHON") {
        return PathBuf::from(python);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| manifest.join("target"), |t| manifest.join(t));
    let python = target.join("chdb-venv/bin/python");
    assert!(
        python.exists(),
        "the ClickHouse part of this benchmark needs the chDB venv of the tests, and {} does not exist: \
         run scripts/test.sh once (it installs chdb-core into {}), or set SERPHONA_OBS_TEST_CHDB_PYTHON",
        python.display(),
        target.join("chdb-venv").display()
    );
    python
}

