//! ClickHouse migrations: the numbered SQL files of `schemas/`, checksummed, recorded in the
//! `schema_migrations` table, applied once each.
//!
//! A migration whose file changed after it was applied is *drift*: it is reported and nothing is
//! applied until it is resolved (a changed migration is never re-run silently). Files are
//! templates: `${RETENTION_DAYS}` becomes `clickhouse.retention_days`. With a cluster name,
//! [`render`] turns every table into a `Replicated*MergeTree` table `NAME_local` created
//! `ON CLUSTER`, plus a `Distributed` table under the plain name, so readers and writers use the
//! same names on one server and on a cluster.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use clickhouse::Client;
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::ClickHouseError;

/// The migrations built into this version (the files of `schemas/`).
pub const BUILT_IN: &[(&str, &str)] = &[
    ("0001_conversations.sql", include_str!("../../schemas/0001_conversations.sql")),
    ("0002_interactions.sql", include_str!("../../schemas/0002_interactions.sql")),
    ("0003_decisions.sql", include_str!("../../schemas/0003_decisions.sql")),
    ("0004_events.sql", include_str!("../../schemas/0004_events.sql")),
    ("0005_spans.sql", include_str!("../../schemas/0005_spans.sql")),
    ("0006_metrics_snapshots.sql", include_str!("../../schemas/0006_metrics_snapshots.sql")),
    ("0007_rollups.sql", include_str!("../../schemas/0007_rollups.sql")),
    ("0008_seed_columns.sql", include_str!("../../schemas/0008_seed_columns.sql")),
    ("0009_usage_turn_taking.sql", include_str!("../../schemas/0009_usage_turn_taking.sql")),
];

/// The table that records applied migrations.
pub const MIGRATIONS_TABLE: &str = "schema_migrations";

/// A migration or its application failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A migrations folder or file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file name is not `NNNN_name.sql`, or two files share a number.
    #[error("{file}: {message}")]
    BadFile {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// `--cluster` rendering met a statement it does not know how to distribute.
    #[error("{file}: statement {index} cannot be rendered for a cluster: {message}")]
    Render {
        /// The file.
        file: String,
        /// 1-based statement number in the file.
        index: usize,
        /// Why.
        message: String,
    },
    /// ClickHouse refused a statement of a migration.
    #[error("{file}: statement {index} failed: {error}")]
    Statement {
        /// The migration file.
        file: String,
        /// 1-based statement number in the file.
        index: usize,
        /// ClickHouse's code and message.
        error: ClickHouseError,
    },
    /// Reading or writing the migrations table failed.
    #[error("{what}: {error}")]
    Server {
        /// What was being done.
        what: String,
        /// ClickHouse's code and message, or the connection error.
        error: ClickHouseError,
    },
    /// Applied migrations whose files changed since.
    #[error(
        "drift: {} applied migration(s) changed since they were applied, so nothing was applied: {}. \
         Restore the files as they were (changes go in a new numbered migration)",
        .0.len(),
        .0.iter().map(|d| format!("{} (applied {}, file now {})", d.file, short(&d.applied_checksum), short(&d.checksum))).collect::<Vec<_>>().join(", ")
    )]
    Drift(Vec<Drifted>),
}

/// The first 12 hex digits of a checksum, as messages and `schema status` show it.
pub fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

/// A migration whose file no longer matches what was applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drifted {
    /// The file.
    pub file: String,
    /// The checksum recorded when it was applied.
    pub applied_checksum: String,
    /// The file's checksum now.
    pub checksum: String,
}

/// One numbered migration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// The number (`0001` → 1).
    pub version: u32,
    /// The name after the number (`conversations`).
    pub name: String,
    /// The file name.
    pub file: String,
    /// The template text.
    pub text: String,
}

impl Migration {
    /// SHA-256 of the file's text, in hex: what drift is judged by.
    pub fn checksum(&self) -> String {
        format!("{:x}", Sha256::digest(self.text.as_bytes()))
    }

    fn parse(file: &str, text: String) -> Result<Migration, SchemaError> {
        let bad = |message: &str| SchemaError::BadFile { file: file.to_string(), message: message.to_string() };
        let stem = file.strip_suffix(".sql").ok_or_else(|| bad("a migration file name ends in .sql"))?;
        let (number, name) =
            stem.split_once('_').ok_or_else(|| bad("a migration file is named NNNN_name.sql, e.g. 0008_sessions.sql"))?;
        let version = number
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0 && number.chars().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| bad("the name must start with a positive number, e.g. 0008_sessions.sql"))?;
        Ok(Migration { version, name: name.to_string(), file: file.to_string(), text })
    }
}

