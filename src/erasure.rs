//! Erasure: removing a customer's (or one conversation's) data from every store
//! (`serphona-obs forget`, or [`forget`] from a service).
//!
//! - **ClickHouse** (with the `clickhouse` feature and `clickhouse.enabled`): every MergeTree
//!   table of the database with a `conversation_id` column (conversations, interactions,
//!   decisions, events, spans) loses the conversations' rows, with a lightweight `DELETE`
//!   (an `ALTER TABLE … DELETE` mutation, waited for, where the server refuses that). For a
//!   customer, the conversations are those whose `conversations` rows or event log lines name
//!   the customer. The hourly rollups hold no customer id and no text (only counts and
//!   quantiles per tenant, agent and hour), so they are left as they are: their totals still
//!   include the erased conversations (docs/privacy.md has the statement that recounts them).
//! - **The local event log**: each file with lines of the conversations is rewritten without
//!   them (a private temporary file in the same folder, synced, renamed over the file) while
//!   holding the folder's lock exclusively ([`LogLock`]); writers wait for it and then reopen
//!   the replaced file, so a process that is recording at the same time loses nothing.
//! - **The ClickHouse spool** (`<data_dir>/spool/clickhouse`): the same for undelivered
//!   batches and rejected rows.
//! - **Loki** cannot delete lines through its push API: the report carries the LogQL
//!   selector to give Loki's delete API (`POST /loki/api/v1/delete`, compactor with deletion
//!   enabled).
//!
//! A second run finds nothing and removes 0 everywhere.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::sinks::event_log::{LogLock, event_log_dir, list_segments};

/// What to erase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Target {
    /// Every conversation of a customer.
    Customer(String),
    /// One conversation (its full id).
    Conversation(String),
}

/// Rows or lines removed from one table or file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// `clickhouse`, `event_log` or `spool`.
    pub store: String,
    /// The table, or the file's path.
    pub table: String,
    /// Rows or lines removed (with `dry_run`, that would be removed).
    pub rows: u64,
}

/// What [`forget`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForgetReport {
    /// What was erased.
    pub target: Target,
    /// Nothing was changed, only counted.
    pub dry_run: bool,
    /// The conversations erased.
    pub conversations: Vec<String>,
    /// Per store and table or file (every table and file looked at, 0 included).
    pub removed: Vec<Removed>,
    /// When Loki is configured: the LogQL selector of the conversations' lines, for Loki's
    /// delete API (this tool cannot delete from Loki).
    pub loki_selector: Option<String>,
}

impl ForgetReport {
    /// Rows and lines removed in all.
    pub fn total(&self) -> u64 {
        self.removed.iter().map(|r| r.rows).sum()
    }
}

/// Erasure failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    /// A file of the event log or the spool could not be read or rewritten.
    #[error("{context} {}: {source}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A ClickHouse statement failed.
    #[cfg(feature = "clickhouse")]
    #[error("ClickHouse {table}: {message}")]
    ClickHouse {
        /// The table (or `conversations` for the lookup).
        table: String,
        /// The server's message.
        message: String,
    },
    /// The target is empty.
    #[error("an empty id erases nothing: give the customer or conversation id")]
    EmptyId,
}

fn io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ErasureError {
    let path = path.to_path_buf();
    move |source| ErasureError::Io { context, path, source }
}

/// Erases `target` from every store `config` names (see the module docs). With `dry_run`,
/// counts what would be removed and changes nothing.
pub async fn forget(config: &Config, target: &Target, dry_run: bool) -> Result<ForgetReport, ErasureError> {
    let id = match target {
        Target::Customer(id) | Target::Conversation(id) => id,
    };
    if id.trim().is_empty() {
        return Err(ErasureError::EmptyId);
    }
    let local_dirs = local_files(&config.data_dir)?;
    let mut conversations: BTreeSet<String> = BTreeSet::new();
    match target {
        Target::Conversation(id) => {
            conversations.insert(id.clone());
        }
        Target::Customer(customer) => {
            conversations.extend(conversations_of_customer(&local_dirs, customer)?);
        }
    }
    let mut removed = Vec::new();
    #[cfg(feature = "clickhouse")]
    if config.clickhouse.enabled {
        let client = crate::analytics::client(&config.clickhouse);
        if let Target::Customer(customer) = target {
            conversations.extend(clickhouse_conversations(&client, customer).await?);
        }
        removed.extend(clickhouse_delete(&client, &conversations, dry_run).await?);
    }
    removed.extend(rewrite_local(&config.data_dir, &local_dirs, &conversations, dry_run)?);
    let loki_selector = (config.logging.enabled && config.logging.loki_endpoint.0.is_some() && !conversations.is_empty())
        .then(|| loki_selector(&config.service_name, &conversations));
    Ok(ForgetReport {
        target: target.clone(),
        dry_run,
        conversations: conversations.into_iter().collect(),
        removed,
        loki_selector,
    })
}

