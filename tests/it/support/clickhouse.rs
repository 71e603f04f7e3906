//! A ClickHouse as a test peer, spoken to over ClickHouse's HTTP interface.
//!
//! [`ClickHouse::start`] picks, in this order:
//! 1. `$SERPHONA_OBS_TEST_CLICKHOUSE_URL` (see [`URL_ENV`]): a real server someone else runs,
//!    used as is. Fault tests cannot use it: [`ClickHouse::stop`] and [`ClickHouse::restart`]
//!    panic, since they need a peer the test owns.
//! 2. A `clickhouse` binary on PATH, started as `clickhouse server` with its own config, data
//!    directory and free ports. This path is deliberately simple and is **not exercised on the
//!    machines this repository is tested on** (Debian's `clickhouse-server` is from 2018 and has
//!    no Map or DateTime64; the official build is not installed).
//! 3. Otherwise the chDB front, `tests/it/support/chdb_front.py`: ClickHouse's HTTP interface
//!    served by the real ClickHouse engine (chDB) in a Python process, with its databases on disk
//!    in a temp dir. `scripts/test.sh` installs chDB into `<target dir>/chdb-venv`; the Python is
//!    `$SERPHONA_OBS_TEST_CHDB_PYTHON` (see [`PYTHON_ENV`]) or that venv's. The front does not
//!    implement ClickHouse's compressed framing: clients must use `Compression::None`.
//!
//! Owned peers keep everything in a temp dir (data, the process's output in `peer.log`) and are
//! killed when the handle drops. [`ClickHouse::stop`] kills the peer with SIGKILL (a crash, not a
//! shutdown); [`ClickHouse::restart`] starts it again on the same port and data.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable with the URL of an external ClickHouse server to use instead.
pub const URL_ENV: &str = "SERPHONA_OBS_TEST_CLICKHOUSE_URL";

/// Environment variable naming the Python (with chdb-core installed) that runs the chDB front.
pub const PYTHON_ENV: &str = "SERPHONA_OBS_TEST_CHDB_PYTHON";

/// How long a start or restart waits until `/ping` answers.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-request timeout of the helper's own HTTP client.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// The chDB front's script.
pub const FRONT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/chdb_front.py");

/// Numbers the databases of [`ClickHouse::fresh_database`] within this test process.
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// A ClickHouse for tests: a real server when `$SERPHONA_OBS_TEST_CLICKHOUSE_URL` is set (used as
/// is; `stop`/`restart` then panic: fault tests need a peer they own) or a `clickhouse` binary is
/// on PATH (started as `clickhouse server` with its own temp data dir and config on free ports;
/// kept simple and not exercised on this repository's test machines), otherwise the chDB front.
pub struct ClickHouse {
    url: String,
    http: reqwest::blocking::Client,
    /// `None` for an external server.
    owned: Option<Owned>,
}

/// A peer process this handle started and controls.
struct Owned {
    kind: Kind,
    /// The HTTP port (fixed after the first start, so restarts keep the URL).
    port: u16,
    child: Option<Child>,
    /// The process's stdout and stderr, appended across restarts.
    log: PathBuf,
    // Last, so the process is killed (in `Drop`) before its directory is removed.
    dir: tempfile::TempDir,
}

enum Kind {
    Front { python: PathBuf },
    Server { bin: PathBuf, tcp_port: u16 },
}

impl ClickHouse {
    /// A ready peer (see the module docs for which). Owned peers get a fresh temp data dir and a
    /// free port; waits until `/ping` answers (60 s), else panics with the peer's output.
    pub fn start() -> ClickHouse {
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(QUERY_TIMEOUT)
            .build()
            .expect("build an HTTP client");
        if let Some(url) = std::env::var(URL_ENV).ok().filter(|u| !u.trim().is_empty()) {
            let mut ch = ClickHouse { url: url.trim().trim_end_matches('/').to_string(), http, owned: None };
            ch.wait_ready(None);
            return ch;
        }
        let dir = tempfile::Builder::new().prefix("serphona-obs-clickhouse-").tempdir().expect("create a temp dir");
        let kind = match super::which("clickhouse") {
            Some(bin) => Kind::Server { bin, tcp_port: super::free_port() },
            None => Kind::Front { python: chdb_python() },
        };
        let port = match kind {
            Kind::Server { .. } => super::free_port(),
            Kind::Front { .. } => 0, // the front picks one and says which
        };
        let log = dir.path().join("peer.log");
        let owned = Owned { kind, port, child: None, log, dir };
        let mut ch = ClickHouse { url: String::new(), http, owned: Some(owned) };
        ch.launch();
        ch
    }

