//! `dashboards lint`: the structure checks, then every panel's queries run against the servers
//! given — PromQL through Prometheus' HTTP API, SQL through ClickHouse's HTTP interface, LogQL
//! through Loki's — with the template variables at All and Grafana's variables and macros
//! expanded for a time range ending now. Each panel is ok (a query returned data), no data, an
//! error (with the server's message) or not run (no server given for its datasource).

pub use serphona_obs::analytics::error_chain;
use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value as Json;
use time::OffsetDateTime;

use super::expand::{self, Window};
use super::model::{self, Kind, MIXED};
use super::structure;
use super::{DashboardFile, http_client};

/// Where the queries go.
pub struct Servers {
    /// Prometheus' base URL.
    pub prometheus: Option<url::Url>,
    /// ClickHouse's HTTP interface.
    pub clickhouse: Option<ClickHouseServer>,
    /// Loki's base URL.
    pub loki: Option<url::Url>,
}

/// ClickHouse's HTTP interface and the database the SQL's table names are in.
pub struct ClickHouseServer {
    /// Base URL (`http://localhost:8123`).
    pub url: url::Url,
    /// Database (the Grafana datasource's default database).
    pub database: String,
    /// User.
    pub user: String,
    /// Password ("" for none).
    pub password: String,
}

impl Servers {
    fn any(&self) -> bool {
        self.prometheus.is_some() || self.clickhouse.is_some() || self.loki.is_some()
    }
}

/// How a panel, query or variable came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Ran and returned data (or, with no server given, the structure is sound).
    #[serde(rename = "ok")]
    Ok,
    /// Ran and returned nothing.
    #[serde(rename = "no data")]
    NoData,
    /// A structure problem, or the server refused the query.
    #[serde(rename = "error")]
    Error,
    /// Not run: no server was given for its datasource.
    #[serde(rename = "not run")]
    NotRun,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NoData => "no data",
            Status::Error => "error",
            Status::NotRun => "not run",
        }
    }
}

/// The whole report (`--output json` prints it as is; field names are stable).
#[derive(Debug, Serialize)]
pub struct Report {
    /// One per dashboard file.
    pub dashboards: Vec<DashboardReport>,
    /// Counts over every dashboard.
    pub summary: Summary,
}

/// Counts of panels by status, and of problems.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Dashboards checked.
    pub dashboards: usize,
    /// Panels that show query results.
    pub panels: usize,
    /// Panels ok.
    pub ok: usize,
    /// Panels whose queries returned nothing.
    pub no_data: usize,
    /// Of those, the panels whose datasources hold the library's data (a populated stack):
    /// the query is wrong, or yields NaN where it should yield nothing; a failure.
    pub no_data_on_populated: usize,
    /// The datasources that hold the library's data (Prometheus: a series of its metrics in
    /// the range; ClickHouse: a row in `conversations`).
    pub populated: Vec<&'static str>,
    /// Panels with a structure problem or a failed query.
    pub errors: usize,
    /// Panels not run.
    pub not_run: usize,
    /// Problems not tied to one panel (the dashboard's own, its variables').
    pub dashboard_problems: usize,
    /// Variables whose query failed.
    pub variable_errors: usize,
}

/// One dashboard.
#[derive(Debug, Serialize)]
pub struct DashboardReport {
    /// `dashboards/<name>.json`.
    pub file: String,
    /// Its uid ("" when missing).
    pub uid: String,
    /// Its title ("" when missing).
    pub title: String,
    /// Problems not tied to one panel.
    pub problems: Vec<String>,
    /// The template variables whose values were looked up.
    pub variables: Vec<VariableReport>,
    /// The panels that show query results, in file order.
    pub panels: Vec<PanelReport>,
}

/// One template variable's query.
#[derive(Debug, Serialize)]
pub struct VariableReport {
    /// Its name.
    pub name: String,
    /// The query as run.
    pub query: String,
    /// ok (values found), no data, error, not run.
    pub status: Status,
    /// The values, or the error.
    pub detail: String,
}