/// The built-in migrations, in order.
pub fn built_in() -> Vec<Migration> {
    BUILT_IN.iter().map(|(f, t)| Migration::parse(f, t.to_string()).expect("built-in migration names are valid")).collect()
}

/// The `*.sql` migrations of a folder, in order.
pub fn from_dir(dir: &Path) -> Result<Vec<Migration>, SchemaError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SchemaError::Io { path, source }
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_some_and(|e| e == "sql") {
            let file = path.file_name().unwrap_or_default().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            out.push(Migration::parse(&file, text)?);
        }
    }
    out.sort_by_key(|m| m.version);
    for pair in out.windows(2) {
        if pair[0].version == pair[1].version {
            return Err(SchemaError::BadFile {
                file: pair[1].file.clone(),
                message: format!("has the same number as {}", pair[0].file),
            });
        }
    }
    Ok(out)
}

/// What the templates are rendered with.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// The database (for `Distributed(...)` and replication paths).
    pub database: String,
    /// `${RETENTION_DAYS}`.
    pub retention_days: usize,
    /// Render `ON CLUSTER` DDL with replicated and distributed tables.
    pub cluster: Option<String>,
}

/// Splits a migration into statements: `--` comments dropped, split at `;`.
fn statements(text: &str) -> Vec<String> {
    let without_comments: String = text
        .lines()
        .map(|l| match l.find("--") {
            // Our migrations keep `--` out of string literals.
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    without_comments.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

static CREATE_TABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)^CREATE TABLE IF NOT EXISTS\s+(\w+)\s*\(").expect("regex"));
static ENGINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)ENGINE\s*=\s*(\w*)MergeTree(?:\s*\(([^)]*)\))?").expect("regex"));
static CREATE_MV: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?is)^CREATE MATERIALIZED VIEW IF NOT EXISTS\s+(\w+)\s+TO\s+(\w+)\s+AS\s+(.*)$").expect("regex")
});
static ALTER_TABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)^ALTER TABLE\s+(\w+)\s+(.*)$").expect("regex"));
static DROP_VIEW: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?is)^DROP VIEW IF EXISTS\s+(\w+)\s*$").expect("regex"));
static FROM_TABLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\bFROM\s+(\w+)").expect("regex"));

/// The tables a set of migrations creates (for cluster rendering of later references).
fn created_tables(migrations: &[Migration]) -> Vec<String> {
    migrations
        .iter()
        .flat_map(|m| statements(&m.text))
        .filter_map(|s| CREATE_TABLE.captures(&s).map(|c| c[1].to_string()))
        .collect()
}