    /// The real binary pointed at `db` on this peer, with its data dir (the local event log)
    /// in `data_dir`; compression off (the chDB front needs it), metrics and tracing off.
    /// ClickHouse is not enabled: commands that write to it set
    /// `SERPHONA_OBS_CLICKHOUSE_ENABLED`, commands that read name their `--source`.
    pub fn cli(&self, db: &str, data_dir: &std::path::Path) -> std::process::Command {
        let mut cmd = super::bin();
        cmd.env("SERPHONA_OBS_DATA_DIR", data_dir)
            .env("SERPHONA_OBS_CLICKHOUSE_ENDPOINT", self.url())
            .env("SERPHONA_OBS_CLICKHOUSE_DATABASE", db)
            .env("SERPHONA_OBS_CLICKHOUSE_COMPRESSION", "none")
            .env("SERPHONA_OBS_METRICS_ENABLED", "false")
            .env("SERPHONA_OBS_TRACING_ENABLED", "false");
        cmd
    }

    /// `serphona-obs schema apply` on `db` through the real binary ([`cli`](Self::cli));
    /// panics with its output when it fails.
    pub fn apply_schema(&self, db: &str, data_dir: &Path) {
        let out = self.cli(db, data_dir).args(["schema", "apply"]).output().expect("run serphona-obs schema apply");
        assert!(
            out.status.success(),
            "schema apply: {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The library's config for `db` on this peer, with the event log in `data_dir` too:
    /// compression off (the chDB front needs it), metrics off, batches flushed every 200 ms.
    pub fn library_config(&self, db: &str, data_dir: &Path) -> serphona_obs::Config {
        let mut c = serphona_obs::Config::default();
        c.metrics.enabled = false;
        c.logging.enabled = true;
        c.data_dir = data_dir.to_path_buf();
        c.clickhouse.enabled = true;
        c.clickhouse.endpoint = serphona_obs::config::Endpoint::parse(&self.url()).expect("the peer's URL parses");
        c.clickhouse.database = db.to_string();
        c.clickhouse.compression = serphona_obs::config::Compression::None;
        c.clickhouse.flush_interval = Duration::from_millis(200);
        c
    }

    /// The owned peer's data directory (`None` for an external server): where its tables' files
    /// are, e.g. the deduplication logs a crash test watches.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.owned.as_ref().map(|o| o.dir.path().join("data"))
    }

    /// True while the owned peer's process runs.
    pub fn is_running(&mut self) -> bool {
        self.owned.as_mut().and_then(|o| o.child.as_mut()).is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// `http://127.0.0.1:PORT` (or the external server's URL), without a trailing slash.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Kills the peer with SIGKILL and waits for it; its port then refuses connections.
    /// Panics for an external server.
    pub fn stop(&mut self) {
        let owned = self.owned_mut("stop");
        if let Some(mut child) = owned.child.take() {
            let _ = child.kill();
            child.wait().expect("wait for the killed ClickHouse peer");
        }
    }

    /// Starts the peer again on the same port and data dir (stopping it first if it runs) and
    /// waits until it is ready. Panics for an external server.
    pub fn restart(&mut self) {
        self.owned_mut("restart");
        self.stop();
        self.launch();
    }

    /// Creates a database with a name unique to this call (`test_<pid>_<secs>_<n>`) and
    /// returns the name.
    pub fn fresh_database(&self) -> String {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let name = format!("test_{}_{secs}_{n}", std::process::id());
        self.query(&format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs one statement over HTTP and returns its output (TabSeparated unless the statement
    /// says otherwise). Panics with the server's message when it fails.
    pub fn query(&self, sql: &str) -> String {
        match self.try_query(sql) {
            Ok(text) => text,
            Err(e) => panic!("ClickHouse query failed: {e}\nquery: {sql}{}", self.log_note()),
        }
    }

    /// [`query`](Self::query) for a statement whose output is one unsigned integer.
    pub fn query_u64(&self, sql: &str) -> u64 {
        let text = self.query(sql);
        text.trim().parse().unwrap_or_else(|e| panic!("{sql}: output {text:?} is not a u64: {e}"))
    }

    /// Like [`query`](Self::query), but returns the failure (`HTTP <status>: <body>`, or the
    /// connection error) instead of panicking.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        let response = self
            .http
            .post(format!("{}/", self.url))
            .body(sql.to_string())
            .send()
            .map_err(|e| format!("POST {}/: {e}", self.url))?;
        let status = response.status();
        let body = response.text().map_err(|e| format!("reading the answer: {e}"))?;
        if status.is_success() { Ok(body) } else { Err(format!("HTTP {status}: {}", body.trim_end())) }
    }

    /// The last lines of the owned peer's output ("" for an external server).
    pub fn log_tail(&self) -> String {
        self.owned.as_ref().map_or_else(String::new, |o| super::tail_file(&o.log, 40))
    }

    fn log_note(&self) -> String {
        match &self.owned {
            Some(o) => format!("\npeer output ({}), last lines:\n{}", o.log.display(), super::tail_file(&o.log, 40)),
            None => String::new(),
        }
    }

    fn owned_mut(&mut self, what: &str) -> &mut Owned {
        self.owned.as_mut().unwrap_or_else(|| {
            panic!(
                "ClickHouse::{what}: the peer is the external server {URL_ENV} points to, which this \
                 test does not own; fault tests need a peer they start themselves (unset {URL_ENV})"
            )
        })
    }

    /// Spawns the owned peer and waits until it answers `/ping`.
    fn launch(&mut self) {
        let owned = self.owned.as_mut().expect("only owned peers are launched");
        let dir = owned.dir.path().to_path_buf();
        let stdout_path = dir.join("stdout");
        let mut log = OpenOptions::new().create(true).append(true).open(&owned.log).expect("open peer.log");
        use std::io::Write as _;
        let _ = writeln!(log, "--- starting the peer (port {}) ---", owned.port);
        let mut command = match &owned.kind {
            Kind::Front { python } => {
                let mut c = Command::new(python);
                c.arg("-u").arg(FRONT_SCRIPT).arg("--data").arg(dir.join("data"));
                c.arg("--port").arg(owned.port.to_string());
                c
            }
            Kind::Server { bin, tcp_port } => {
                let config = dir.join("config.xml");
                std::fs::write(&config, server_config(&dir, owned.port, *tcp_port)).expect("write config.xml");
                let mut c = Command::new(bin);
                c.arg("server").arg(format!("--config-file={}", config.display()));
                c
            }
        };
        let child = command
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create the peer's stdout file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", command.get_program()));
        owned.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        if owned.port == 0 {
            // The front prints `LISTENING <port>` once it accepts connections.
            let port = loop {
                let out = std::fs::read_to_string(&stdout_path).unwrap_or_default();
                if let Some(port) = out.lines().find_map(|l| l.strip_prefix("LISTENING ")) {
                    break port.trim().parse().unwrap_or_else(|e| panic!("chdb_front printed {out:?}: {e}"));
                }
                self.check_alive(deadline, "print LISTENING");
                std::thread::sleep(Duration::from_millis(50));
            };
            self.owned.as_mut().unwrap().port = port;
        }
        self.url = format!("http://127.0.0.1:{}", self.owned.as_ref().unwrap().port);
        self.wait_ready(Some(deadline));
    }

    /// Panics (with the peer's output) when the owned peer died or the deadline passed.
    fn check_alive(&mut self, deadline: Instant, waiting_for: &str) {
        let Some(owned) = self.owned.as_mut() else { return };
        let child = owned.child.as_mut().expect("a launched peer");
        if let Some(status) = child.try_wait().expect("poll the ClickHouse peer") {
            owned.child = None;
            panic!("the ClickHouse peer exited with {status} before it would {waiting_for}{}", self.log_note());
        }
        if Instant::now() > deadline {
            panic!("the ClickHouse peer did not {waiting_for} within {READY_TIMEOUT:?}{}", self.log_note());
        }
    }

    /// Polls `/ping` until it answers `Ok.`.
    fn wait_ready(&mut self, deadline: Option<Instant>) {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + READY_TIMEOUT);
        let ping = format!("{}/ping", self.url);
        loop {
            let ok = self
                .http
                .get(&ping)
                .timeout(Duration::from_secs(2))
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.text())
                .is_ok_and(|t| t.trim() == "Ok.");
            if ok {
                return;
            }
            if self.owned.is_none() && Instant::now() > deadline {
                panic!("the ClickHouse server at {} ({URL_ENV}) does not answer {ping}", self.url);
            }
            self.check_alive(deadline, &format!("answer {ping}"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if let Some(mut child) = self.owned.as_mut().and_then(|o| o.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The Python that runs the chDB front: `$SERPHONA_OBS_TEST_CHDB_PYTHON`, else
/// `<target dir>/chdb-venv/bin/python` (`$CARGO_TARGET_DIR` or `<crate>/target`). Panics, saying
/// how to install it, when there is none.
pub fn chdb_python() -> PathBuf {
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        let python = PathBuf::from(python);
        assert!(python.exists(), "{PYTHON_ENV}={} does not exist", python.display());
        return python;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| manifest.join("target"), |t| manifest.join(t));
    let python = target.join("chdb-venv/bin/python");
    if !python.exists() {
        panic!(
            "no ClickHouse for the tests: {URL_ENV} is unset, no `clickhouse` binary is on PATH, and the \
             chDB venv is missing ({} does not exist). Run scripts/test.sh (it installs chdb-core, the \
             ClickHouse engine, into {}), or set {PYTHON_ENV} to a Python with chdb-core installed.",
            python.display(),
            target.join("chdb-venv").display()
        );
    }
    python
}

/// A minimal `clickhouse server` config: loopback only, its own ports and directories, the
/// `default` user without a password.
fn server_config(dir: &Path, http_port: u16, tcp_port: u16) -> String {
    let d = dir.display();
    format!(
        "<clickhouse>\n\
         <logger><level>warning</level><console>1</console></logger>\n\
         <listen_host>127.0.0.1</listen_host>\n\
         <http_port>{http_port}</http_port>\n\
         <tcp_port>{tcp_port}</tcp_port>\n\
         <path>{d}/data/</path>\n\
         <tmp_path>{d}/tmp/</tmp_path>\n\
         <user_files_path>{d}/user_files/</user_files_path>\n\
         <format_schema_path>{d}/format_schemas/</format_schema_path>\n\
         <users><default><password></password><networks><ip>127.0.0.1</ip></networks>\
         <profile>default</profile><quota>default</quota><access_management>1</access_management></default></users>\n\
         <profiles><default/></profiles>\n\
         <quotas><default/></quotas>\n\
         </clickhouse>\n"
    )
}

#[test]
fn a_table_survives_a_crash_and_restart() {
    let mut ch = ClickHouse::start();
    let db = ch.fresh_database();
    ch.query(&format!("CREATE TABLE {db}.t (n UInt32, s String) ENGINE = MergeTree ORDER BY n"));
    ch.query(&format!("INSERT INTO {db}.t VALUES (1, 'one'), (2, 'two')"));
    assert_eq!(ch.query(&format!("SELECT n, s FROM {db}.t ORDER BY n")), "1\tone\n2\ttwo\n");

    let url = ch.url();
    ch.stop();
    let refused = ch.try_query("SELECT 1").expect_err("a stopped peer answered");
    assert!(refused.starts_with("POST "), "expected a connection error, got {refused}");

    ch.restart();
    assert_eq!(ch.url(), url, "a restart keeps the URL");
    assert_eq!(ch.query_u64(&format!("SELECT sum(n) FROM {db}.t")), 3);
}

#[test]
fn errors_carry_clickhouse_codes() {
    let ch = ClickHouse::start();
    let err = ch.try_query("SELECT * FROM no_such_table").unwrap_err();
    assert!(err.starts_with("HTTP 404") && err.contains("Code: 60."), "{err}");
    let err = ch.try_query("SELEC 1").unwrap_err();
    assert!(err.starts_with("HTTP 400") && err.contains("Code: 62."), "{err}");
}

/// The official client against the peer: typed rows (UUID, DateTime64, LowCardinality, Map,
/// Nullable, Array) with and without validation, token deduplication, `.param`, an error.
#[test]
fn the_official_client_round_trips_rows() {
    use clickhouse::{Client, Compression, Row};
    use serde::{Deserialize, Serialize};

    #[derive(Row, Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Ev {
        #[serde(with = "clickhouse::serde::uuid")]
        id: uuid::Uuid,
        #[serde(with = "clickhouse::serde::time::datetime64::micros")]
        ts: time::OffsetDateTime,
        kind: String,
        attrs: Vec<(String, String)>,
        score: Option<f64>,
        tags: Vec<String>,
    }

    let ch = ClickHouse::start();
    let db = ch.fresh_database();
    ch.query(&format!(
        "CREATE TABLE {db}.ev (id UUID, ts DateTime64(6), kind LowCardinality(String), attrs Map(String, String), \
         score Nullable(Float64), tags Array(String)) ENGINE = MergeTree ORDER BY (ts, id) \
         SETTINGS non_replicated_deduplication_window = 1000"
    ));
    let rows: Vec<Ev> = (0..3i64)
        .map(|i| Ev {
            id: uuid::Uuid::new_v4(),
            ts: time::OffsetDateTime::from_unix_timestamp(1_700_000_000 + i).unwrap() + time::Duration::microseconds(123_456),
            kind: format!("kind{}", i % 2),
            attrs: vec![("k".into(), format!("it's\t{i}"))],
            score: (i > 0).then_some(i as f64 / 3.0),
            tags: vec!["ü".into(), format!("t{i}")],
        })
        .collect();
    let client = Client::default().with_url(ch.url()).with_database(&db).with_compression(Compression::None);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let insert = |client: Client, rows: Vec<Ev>, token: Option<&'static str>| async move {
            let mut insert = client.insert::<Ev>("ev").await?;
            if let Some(token) = token {
                insert = insert.with_setting("insert_deduplication_token", token);
            }
            for row in &rows {
                insert.write(row).await?;
            }
            insert.end().await
        };
        insert(client.clone(), rows[..2].to_vec(), None).await.unwrap();
        insert(client.clone().with_validation(false), rows[2..].to_vec(), Some("tok")).await.unwrap();
        insert(client.clone(), rows[2..].to_vec(), Some("tok")).await.unwrap(); // deduplicated

        let got = client.query("SELECT ?fields FROM ev ORDER BY ts").fetch_all::<Ev>().await.unwrap();
        assert_eq!(got, rows);
        let nasty = "it's `a` '; DROP TABLE ev";
        let echoed: String = client.query("SELECT {x:String}").param("x", nasty).fetch_one().await.unwrap();
        assert_eq!(echoed, nasty);
        assert_eq!(client.query("SELECT count() FROM ev").fetch_one::<u64>().await.unwrap(), 3);
        match client.query("SELECT 1 FROM no_such_table").execute().await {
            Err(clickhouse::error::Error::BadResponse(msg)) => assert!(msg.contains("Code: 60."), "{msg}"),
            other => panic!("expected BadResponse with Code: 60, got {other:?}"),
        }
    });
}
