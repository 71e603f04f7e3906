//! The real Prometheus server as a test peer.
//!
//! [`Prometheus::start`] runs the `prometheus` binary (Debian package `prometheus`; installed by
//! `scripts/test.sh`) on a free loopback port with a generated config that scrapes the given
//! targets every second, keeps its storage and log in a temporary directory, and waits until
//! `/-/ready` answers. Dropping the handle kills the server. Assertions go through its HTTP API
//! (PromQL instant queries, the series and metadata endpoints).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The scrape job name of the generated config.
pub const JOB: &str = "serphona-obs";

/// How long [`Prometheus::start`] waits for `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variable naming a `prometheus` binary to use instead of the one on PATH.
pub const BIN_ENV: &str = "SERPHONA_OBS_TEST_PROMETHEUS_BIN";

/// One sample of an instant vector: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Every label of the series, `__name__` included when the result keeps it.
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN`/`±Inf` parsed as such).
    pub value: f64,
}

impl Sample {
    /// A label's value, or "" when absent.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A running Prometheus server; killed on drop.
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    base: String,
    log: PathBuf,
    client: reqwest::blocking::Client,
    // Last, so the server is killed before its directory is removed.
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`) every second and
    /// waits until it is ready. Panics, with the tail of the server's log, when it cannot.
    pub fn start<T: ToString>(targets: &[T]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let bin = binary();
        let mut last_failure = String::new();
        // The free port may be taken between finding it and Prometheus binding it: retry.
        for _attempt in 0..3 {
            match Self::try_start(&bin, &targets) {
                Ok(prom) => return prom,
                Err(failure) if failure.contains("address already in use") => last_failure = failure,
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!("{last_failure}");
    }

    fn try_start(bin: &Path, targets: &[String]) -> Result<Prometheus, String> {
        let dir = tempfile::Builder::new().prefix("serphona-obs-prometheus-").tempdir().expect("create a temp dir");
        let addr = super::free_addr();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(targets)).expect("write prometheus.yml");
        let data = dir.path().join("data");
        let log = dir.path().join("prometheus.log");
        let out = File::create(&log).expect("create prometheus.log");
        let err = out.try_clone().expect("clone the log file handle");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=info")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e} (run scripts/test.sh to install Prometheus)", bin.display()));
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("build an HTTP client");
        let mut prom = Prometheus { child, addr, base: format!("http://{addr}"), log, client, dir };

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = prom.child.try_wait().expect("poll the prometheus process") {
                return Err(format!(
                    "prometheus ({}) exited during startup with {status}; config:\n{}\nlog tail:\n{}",
                    bin.display(),
                    config_yaml(targets),
                    prom.log_tail()
                ));
            }
            let ready = prom
                .client
                .get(format!("{}/-/ready", prom.base))
                .send()
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(prom);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "prometheus on {addr} was not ready within {READY_TIMEOUT:?}; log tail:\n{}",
                    prom.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` of the server.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The server's working directory (config, storage, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's stdout/stderr.
    pub fn log_tail(&self) -> String {
        super::tail_file(&self.log, 40)
    }

    /// GET an API path with query parameters; returns the response's `data` after checking
    /// `status == "success"`. Panics with the server's error otherwise.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url = url::Url::parse_with_params(&format!("{}{path}", self.base), params).expect("valid API URL");
        let response = self
            .client
            .get(url.clone())
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}\nprometheus log tail:\n{}", self.log_tail()));
        let status = response.status();
        let body: Value = response
            .json()
            .unwrap_or_else(|e| panic!("GET {url}: HTTP {status}, body is not JSON: {e}"));
        if body["status"] != "success" {
            panic!(
                "GET {url}: HTTP {status}, {} {}: {}",
                body["status"], body["errorType"], body["error"]
            );
        }
        body["data"].clone()
    }

    /// An instant query (`/api/v1/query`) at the current time; returns the response's `data`
    /// (`{"resultType": …, "result": …}`).
    pub fn query(&self, promql: &str) -> Value {
        self.api("/api/v1/query", &[("query", promql)])
    }

    /// An instant query whose result is a vector, as samples.
    pub fn query_vector(&self, promql: &str) -> Vec<Sample> {
        let data = self.query(promql);
        assert_eq!(data["resultType"], "vector", "{promql}: expected a vector result, got {data}");
        data["result"]
            .as_array()
            .expect("vector result is an array")
            .iter()
            .map(|item| Sample { labels: labels_of(&item["metric"]), value: sample_value(&item["value"]) })
            .collect()
    }

    /// The value of a query that returns at most one sample (`None` for an empty result).
    /// Panics when it returns several.
    pub fn value(&self, promql: &str) -> Option<f64> {
        let samples = self.query_vector(promql);
        assert!(samples.len() <= 1, "{promql}: expected at most one sample, got {samples:?}");
        samples.first().map(|s| s.value)
    }

    /// The label sets of every series matching `selector` (`/api/v1/series`), all time.
    pub fn series(&self, selector: &str) -> Vec<BTreeMap<String, String>> {
        let data = self.api("/api/v1/series", &[("match[]", selector)]);
        data.as_array().expect("series result is an array").iter().map(labels_of).collect()
    }

    /// The metadata (`type`, `help`, `unit`) scraped for `metric` (`/api/v1/metadata`).
    pub fn metadata(&self, metric: &str) -> Vec<Value> {
        let data = self.api("/api/v1/metadata", &[("metric", metric)]);
        data[metric].as_array().cloned().unwrap_or_default()
    }

    /// The active scrape targets (`/api/v1/targets`), for diagnostics.
    pub fn targets(&self) -> Value {
        self.api("/api/v1/targets", &[("state", "active")])
    }

    /// Polls `condition` every 200 ms until it holds. Panics after `timeout` with `what`, the
    /// targets' scrape health and the server's log tail.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut condition: impl FnMut(&Prometheus) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\ntargets: {}\nprometheus log tail:\n{}",
                    self.targets_summary(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every target has been scraped successfully at least `scrapes` times (in
    /// the last minute, counted as the sum of its `up` samples).
    pub fn wait_for_scrapes(&self, scrapes: u32, timeout: Duration) {
        let promql = format!("min(sum_over_time(up{{job=\"{JOB}\"}}[1m]))");
        self.wait_for(&format!("{scrapes} successful scrapes of every target"), timeout, |prom| {
            prom.value(&promql).is_some_and(|n| n >= f64::from(scrapes))
        });
    }

    fn targets_summary(&self) -> String {
        let url = format!("{}/api/v1/targets?state=active", self.base);
        let Ok(body) = self.client.get(url).send().and_then(|r| r.json::<Value>()) else {
            return "(unavailable)".into();
        };
        let mut out = String::new();
        for t in body["data"]["activeTargets"].as_array().into_iter().flatten() {
            let _ = write!(
                out,
                "\n  {} health={} lastError={:?} lastScrape={}",
                t["scrapeUrl"], t["health"], t["lastError"], t["lastScrape"]
            );
        }
        if out.is_empty() { "(none)".into() } else { out }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The generated config: scrape every target each second.
fn config_yaml(targets: &[String]) -> String {
    let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: '{JOB}'\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{list}]\n"
    )
}

/// The `prometheus` binary: `$SERPHONA_OBS_TEST_PROMETHEUS_BIN`, else the one on PATH.
/// Panics, saying how to install it, when there is none.
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os(BIN_ENV) {
        return PathBuf::from(bin);
    }
    super::which("prometheus").unwrap_or_else(|| {
        panic!(
            "the `prometheus` binary is not on PATH; this test runs the real Prometheus server. \
             Run scripts/test.sh (it installs the Debian package `prometheus`), or \
             `apt-get install prometheus`, or set {BIN_ENV} to a prometheus binary."
        )
    })
}

fn labels_of(metric: &Value) -> BTreeMap<String, String> {
    metric
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// `[timestamp, "value"]` → value.
fn sample_value(pair: &Value) -> f64 {
    let text = pair[1].as_str().unwrap_or_else(|| panic!("sample value is not [ts, \"v\"]: {pair}"));
    text.parse().unwrap_or_else(|e| panic!("sample value {text:?} is not a number: {e}"))
}