/// The statements of one migration, rendered. `all` is the whole set (its table names are
/// needed to rewrite references in cluster mode).
pub fn render(m: &Migration, all: &[Migration], opts: &RenderOptions) -> Result<Vec<String>, SchemaError> {
    let text = m.text.replace("${RETENTION_DAYS}", &opts.retention_days.to_string());
    let stmts = statements(&text);
    let Some(cluster) = &opts.cluster else {
        return Ok(stmts);
    };
    let tables = created_tables(all);
    let mut out = Vec::new();
    for (i, stmt) in stmts.iter().enumerate() {
        let err = |message: &str| SchemaError::Render { file: m.file.clone(), index: i + 1, message: message.to_string() };
        if let Some(c) = CREATE_TABLE.captures(stmt) {
            let name = c[1].to_string();
            let local = format!("{name}_local");
            let head_end = c.get(0).expect("match").end();
            let body = &stmt[head_end..];
            let engine = ENGINE.captures(body).ok_or_else(|| err("only *MergeTree tables can be replicated"))?;
            let kind = &engine[1];
            let path = format!("'/clickhouse/tables/{{shard}}/{}/{local}', '{{replica}}'", opts.database);
            let args = engine.get(2).map(|a| a.as_str().trim()).filter(|a| !a.is_empty());
            let replicated = match args {
                Some(a) => format!("ENGINE = Replicated{kind}MergeTree({path}, {a})"),
                None => format!("ENGINE = Replicated{kind}MergeTree({path})"),
            };
            let body = ENGINE.replace(body, regex::NoExpand(&replicated));
            out.push(format!("CREATE TABLE IF NOT EXISTS {local} ON CLUSTER {cluster}\n(\n{body}"));
            // Rows of one conversation stay on one shard, so FINAL and per-conversation reads
            // see them together.
            let shard_key = if body.contains("conversation_id") { "cityHash64(conversation_id)" } else { "rand()" };
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS {name} ON CLUSTER {cluster} AS {local}\n\
                 ENGINE = Distributed({cluster}, {}, {local}, {shard_key})",
                opts.database
            ));
        } else if let Some(c) = CREATE_MV.captures(stmt) {
            let (view, target, select) = (&c[1], &c[2], &c[3]);
            if !tables.iter().any(|t| t == target) {
                return Err(err(&format!("the view's target {target} is not a table of these migrations")));
            }
            let select = FROM_TABLE.replace_all(select, |f: &regex::Captures<'_>| {
                if tables.iter().any(|t| t == &f[1]) { format!("FROM {}_local", &f[1]) } else { f[0].to_string() }
            });
            out.push(format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {view} ON CLUSTER {cluster} TO {target}_local AS\n{select}"
            ));
        } else if let Some(c) = ALTER_TABLE.captures(stmt) {
            let (name, changes) = (&c[1], &c[2]);
            if !tables.iter().any(|t| t == name) {
                return Err(err(&format!("{name} is not a table of these migrations")));
            }
            // The columns change on the replicated tables and on the distributed one over them.
            out.push(format!("ALTER TABLE {name}_local ON CLUSTER {cluster}\n{changes}"));
            out.push(format!("ALTER TABLE {name} ON CLUSTER {cluster}\n{changes}"));
        } else if let Some(c) = DROP_VIEW.captures(stmt) {
            out.push(format!("DROP VIEW IF EXISTS {} ON CLUSTER {cluster}", &c[1]));
        } else {
            return Err(err(
                "only CREATE TABLE IF NOT EXISTS … ENGINE = *MergeTree, CREATE MATERIALIZED VIEW IF NOT EXISTS … TO …, \
                 ALTER TABLE and DROP VIEW IF EXISTS are rendered for a cluster",
            ));
        }
    }
    Ok(out)
}

/// The statements that create the database and the migrations table.
pub fn bootstrap(opts: &RenderOptions) -> (String, String) {
    let on = opts.cluster.as_ref().map(|c| format!(" ON CLUSTER {c}")).unwrap_or_default();
    let engine = match &opts.cluster {
        Some(_) => format!(
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{}/{MIGRATIONS_TABLE}', '{{replica}}', applied_at)",
            opts.database
        ),
        None => "ReplacingMergeTree(applied_at)".to_string(),
    };
    (
        format!("CREATE DATABASE IF NOT EXISTS {}{on}", opts.database),
        format!(
            "CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}{on}\n(\n    version    UInt32,\n    name       String,\n    \
             checksum   String,\n    applied_at DateTime64(3, 'UTC')\n)\nENGINE = {engine}\nORDER BY version"
        ),
    )
}

/// Where one migration stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// Applied, and the file is unchanged.
    Applied {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        applied_at: OffsetDateTime,
    },
    /// Not applied yet.
    Pending,
    /// Applied, but the file changed since.
    Drift {
        /// The checksum recorded when it was applied.
        applied_checksum: String,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        applied_at: OffsetDateTime,
    },
    /// Recorded in the database but not among these files (applied by a newer version).
    Unknown {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        applied_at: OffsetDateTime,
    },
}

/// One line of `schema status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationStatus {
    /// Number.
    pub version: u32,
    /// Name.
    pub name: String,
    /// The file.
    pub file: String,
    /// The file's checksum (the recorded one for `unknown`).
    pub checksum: String,
    /// Where it stands.
    #[serde(flatten)]
    pub state: State,
}

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
struct Record {
    version: u32,
    name: String,
    checksum: String,
    #[serde(with = "clickhouse::serde::time::datetime64::millis")]
    applied_at: OffsetDateTime,
}

/// What `apply` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApplyReport {
    /// The files applied now, in order.
    pub applied: Vec<String>,
    /// Statements run for them.
    pub statements: usize,
    /// Files already applied and unchanged.
    pub unchanged: usize,
}

/// Runs migrations against one server.
pub struct Migrator {
    client: Client,
    root: Client,
    opts: RenderOptions,
    migrations: Vec<Migration>,
}