/// One panel.
#[derive(Debug, Serialize)]
pub struct PanelReport {
    /// Panel id (null when missing).
    pub id: Option<i64>,
    /// Title.
    pub title: String,
    /// Panel type (timeseries, stat, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The panel's status: error if a structure problem or any query failed, else ok if any
    /// query returned data, else no data (or not run).
    pub status: Status,
    /// A one-line summary: the problem, the error, or what came back.
    pub detail: String,
    /// Its structure problems.
    pub problems: Vec<String>,
    /// Each query.
    pub queries: Vec<QueryReport>,
}

/// One query of a panel.
#[derive(Debug, Serialize)]
pub struct QueryReport {
    /// refId.
    pub ref_id: String,
    /// prometheus, clickhouse, loki, tempo (null when unknown).
    pub datasource: Option<Kind>,
    /// The query as sent, after variables and macros.
    pub query: String,
    /// ok, no data, error, not run.
    pub status: Status,
    /// Series, rows or lines returned; or the error.
    pub detail: String,
}

/// Runs the lint over `files`.
pub async fn run(
    files: &[DashboardFile],
    servers: &Servers,
    range: Duration,
    rate_interval: Duration,
) -> anyhow::Result<Report> {
    let http = http_client(Duration::from_secs(60))?;
    let runner = Runner { http, servers, window: Window::ending(OffsetDateTime::now_utc(), range, rate_interval) };
    runner.check_reachable().await?;
    let populated = runner.populated().await;
    let mut dashboards = Vec::new();
    for file in files {
        dashboards.push(runner.dashboard(file).await);
    }
    let mut summary = Summary { dashboards: dashboards.len(), ..Summary::default() };
    for d in &dashboards {
        summary.dashboard_problems += d.problems.len();
        summary.variable_errors += d.variables.iter().filter(|v| v.status == Status::Error).count();
        for p in &d.panels {
            summary.panels += 1;
            match p.status {
                Status::Ok => summary.ok += 1,
                Status::NoData => {
                    summary.no_data += 1;
                    // Every datasource it asks holds the library's data: the panel is broken.
                    let asked: Vec<Kind> =
                        p.queries.iter().filter(|q| q.status == Status::NoData).filter_map(|q| q.datasource).collect();
                    if !asked.is_empty() && asked.iter().all(|k| populated.contains(k)) {
                        summary.no_data_on_populated += 1;
                    }
                }
                Status::Error => summary.errors += 1,
                Status::NotRun => summary.not_run += 1,
            }
        }
    }
    summary.populated = populated.iter().map(|k| k.name()).collect();
    Ok(Report { dashboards, summary })
}

impl Report {
    /// Whether the lint failed: any structure problem, failed query or failed variable, or a
    /// panel without data on a populated datasource.
    pub fn failed(&self) -> bool {
        self.summary.errors > 0
            || self.summary.dashboard_problems > 0
            || self.summary.variable_errors > 0
            || self.summary.no_data_on_populated > 0
    }

    /// The report as a table, with a summary line.
    pub fn table(&self) -> String {
        use tabled::{Table, Tabled, settings::Style};
        #[derive(Tabled)]
        struct Line {
            dashboard: String,
            id: String,
            panel: String,
            datasource: String,
            status: String,
            detail: String,
        }
        let mut lines = Vec::new();
        for d in &self.dashboards {
            let name = d.file.trim_start_matches("dashboards/").to_string();
            for p in &d.problems {
                lines.push(Line {
                    dashboard: name.clone(),
                    id: "-".into(),
                    panel: "(dashboard)".into(),
                    datasource: String::new(),
                    status: "error".into(),
                    detail: p.clone(),
                });
            }
            for v in &d.variables {
                lines.push(Line {
                    dashboard: name.clone(),
                    id: "-".into(),
                    panel: format!("${}", v.name),
                    datasource: "prometheus".into(),
                    status: v.status.as_str().into(),
                    detail: v.detail.clone(),
                });
            }
            for p in &d.panels {
                let mut kinds: Vec<&str> = p.queries.iter().filter_map(|q| q.datasource.map(Kind::name)).collect();
                kinds.dedup();
                lines.push(Line {
                    dashboard: name.clone(),
                    id: p.id.map_or_else(|| "-".into(), |i| i.to_string()),
                    panel: p.title.clone(),
                    datasource: kinds.join("+"),
                    status: p.status.as_str().into(),
                    detail: p.detail.clone(),
                });
            }
        }
        let s = &self.summary;
        let mut out = Table::new(lines).with(Style::rounded()).to_string();
        out.push_str(&format!(
            "\n{} dashboards, {} panels: {} ok, {} no data, {} errors, {} not run; {} dashboard problems, {} variable errors\n",
            s.dashboards, s.panels, s.ok, s.no_data, s.errors, s.not_run, s.dashboard_problems, s.variable_errors
        ));
        if s.no_data_on_populated > 0 {
            out.push_str(&format!(
                "{} panels have no data although {} hold the library's data: their queries are wrong or yield NaN\n",
                s.no_data_on_populated,
                s.populated.join(" and ")
            ));
        }
        out
    }
}