/// The LogQL selector of the conversations' lines in Loki (the sink's stream labels are
/// `service`, `environment`, `level`, `event_type`; the ids are in the JSON line).
pub fn loki_selector(service: &str, conversations: &BTreeSet<String>) -> String {
    let ids: Vec<String> = conversations.iter().map(|c| regex::escape(c)).collect();
    format!(
        "{{service={}}} | json | conversation_id=~`{}`",
        serde_json::Value::String(service.to_string()),
        ids.join("|")
    )
}

/// The local files that can hold events: (store, files) for the event log and the spool.
fn local_files(data_dir: &Path) -> Result<Vec<(&'static str, Vec<PathBuf>)>, ErasureError> {
    let log_dir = event_log_dir(data_dir);
    let segments = list_segments(&log_dir).map_err(io("cannot list", &log_dir))?.into_iter().map(|(_, p)| p).collect();
    let spool_dir = data_dir.join("spool").join("clickhouse");
    let mut spool = Vec::new();
    match std::fs::read_dir(&spool_dir) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".jsonl") && !name.starts_with('.') {
                    spool.push(entry.path());
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot list", &spool_dir)(e)),
    }
    spool.sort();
    Ok(vec![("event_log", segments), ("spool", spool)])
}

/// The parts of a line erasure looks at.
#[derive(serde::Deserialize)]
struct Ids {
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    customer_id: Option<String>,
}

fn line_ids(line: &str) -> Option<Ids> {
    serde_json::from_str::<Ids>(line).ok()
}

