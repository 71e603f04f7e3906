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

impl Front {
    /// A fresh database `db` on the front with the built-in migrations applied, and the
    /// library's ClickHouse config for it (compression off, a long request timeout).
    pub fn database(&self, rt: &tokio::runtime::Runtime, db: &str) -> serphona_obs::config::ClickHouseConfig {
        use serphona_obs::analytics::schema::{Migrator, RenderOptions, built_in};
        use serphona_obs::config::{ClickHouseConfig, Compression, Endpoint};
        rt.block_on(self.client().query(&format!("CREATE DATABASE {db}")).execute()).unwrap();
        let config = ClickHouseConfig {
            endpoint: Endpoint::parse(&self.url).unwrap(),
            database: db.to_string(),
            compression: Compression::None,
            request_timeout: Duration::from_secs(600),
            ..ClickHouseConfig::default()
        };
        let opts = RenderOptions { database: db.to_string(), retention_days: config.retention_days, cluster: None };
        rt.block_on(Migrator::new(serphona_obs::analytics::client(&config), opts, built_in()).apply())
            .unwrap_or_else(|e| panic!("schema apply: {e}\n{}", self.stderr_tail()));
        config
    }

    /// Inserts `events` into the five row tables of `config`'s database as the sink writes
    /// them, `chunk` events per insert; checks `events` holds them all.
    pub fn load(&self, rt: &tokio::runtime::Runtime, config: &serphona_obs::config::ClickHouseConfig, events: &[serphona_obs::types::Event], chunk: usize) {
        use serphona_obs::analytics::insert_rows;
        use serphona_obs::analytics::rows::{self, ConversationRow, DecisionRow, EventRow, InteractionRow, SpanRow};
        use serphona_obs::pipeline::SharedEvent;
        let client = serphona_obs::analytics::client(config).with_validation(false);
        let timeout = Duration::from_secs(600);
        for (n, chunk) in events.chunks(chunk.max(1)).enumerate() {
            rt.block_on(async {
                let token = |t: &str| format!("bench:{n}:{t}");
                let shared: Vec<SharedEvent> = chunk.iter().cloned().map(SharedEvent::new).collect();
                let r: Vec<EventRow<'_>> = shared.iter().filter_map(rows::event_row).collect();
                insert_rows::<EventRow<'static>>(&client, "events", &r, &token("events"), timeout).await?;
                let r: Vec<ConversationRow<'_>> = chunk.iter().filter_map(rows::conversation_row).collect();
                insert_rows::<ConversationRow<'static>>(&client, "conversations", &r, &token("conversations"), timeout).await?;
                let r: Vec<InteractionRow<'_>> = chunk.iter().filter_map(rows::interaction_row).collect();
                insert_rows::<InteractionRow<'static>>(&client, "interactions", &r, &token("interactions"), timeout).await?;
                let r: Vec<DecisionRow<'_>> = chunk.iter().filter_map(rows::decision_row).collect();
                insert_rows::<DecisionRow<'static>>(&client, "decisions", &r, &token("decisions"), timeout).await?;
                let r: Vec<SpanRow<'_>> = chunk.iter().filter_map(rows::span_row).collect();
                insert_rows::<SpanRow<'static>>(&client, "spans", &r, &token("spans"), timeout).await
            })
            .unwrap_or_else(|e| panic!("insert batch {n}: {e}\n{}", self.stderr_tail()));
        }
        let count: u64 =
            rt.block_on(self.client().query(&format!("SELECT count() FROM {}.events", config.database)).fetch_one()).unwrap();
        assert_eq!(count, events.len() as u64);
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