struct Runner<'a> {
    http: reqwest::Client,
    servers: &'a Servers,
    window: Window,
}

/// What one query came back with.
enum Outcome {
    Data(String),
    Empty(String),
    Failed(String),
    Skipped(String),
}

impl Runner<'_> {
    /// The datasources given that hold the library's data: a Prometheus with a series of its
    /// metrics in the range, a ClickHouse with a row in `conversations`. On those, a panel
    /// without data is a failure.
    async fn populated(&self) -> Vec<Kind> {
        let mut kinds = Vec::new();
        if let Some(base) = &self.servers.prometheus {
            let q = format!(
                "count(count_over_time({{__name__=~\"conversation_total|serphona_obs_events_accepted_total\"}}[{}s]))",
                (self.window.to - self.window.from).whole_seconds().max(1)
            );
            if matches!(self.promql(base, &q, true).await, Outcome::Data(_)) {
                kinds.push(Kind::Prometheus);
            }
        }
        if let Some(ch) = &self.servers.clickhouse {
            if matches!(self.sql(ch, "SELECT 1 FROM conversations LIMIT 1", false).await, Outcome::Data(_)) {
                kinds.push(Kind::ClickHouse);
            }
        }
        kinds
    }

    /// Fails the whole lint, naming the server, when a server given cannot be reached.
    async fn check_reachable(&self) -> anyhow::Result<()> {
        let s = self.servers;
        let checks = [
            (s.prometheus.as_ref(), "Prometheus", "--prometheus-url", "-/ready"),
            (s.clickhouse.as_ref().map(|c| &c.url), "ClickHouse", "--clickhouse-url", "ping"),
            (s.loki.as_ref(), "Loki", "--loki-url", "ready"),
        ];
        for (url, name, flag, path) in checks {
            let Some(url) = url else { continue };
            let probe = join(url, path);
            match self.http.get(probe.clone()).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    anyhow::bail!("{name} at {url} ({flag}) is not ready: GET {probe} answered HTTP {}", r.status())
                }
                Err(e) => {
                    anyhow::bail!("cannot reach {name} at {url} ({flag}): {}", error_chain(&e))
                }
            }
        }
        Ok(())
    }

    async fn dashboard(&self, file: &DashboardFile) -> DashboardReport {
        let json = match &file.json {
            Ok(j) => j,
            Err(e) => {
                return DashboardReport {
                    file: file.path.clone(),
                    uid: String::new(),
                    title: String::new(),
                    problems: vec![format!("not valid JSON: {e}")],
                    variables: Vec::new(),
                    panels: Vec::new(),
                };
            }
        };
        let text = |k: &str| json.get(k).and_then(Json::as_str).unwrap_or("").to_string();
        let problems = structure::check(json);
        let vars = values(json);
        let mut variables = Vec::new();
        for v in model::variables(json) {
            if let Some(r) = self.variable(&v, &vars).await {
                variables.push(r);
            }
        }
        let mut panels = Vec::new();
        for (i, p) in model::panels(json).iter().enumerate() {
            if !p.shows_queries() {
                continue;
            }
            let own: Vec<String> =
                problems.iter().filter(|pr| pr.panel == Some(i)).map(|pr| pr.message.clone()).collect();
            panels.push(self.panel(p, own, &vars).await);
        }
        // Problems of rows (ids, grid) are reported with the dashboard.
        let panel_list = model::panels(json);
        let dashboard_problems = problems
            .iter()
            .filter(|pr| pr.panel.is_none_or(|i| !panel_list[i].shows_queries()))
            .map(|pr| pr.message.clone())
            .collect();
        DashboardReport {
            file: file.path.clone(),
            uid: text("uid"),
            title: text("title"),
            problems: dashboard_problems,
            variables,
            panels,
        }
    }

    async fn variable(&self, v: &model::Variable<'_>, vars: &HashMap<String, expand::Value>) -> Option<VariableReport> {
        let kind = v.datasource().and_then(|d| d.uid().and_then(Kind::of_uid));
        // Without a Prometheus to ask there is nothing to say about a variable's values.
        if v.kind() != "query" || kind != Some(Kind::Prometheus) || self.servers.prometheus.is_none() {
            return None;
        }
        let raw = v.query().unwrap_or("");
        let query = expand::interpolate(raw, vars, &self.window);
        let base = self.servers.prometheus.as_ref()?;
        let (status, detail) = match self.label_values(base, &query).await {
            Ok(values) if values.is_empty() => (Status::NoData, "no values".into()),
            Ok(values) => {
                let shown: Vec<&str> = values.iter().take(8).map(String::as_str).collect();
                let more = if values.len() > 8 { ", …" } else { "" };
                (Status::Ok, format!("{} values: {}{more}", values.len(), shown.join(", ")))
            }
            Err(e) => (Status::Error, e),
        };
        Some(VariableReport { name: v.name().to_string(), query, status, detail })
    }

    /// `label_values(selector, label)` / `label_values(label)` through
    /// `/api/v1/label/<label>/values`.
    async fn label_values(&self, base: &url::Url, query: &str) -> Result<Vec<String>, String> {
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| format!("the lint runs label_values(…) variable queries only, not {query:?}"))?;
        let (selector, label) = match inner.rfind(',') {
            Some(i) => (Some(inner[..i].trim()), inner[i + 1..].trim()),
            None => (None, inner.trim()),
        };
        let mut params = vec![
            ("start".to_string(), self.window.from.unix_timestamp().to_string()),
            ("end".to_string(), self.window.to.unix_timestamp().to_string()),
        ];
        if let Some(s) = selector {
            params.push(("match[]".to_string(), s.to_string()));
        }
        let url = with_params(&join(base, &format!("api/v1/label/{label}/values")), &params);
        let data = self.prometheus_get(url).await?;
        Ok(data.as_array().map(|a| a.iter().filter_map(Json::as_str).map(str::to_string).collect()).unwrap_or_default())
    }

    async fn panel(
        &self,
        p: &model::Panel<'_>,
        problems: Vec<String>,
        vars: &HashMap<String, expand::Value>,
    ) -> PanelReport {
        let panel_kind = p.datasource().and_then(|d| d.uid().filter(|u| *u != MIXED).and_then(Kind::of_uid));
        let mut queries = Vec::new();
        for t in p.targets() {
            if t.hidden() {
                continue;
            }
            let kind = t.datasource().and_then(|d| d.uid().and_then(Kind::of_uid)).or(panel_kind);
            let raw = t.query().unwrap_or("");
            let (query, outcome) = self.query(kind, &t, raw, vars).await;
            let (status, detail) = match outcome {
                Outcome::Data(d) => (Status::Ok, d),
                Outcome::Empty(d) => (Status::NoData, d),
                Outcome::Failed(e) => (Status::Error, e),
                Outcome::Skipped(why) => (Status::NotRun, why),
            };
            queries.push(QueryReport { ref_id: t.ref_id().to_string(), datasource: kind, query, status, detail });
        }
        let failed: Vec<&QueryReport> = queries.iter().filter(|q| q.status == Status::Error).collect();
        let (status, detail) = if !problems.is_empty() {
            (Status::Error, problems.join("; "))
        } else if !failed.is_empty() {
            (Status::Error, failed.iter().map(|q| format!("{}: {}", q.ref_id, q.detail)).collect::<Vec<_>>().join("; "))
        } else if let Some(q) = queries.iter().find(|q| q.status == Status::Ok) {
            let others = queries.iter().filter(|o| o.status == Status::Ok).count() - 1;
            let detail = if queries.len() == 1 {
                q.detail.clone()
            } else {
                format!("{}: {} ({} of {} queries with data)", q.ref_id, q.detail, others + 1, queries.len())
            };
            (Status::Ok, detail)
        } else if !self.servers.any() {
            (Status::Ok, "structure ok (queries not run: no server URL given)".into())
        } else if queries.iter().all(|q| q.status == Status::NotRun) {
            (Status::NotRun, queries.first().map_or_else(|| "no queries".into(), |q| q.detail.clone()))
        } else {
            let empty: Vec<String> = queries
                .iter()
                .filter(|q| q.status == Status::NoData)
                .map(|q| format!("{}: {}", q.ref_id, q.detail))
                .collect();
            (Status::NoData, empty.join("; "))
        };
        PanelReport {
            id: p.id(),
            title: p.title().to_string(),
            kind: p.kind().to_string(),
            status,
            detail,
            problems,
            queries,
        }
    }

    async fn query(
        &self,
        kind: Option<Kind>,
        t: &model::Target<'_>,
        raw: &str,
        vars: &HashMap<String, expand::Value>,
    ) -> (String, Outcome) {
        let s = self.servers;
        match kind {
            Some(Kind::Prometheus) => {
                let q = expand::interpolate(raw, vars, &self.window);
                let outcome = match &s.prometheus {
                    None => Outcome::Skipped("no --prometheus-url".into()),
                    Some(base) => self.promql(base, &q, t.instant()).await,
                };
                (q, outcome)
            }
            Some(Kind::ClickHouse) => match expand::clickhouse(raw, vars, &self.window) {
                Err(e) => (raw.to_string(), Outcome::Failed(e)),
                Ok(sql) => {
                    let outcome = match &s.clickhouse {
                        None => Outcome::Skipped("no --clickhouse-url".into()),
                        Some(ch) => self.sql(ch, &sql, t.time_series()).await,
                    };
                    (sql, outcome)
                }
            },
            Some(Kind::Loki) => {
                let q = expand::interpolate(raw, vars, &self.window);
                let outcome = match &s.loki {
                    None => Outcome::Skipped("no --loki-url".into()),
                    Some(base) => self.logql(base, &q).await,
                };
                (q, outcome)
            }
            Some(Kind::Tempo) => (raw.to_string(), Outcome::Skipped("Tempo queries are not run by the lint".into())),
            None => (raw.to_string(), Outcome::Failed("no datasource of the provisioned set".into())),
        }
    }

    async fn prometheus_get(&self, url: url::Url) -> Result<Json, String> {
        let response =
            self.http.get(url.clone()).send().await.map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| format!("reading Prometheus' answer: {e}"))?;
        let json: Json = serde_json::from_str(&body).map_err(|_| format!("HTTP {status}: {}", snippet(&body)))?;
        if json["status"] != "success" {
            return Err(format!(
                "{}: {}",
                json["errorType"].as_str().unwrap_or("error"),
                json["error"].as_str().unwrap_or(&body)
            ));
        }
        Ok(json["data"].clone())
    }

    /// A range query over the window (what a Grafana time series panel runs), or an instant
    /// query at its end.
    async fn promql(&self, base: &url::Url, q: &str, instant: bool) -> Outcome {
        let w = &self.window;
        let url = if instant {
            with_params(
                &join(base, "api/v1/query"),
                &[("query".into(), q.into()), ("time".into(), w.to.unix_timestamp().to_string())],
            )
        } else {
            with_params(
                &join(base, "api/v1/query_range"),
                &[
                    ("query".into(), q.into()),
                    ("start".into(), w.from.unix_timestamp().to_string()),
                    ("end".into(), w.to.unix_timestamp().to_string()),
                    ("step".into(), w.interval.as_secs().max(1).to_string()),
                ],
            )
        };
        let data = match self.prometheus_get(url).await {
            Ok(d) => d,
            Err(e) => return Outcome::Failed(e),
        };
        let finite =
            |v: &Json| v.get(1).and_then(Json::as_str).and_then(|s| s.parse::<f64>().ok()).is_some_and(f64::is_finite);
        let result = &data["result"];
        match data["resultType"].as_str() {
            Some("matrix") => {
                let series = result.as_array().cloned().unwrap_or_default();
                let with_data =
                    series.iter().filter(|s| s["values"].as_array().is_some_and(|v| v.iter().any(finite))).count();
                let points: usize = series
                    .iter()
                    .map(|s| s["values"].as_array().map_or(0, |v| v.iter().filter(|p| finite(p)).count()))
                    .sum();
                if with_data > 0 {
                    Outcome::Data(format!("{with_data} series, {points} point{}", if points == 1 { "" } else { "s" }))
                } else if series.is_empty() {
                    Outcome::Empty("no series".into())
                } else {
                    Outcome::Empty(format!("{} series, all NaN", series.len()))
                }
            }
            Some("vector") => {
                let samples = result.as_array().cloned().unwrap_or_default();
                let with_data = samples.iter().filter(|s| finite(&s["value"])).count();
                if with_data > 0 {
                    Outcome::Data(format!("{with_data} series"))
                } else if samples.is_empty() {
                    Outcome::Empty("no series".into())
                } else {
                    Outcome::Empty(format!("{} series, all NaN", samples.len()))
                }
            }
            Some("scalar") if finite(result) => Outcome::Data("a scalar".into()),
            other => Outcome::Empty(format!("result type {}", other.unwrap_or("?"))),
        }
    }

    /// The SQL through ClickHouse's HTTP interface as a GET (which ClickHouse runs read-only),
    /// in FORMAT JSON. A time series query must return a date/time column, sorted ascending
    /// (the plugin refuses to pivot it otherwise).
    async fn sql(&self, ch: &ClickHouseServer, sql: &str, time_series: bool) -> Outcome {
        let url = with_params(
            &ch.url,
            &[
                ("database".into(), ch.database.clone()),
                ("default_format".into(), "JSON".into()),
                ("query".into(), sql.to_string()),
            ],
        );
        let mut request = self.http.get(url);
        if !ch.user.is_empty() {
            request = request.header("X-ClickHouse-User", &ch.user);
        }
        if !ch.password.is_empty() {
            request = request.header("X-ClickHouse-Key", &ch.password);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return Outcome::Failed(format!("ClickHouse at {}: {}", ch.url, error_chain(&e)));
            }
        };
        let status = response.status();
        let body = match response.text().await {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(format!("reading ClickHouse's answer: {e}")),
        };
        if !status.is_success() {
            return Outcome::Failed(snippet(&body));
        }
        let json: Json = match serde_json::from_str(&body) {
            Ok(j) => j,
            Err(e) => {
                return Outcome::Failed(format!("ClickHouse's answer is not JSON ({e}): {}", snippet(&body)));
            }
        };
        let meta: Vec<(String, String)> = json["meta"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (c["name"].as_str().unwrap_or("").to_string(), c["type"].as_str().unwrap_or("").to_string()))
            .collect();
        let is_time = |t: &str| {
            let t = t.trim_start_matches("Nullable(").trim_start_matches("LowCardinality(");
            t.starts_with("DateTime") || t.starts_with("Date")
        };
        let rows = json["data"].as_array().cloned().unwrap_or_default();
        let time_col = meta.iter().find(|(_, t)| is_time(t)).map(|(n, _)| n.clone());
        if time_series {
            let Some(tc) = &time_col else {
                return Outcome::Failed(format!(
                    "a time series query (format 0) must return a date/time column (alias it `time`); it returned {}",
                    meta.iter().map(|(n, t)| format!("{n} {t}")).collect::<Vec<_>>().join(", ")
                ));
            };
            let times: Vec<&str> = rows.iter().filter_map(|r| r[tc.as_str()].as_str()).collect();
            if times.windows(2).any(|w| w[0] > w[1]) {
                return Outcome::Failed(format!(
                    "a time series query must be sorted by {tc} ascending (ORDER BY {tc})"
                ));
            }
        }
        let values: Vec<&String> =
            meta.iter().filter(|(n, t)| Some(n) != time_col.as_ref() && !is_time(t)).map(|(n, _)| n).collect();
        let with_data = rows.iter().filter(|r| values.iter().any(|c| !r[c.as_str()].is_null())).count();
        if with_data > 0 {
            Outcome::Data(format!("{} rows", rows.len()))
        } else if rows.is_empty() {
            Outcome::Empty("no rows".into())
        } else {
            Outcome::Empty(format!("{} rows, all null", rows.len()))
        }
    }

    async fn logql(&self, base: &url::Url, q: &str) -> Outcome {
        let w = &self.window;
        let url = with_params(
            &join(base, "loki/api/v1/query_range"),
            &[
                ("query".into(), q.into()),
                ("start".into(), w.from.unix_timestamp_nanos().to_string()),
                ("end".into(), w.to.unix_timestamp_nanos().to_string()),
                ("limit".into(), "100".into()),
            ],
        );
        let response = match self.http.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(format!("GET {url}: {}", error_chain(&e))),
        };
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Outcome::Failed(format!("HTTP {status}: {}", snippet(&body)));
        }
        let json: Json = serde_json::from_str(&body).unwrap_or_default();
        let result = json["data"]["result"].as_array().cloned().unwrap_or_default();
        let lines: usize = result.iter().map(|s| s["values"].as_array().map_or(0, Vec::len)).sum();
        if lines > 0 {
            Outcome::Data(format!("{} streams, {lines} lines", result.len()))
        } else {
            Outcome::Empty("no lines".into())
        }
    }
}