/// Conversations whose lines (starts and ends carry the customer) name `customer`.
fn conversations_of_customer(
    files: &[(&'static str, Vec<PathBuf>)],
    customer: &str,
) -> Result<BTreeSet<String>, ErasureError> {
    let mut out = BTreeSet::new();
    for (_, paths) in files {
        for path in paths {
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io("cannot read", path)(e)),
            };
            for line in std::io::BufReader::new(file).split(b'\n') {
                let line = line.map_err(io("cannot read", path))?;
                // Cheap: only lines that mention the customer are parsed.
                if !contains(&line, customer.as_bytes()) {
                    continue;
                }
                if let Some(ids) = std::str::from_utf8(&line).ok().and_then(line_ids) {
                    if ids.customer_id.as_deref() == Some(customer) {
                        out.extend(ids.conversation_id);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Rewrites each file without the conversations' lines; under the event log's lock.
fn rewrite_local(
    data_dir: &Path,
    files: &[(&'static str, Vec<PathBuf>)],
    conversations: &BTreeSet<String>,
    dry_run: bool,
) -> Result<Vec<Removed>, ErasureError> {
    let log_dir = event_log_dir(data_dir);
    // Held for the whole rewrite: writers wait, then reopen what was replaced.
    let lock = if log_dir.is_dir() && !dry_run {
        let lock = LogLock::open(&log_dir).map_err(io("cannot open the lock of", &log_dir))?;
        lock.lock(true).map_err(io("cannot lock", &log_dir))?;
        Some(lock)
    } else {
        None
    };
    let mut removed = Vec::new();
    for (store, paths) in files {
        for path in paths {
            let rows = rewrite_file(path, conversations, dry_run)?;
            removed.push(Removed { store: store.to_string(), table: path.display().to_string(), rows });
        }
    }
    drop(lock);
    Ok(removed)
}

/// Removes the conversations' lines from one file (atomically: temporary file + rename);
/// returns how many. Unparseable lines are kept.
fn rewrite_file(path: &Path, conversations: &BTreeSet<String>, dry_run: bool) -> Result<u64, ErasureError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("cannot read", path)(e)),
    };
    let mut kept = Vec::with_capacity(bytes.len());
    let mut removed = 0u64;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let text = std::str::from_utf8(line).unwrap_or("");
        let erase = conversations.iter().any(|c| text.contains(c.as_str()))
            && line_ids(text.trim_end()).and_then(|i| i.conversation_id).is_some_and(|c| conversations.contains(&c));
        if erase {
            removed += 1;
        } else {
            kept.extend_from_slice(line);
        }
    }
    if removed == 0 || dry_run {
        return Ok(removed);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".forget-{}-{name}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = crate::fsmode::create_private(&tmp)?;
        f.write_all(&kept)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("cannot rewrite", path)(e)
    })?;
    Ok(removed)
}

#[cfg(feature = "clickhouse")]
fn ch_error(table: &str) -> impl FnOnce(::clickhouse::error::Error) -> ErasureError {
    let table = table.to_string();
    move |e| ErasureError::ClickHouse { table, message: e.to_string() }
}

/// The customer's conversations in the `conversations` table.
#[cfg(feature = "clickhouse")]
async fn clickhouse_conversations(client: &::clickhouse::Client, customer: &str) -> Result<Vec<String>, ErasureError> {
    client
        .query("SELECT DISTINCT conversation_id FROM conversations WHERE customer_id = ?")
        .bind(customer)
        .fetch_all::<String>()
        .await
        .map_err(ch_error("conversations"))
}

/// Deletes the conversations' rows from every MergeTree table with a `conversation_id`.
#[cfg(feature = "clickhouse")]
async fn clickhouse_delete(
    client: &::clickhouse::Client,
    conversations: &BTreeSet<String>,
    dry_run: bool,
) -> Result<Vec<Removed>, ErasureError> {
    let tables: Vec<String> = client
        .query(
            "SELECT t.name FROM system.tables AS t \
             WHERE t.database = currentDatabase() AND t.engine LIKE '%MergeTree%' \
               AND t.name IN (SELECT table FROM system.columns WHERE database = currentDatabase() AND name = 'conversation_id') \
             ORDER BY t.name",
        )
        .fetch_all::<String>()
        .await
        .map_err(ch_error("system.tables"))?;
    let ids: Vec<&str> = conversations.iter().map(String::as_str).collect();
    let mut removed = Vec::new();
    for table in tables {
        // Table names come from the server, quoted; the ids are bound.
        let quoted = format!("`{}`", table.replace('\\', "\\\\").replace('`', "\\`"));
        let rows = if ids.is_empty() {
            0
        } else {
            client
                .query(&format!("SELECT count() FROM {quoted} WHERE has(?, conversation_id)"))
                .bind(&ids)
                .fetch_one::<u64>()
                .await
                .map_err(ch_error(&table))?
        };
        if rows > 0 && !dry_run {
            let lightweight = client
                .query(&format!("DELETE FROM {quoted} WHERE has(?, conversation_id)"))
                .bind(&ids)
                .with_setting("mutations_sync", "2")
                .execute()
                .await;
            if let Err(e) = lightweight {
                tracing::debug!("lightweight DELETE on {table} refused ({e}); using ALTER TABLE … DELETE");
                client
                    .query(&format!("ALTER TABLE {quoted} DELETE WHERE has(?, conversation_id)"))
                    .bind(&ids)
                    .with_setting("mutations_sync", "2")
                    .execute()
                    .await
                    .map_err(ch_error(&table))?;
            }
        }
        removed.push(Removed { store: "clickhouse".into(), table, rows });
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_removes_only_the_conversations_lines_and_keeps_the_file_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events-000001.jsonl");
        std::fs::write(
            &path,
            "{\"conversation_id\":\"c1\",\"customer_id\":\"x\"}\n{\"conversation_id\":\"c2\"}\nnot json c1\n{\"conversation_id\":\"c1\"}\n",
        )
        .unwrap();
        let ids: BTreeSet<String> = ["c1".to_string()].into();
        assert_eq!(rewrite_file(&path, &ids, true).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4, "a dry run changes nothing");
        assert_eq!(rewrite_file(&path, &ids, false).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"conversation_id\":\"c2\"}\nnot json c1\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(rewrite_file(&path, &ids, false).unwrap(), 0, "a second run removes nothing");
    }

    #[test]
    fn a_rewrite_while_a_writer_appends_loses_none_of_the_other_lines() {
        use crate::pipeline::{SharedEvent, Sink};
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        // Small files: the writer rotates while the rewrites run.
        let mut sink = crate::sinks::event_log::EventLogSink::open(&data, 64 * 1024, 0).unwrap();
        let writer = std::thread::spawn(move || {
            for batch in 0..200 {
                let events: Vec<SharedEvent> = (0..10)
                    .map(|i| {
                        let mut e = crate::types::test_event(&format!("batch {batch} line {i}"));
                        e.conversation_id = if i % 2 == 0 { "erase-me".into() } else { format!("keep-{batch}-{i}").into() };
                        SharedEvent::new(e)
                    })
                    .collect();
                sink.write(&events).unwrap();
            }
            sink.flush().unwrap();
        });
        let ids: BTreeSet<String> = ["erase-me".to_string()].into();
        let mut rewrites = 0;
        while !writer.is_finished() {
            let files = local_files(&data).unwrap();
            rewrite_local(&data, &files, &ids, false).unwrap();
            rewrites += 1;
        }
        writer.join().unwrap();
        let files = local_files(&data).unwrap();
        rewrite_local(&data, &files, &ids, false).unwrap();
        let mut kept = 0;
        for (_, path) in list_segments(&event_log_dir(&data)).unwrap() {
            for line in std::fs::read_to_string(path).unwrap().lines() {
                assert!(!line.contains("erase-me"), "{line}");
                kept += 1;
            }
        }
        assert_eq!(kept, 200 * 5, "every other line is there, once ({rewrites} rewrites ran during the writes)");
    }

    #[test]
    fn the_loki_selector_names_the_conversations() {
        let ids: BTreeSet<String> = ["a.1".to_string(), "b".to_string()].into();
        assert_eq!(loki_selector("svc", &ids), "{service=\"svc\"} | json | conversation_id=~`a\\.1|b`");
    }
}