impl Migrator {
    /// A migrator over `client` (which names the database in `opts`).
    pub fn new(client: Client, opts: RenderOptions, migrations: Vec<Migration>) -> Migrator {
        let root = client.clone().with_database("default");
        let client = client.with_database(opts.database.clone());
        Migrator { client, root, opts, migrations }
    }

    /// The migrations this migrator applies.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    async fn exec(client: &Client, sql: &str, what: &str) -> Result<(), SchemaError> {
        client
            .query(sql)
            .execute()
            .await
            .map_err(|e| SchemaError::Server { what: what.to_string(), error: ClickHouseError::from(e) })
    }

    /// Creates the database and the migrations table when missing.
    async fn ensure_bootstrap(&self) -> Result<(), SchemaError> {
        let (db, table) = bootstrap(&self.opts);
        Self::exec(&self.root, &db, &format!("creating database {}", self.opts.database)).await?;
        Self::exec(&self.client, &table, &format!("creating {}.{MIGRATIONS_TABLE}", self.opts.database)).await
    }

    async fn records(&self) -> Result<Vec<Record>, SchemaError> {
        self.client
            .query(&format!("SELECT ?fields FROM {MIGRATIONS_TABLE} FINAL ORDER BY version"))
            .fetch_all::<Record>()
            .await
            .map_err(|e| SchemaError::Server {
                what: format!("reading {}.{MIGRATIONS_TABLE}", self.opts.database),
                error: ClickHouseError::from(e),
            })
    }

    /// Where every migration stands. Changes nothing (no database or migrations table yet:
    /// everything is pending).
    pub async fn status(&self) -> Result<Vec<MigrationStatus>, SchemaError> {
        let exists = self
            .root
            .query("SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}")
            .param("db", &self.opts.database)
            .param("t", MIGRATIONS_TABLE)
            .fetch_one::<u64>()
            .await
            .map_err(|e| SchemaError::Server { what: "reading system.tables".into(), error: ClickHouseError::from(e) })?;
        let records = if exists > 0 { self.records().await? } else { Vec::new() };
        Ok(compare(&self.migrations, &records))
    }

    /// Applies what is pending, in order (creating the database and the migrations table
    /// first); refuses when any applied migration drifted.
    pub async fn apply(&self) -> Result<ApplyReport, SchemaError> {
        self.ensure_bootstrap().await?;
        let status = self.status().await?;
        let drifted: Vec<Drifted> = status
            .iter()
            .filter_map(|s| match &s.state {
                State::Drift { applied_checksum, .. } => Some(Drifted {
                    file: s.file.clone(),
                    applied_checksum: applied_checksum.clone(),
                    checksum: s.checksum.clone(),
                }),
                _ => None,
            })
            .collect();
        if !drifted.is_empty() {
            return Err(SchemaError::Drift(drifted));
        }
        let mut report = ApplyReport::default();
        for s in &status {
            match s.state {
                State::Pending => {}
                State::Applied { .. } => {
                    report.unchanged += 1;
                    continue;
                }
                _ => continue,
            }
            let m = self.migrations.iter().find(|m| m.version == s.version).expect("status lists our migrations");
            let stmts = render(m, &self.migrations, &self.opts)?;
            for (i, sql) in stmts.iter().enumerate() {
                self.client.query(sql).execute().await.map_err(|e| SchemaError::Statement {
                    file: m.file.clone(),
                    index: i + 1,
                    error: ClickHouseError::from(e),
                })?;
            }
            let record = Record {
                version: m.version,
                name: m.name.clone(),
                checksum: m.checksum(),
                applied_at: OffsetDateTime::now_utc(),
            };
            let recorded = async {
                let mut insert = self.client.insert::<Record>(MIGRATIONS_TABLE).await?;
                insert.write(&record).await?;
                insert.end().await
            };
            recorded.await.map_err(|e| SchemaError::Server {
                what: format!("recording {} in {MIGRATIONS_TABLE}", m.file),
                error: ClickHouseError::from(e),
            })?;
            report.statements += stmts.len();
            report.applied.push(m.file.clone());
        }
        Ok(report)
    }

    /// The DDL `apply` would run: of the pending migrations when the server answers, else of
    /// all of them (the error says why the server could not be asked).
    pub async fn dry_run(&self) -> (Vec<(String, Vec<String>)>, Option<SchemaError>) {
        let (pending, error): (Vec<&Migration>, _) = match self.status().await {
            Ok(status) => (
                self.migrations
                    .iter()
                    .filter(|m| status.iter().any(|s| s.version == m.version && s.state == State::Pending))
                    .collect(),
                None,
            ),
            Err(e) => (self.migrations.iter().collect(), Some(e)),
        };
        let mut out = Vec::new();
        if error.is_some() || pending.len() == self.migrations.len() {
            let (db, table) = bootstrap(&self.opts);
            out.push(("(bootstrap)".to_string(), vec![db, table]));
        }
        for m in pending {
            match render(m, &self.migrations, &self.opts) {
                Ok(stmts) => out.push((m.file.clone(), stmts)),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, error)
    }
}