/// What each template variable is in a lint run: All when it offers All, else its saved value.
fn values(d: &Json) -> HashMap<String, expand::Value> {
    model::variables(d)
        .iter()
        .map(|v| {
            let value = if v.include_all() {
                expand::Value::All { custom: v.all_value().map(str::to_string) }
            } else {
                match v.current().filter(|c| c != "$__all") {
                    Some(c) => expand::Value::One(c),
                    None => expand::Value::All { custom: None },
                }
            };
            (v.name().to_string(), value)
        })
        .collect()
}

/// `base` + `path`, keeping a base path (Grafana or Prometheus behind a prefix).
pub fn join(base: &url::Url, path: &str) -> url::Url {
    let mut u = base.clone();
    let joined = format!("{}/{}", u.path().trim_end_matches('/'), path.trim_start_matches('/'));
    u.set_path(&joined);
    u
}

fn with_params(url: &url::Url, params: &[(String, String)]) -> url::Url {
    let mut u = url.clone();
    u.query_pairs_mut().extend_pairs(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    u
}

/// The first line of a server's error body, at most 400 characters.
fn snippet(body: &str) -> String {
    let line = body.trim().lines().next().unwrap_or("").trim();
    if line.chars().count() > 400 {
        format!("{}…", line.chars().take(400).collect::<String>())
    } else {
        line.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression test for issue 12, item 13: "no data" passed the lint even on a stack that
    // held the library's data (21 of 49 panels all NaN after a demo).
    #[test]
    fn no_data_fails_the_lint_only_on_a_populated_datasource() {
        let report = |no_data_on_populated| Report {
            dashboards: Vec::new(),
            summary: Summary { panels: 2, ok: 1, no_data: 1, no_data_on_populated, ..Summary::default() },
        };
        assert!(!report(0).failed(), "no data on an empty stack is not a failure");
        assert!(report(1).failed(), "no data on a populated stack is a failure");
        assert!(report(1).table().contains("1 panels have no data although"), "{}", report(1).table());
    }
}