fn compare(migrations: &[Migration], records: &[Record]) -> Vec<MigrationStatus> {
    let mut out: Vec<MigrationStatus> = migrations
        .iter()
        .map(|m| {
            let checksum = m.checksum();
            let state = match records.iter().find(|r| r.version == m.version) {
                None => State::Pending,
                Some(r) if r.checksum == checksum => State::Applied { applied_at: r.applied_at },
                Some(r) => State::Drift { applied_checksum: r.checksum.clone(), applied_at: r.applied_at },
            };
            MigrationStatus { version: m.version, name: m.name.clone(), file: m.file.clone(), checksum, state }
        })
        .collect();
    for r in records {
        if !migrations.iter().any(|m| m.version == r.version) {
            out.push(MigrationStatus {
                version: r.version,
                name: r.name.clone(),
                file: format!("{:04}_{}.sql", r.version, r.name),
                checksum: r.checksum.clone(),
                state: State::Unknown { applied_at: r.applied_at },
            });
        }
    }
    out.sort_by_key(|s| s.version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(cluster: Option<&str>) -> RenderOptions {
        RenderOptions { database: "analytics".into(), retention_days: 30, cluster: cluster.map(str::to_string) }
    }

    #[test]
    fn built_in_migrations_are_numbered_in_order_and_render() {
        let all = built_in();
        assert_eq!(all.iter().map(|m| m.version).collect::<Vec<_>>(), (1..=all.len() as u32).collect::<Vec<_>>());
        for m in &all {
            let stmts = render(m, &all, &opts(None)).unwrap();
            assert!(!stmts.is_empty(), "{}", m.file);
            for s in &stmts {
                assert!(!s.contains("${"), "{}: unrendered placeholder in {s}", m.file);
                assert!(!s.contains("--"), "{}: comment left in {s}", m.file);
            }
        }
        let conv = render(&all[0], &all, &opts(None)).unwrap();
        assert!(conv[0].contains("INTERVAL 30 DAY"), "{}", conv[0]);
    }

    #[test]
    fn cluster_rendering_replicates_distributes_and_rewrites_views() {
        let all = built_in();
        let conv = render(&all[0], &all, &opts(Some("prod"))).unwrap();
        assert_eq!(conv.len(), 2);
        assert!(conv[0].starts_with("CREATE TABLE IF NOT EXISTS conversations_local ON CLUSTER prod"), "{}", conv[0]);
        assert!(
            conv[0].contains(
                "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/analytics/conversations_local', '{replica}', version)"
            ),
            "{}",
            conv[0]
        );
        assert_eq!(
            conv[1],
            "CREATE TABLE IF NOT EXISTS conversations ON CLUSTER prod AS conversations_local\n\
             ENGINE = Distributed(prod, analytics, conversations_local, cityHash64(conversation_id))"
        );
        let events = render(&all[3], &all, &opts(Some("prod"))).unwrap();
        assert!(events[0].contains("ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/analytics/events_local', '{replica}')"));
        let rollups = render(&all[6], &all, &opts(Some("prod"))).unwrap();
        let mv = rollups.iter().find(|s| s.contains("conversations_hourly_mv")).unwrap();
        assert!(mv.contains("ON CLUSTER prod TO conversations_hourly_local AS"), "{mv}");
        assert!(mv.contains("FROM conversations_local"), "{mv}");
        assert!(!mv.contains("FROM conversations\n"), "{mv}");
        let agg = rollups.iter().find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS conversations_hourly_local")).unwrap();
        assert!(agg.contains("ReplicatedAggregatingMergeTree("), "{agg}");
        let dist = rollups.iter().find(|s| s.starts_with("CREATE TABLE IF NOT EXISTS conversations_hourly ON")).unwrap();
        assert!(dist.ends_with("rand())"), "{dist}");
        let (db, table) = bootstrap(&opts(Some("prod")));
        assert_eq!(db, "CREATE DATABASE IF NOT EXISTS analytics ON CLUSTER prod");
        assert!(table.contains("schema_migrations ON CLUSTER prod") && table.contains("ReplicatedReplacingMergeTree"));
    }

    #[test]
    fn cluster_rendering_refuses_what_it_does_not_know() {
        let all = built_in();
        let odd = Migration::parse("0009_odd.sql", "OPTIMIZE TABLE events FINAL;".into()).unwrap();
        let err = render(&odd, &all, &opts(Some("c"))).unwrap_err().to_string();
        assert!(err.contains("0009_odd.sql: statement 1"), "{err}");
        let stranger = Migration::parse("0009_odd.sql", "ALTER TABLE nope ADD COLUMN x UInt8;".into()).unwrap();
        let err = render(&stranger, &all, &opts(Some("c"))).unwrap_err().to_string();
        assert!(err.contains("nope is not a table of these migrations"), "{err}");
        // Without a cluster it is passed through as written.
        assert_eq!(render(&odd, &all, &opts(None)).unwrap(), vec!["OPTIMIZE TABLE events FINAL"]);
    }

    // Issue 12, section 1: the seed-columns migration renders for a cluster too: the column
    // changes go to the replicated tables and to the distributed tables over them, the view is
    // dropped and created again on every node, reading the local table.
    #[test]
    fn cluster_rendering_of_the_seed_columns_migration() {
        let all = built_in();
        let m = all.iter().find(|m| m.file == "0008_seed_columns.sql").unwrap();
        let stmts = render(m, &all, &opts(Some("prod"))).unwrap();
        assert_eq!(stmts[0], "DROP VIEW IF EXISTS interactions_hourly_mv ON CLUSTER prod");
        assert!(stmts[1].starts_with("ALTER TABLE interactions_local ON CLUSTER prod\nRENAME COLUMN sentiment TO sentiment_score"), "{}", stmts[1]);
        assert!(stmts[2].starts_with("ALTER TABLE interactions ON CLUSTER prod\nRENAME COLUMN sentiment TO sentiment_score"), "{}", stmts[2]);
        assert!(stmts.iter().any(|s| s.starts_with("ALTER TABLE conversations ON CLUSTER prod") && s.contains("start_time")));
        let mv = stmts.last().unwrap();
        assert!(mv.contains("ON CLUSTER prod TO interactions_hourly_local AS") && mv.contains("FROM interactions_local"), "{mv}");
        assert!(mv.contains("sum(ifNull(sentiment_score, 0))"), "{mv}");
    }

    #[test]
    fn file_names_and_checksums() {
        assert!(Migration::parse("x.sql", String::new()).is_err());
        assert!(Migration::parse("0000_zero.sql", String::new()).is_err());
        assert!(Migration::parse("00a1_x.sql", String::new()).is_err());
        let a = Migration::parse("0001_a.sql", "SELECT 1".into()).unwrap();
        let b = Migration::parse("0001_a.sql", "SELECT 2".into()).unwrap();
        assert_eq!(a.checksum().len(), 64);
        assert_ne!(a.checksum(), b.checksum());
    }

    #[test]
    fn compare_finds_pending_applied_drift_and_unknown() {
        let ms = vec![
            Migration::parse("0001_a.sql", "A".into()).unwrap(),
            Migration::parse("0002_b.sql", "B".into()).unwrap(),
            Migration::parse("0003_c.sql", "C".into()).unwrap(),
        ];
        let at = OffsetDateTime::UNIX_EPOCH;
        let rec = |v: u32, name: &str, sum: String| Record { version: v, name: name.into(), checksum: sum, applied_at: at };
        let records = vec![rec(1, "a", ms[0].checksum()), rec(2, "b", "old".into()), rec(9, "z", "zz".into())];
        let states: Vec<_> = compare(&ms, &records).into_iter().map(|s| (s.version, s.state)).collect();
        assert_eq!(
            states,
            vec![
                (1, State::Applied { applied_at: at }),
                (2, State::Drift { applied_checksum: "old".into(), applied_at: at }),
                (3, State::Pending),
                (9, State::Unknown { applied_at: at }),
            ]
        );
    }
}
