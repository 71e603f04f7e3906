//! The ClickHouse table model, shared by the write side (the sink,
//! [`crate::sinks::clickhouse`]) and the read side ([`crate::store::clickhouse`]): the rows of
//! each table ([`rows`]), the migrations of `schemas/` ([`schema`]), the client, its errors, and
//! the one insert both the sink and the tools use ([`insert_rows`]).
//!
//! Inserts are idempotent: each carries an `insert_deduplication_token` (the tables keep a
//! deduplication window, `non_replicated_deduplication_window`, and replicated tables do it by
//! default), so the same insert sent again is dropped by ClickHouse instead of doubling rows.
//! The row tables are also ReplacingMergeTree tables keyed by `event_id`, which collapses any
//! copy that got past the window on merge.

pub mod rows;
pub mod schema;

use std::time::Duration;

use ::clickhouse::{Client, RowWrite};

use crate::config::{ClickHouseConfig, Compression};
use crate::pipeline::SharedEvent;

/// A ClickHouse request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClickHouseError {
    /// The server answered with an exception.
    #[error("ClickHouse error {code}{}: {message}", name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Server {
        /// ClickHouse's error code (`X-ClickHouse-Exception-Code`), 0 when the answer had none.
        code: u32,
        /// The code's name, e.g. `TYPE_MISMATCH`, when the message gives it.
        name: Option<String>,
        /// The message.
        message: String,
    },
    /// The server could not be reached or the connection broke.
    #[error("cannot reach ClickHouse: {0}")]
    Network(String),
    /// The request took longer than `clickhouse.request_timeout`.
    #[error("ClickHouse did not answer within the request timeout")]
    Timeout,
    /// The client refused the rows (e.g. they do not match the table's columns).
    #[error("{0}")]
    Client(String),
}

/// Error codes of data that ClickHouse will reject however often it is sent: parse errors,
/// type mismatches, constraint violations, values out of range.
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    16,  // NO_SUCH_COLUMN_IN_TABLE
    20,  // NUMBER_OF_COLUMNS_DOESNT_MATCH
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    44,  // ILLEGAL_COLUMN
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    62,  // SYNTAX_ERROR
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349, // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    469, // VIOLATED_CONSTRAINT
];

impl ClickHouseError {
    /// ClickHouse's error code, for server errors.
    pub fn code(&self) -> Option<u32> {
        match self {
            ClickHouseError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when sending the same rows again cannot succeed (bad data, type mismatch): such
    /// batches are not retried. Everything else (network, timeouts, overload, a missing table
    /// that `schema apply` will create) is transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            ClickHouseError::Server { code, .. } => PERMANENT_CODES.contains(code),
            ClickHouseError::Client(_) => true,
            ClickHouseError::Network(_) | ClickHouseError::Timeout => false,
        }
    }

    /// Parses a ClickHouse exception body: `Code: 60. DB::Exception: … (UNKNOWN_TABLE) (version …)`.
    pub fn from_body(body: &str) -> ClickHouseError {
        let body = body.trim();
        let (code, rest) = match body.strip_prefix("Code: ").and_then(|r| r.split_once('.')) {
            Some((n, rest)) => match n.trim().parse::<u32>() {
                Ok(code) => (code, rest.trim()),
                Err(_) => (0, body),
            },
            None => (0, body),
        };
        let message = rest.strip_prefix("DB::Exception: ").unwrap_or(rest);
        // The name is the last "(UPPER_CASE)" group before an optional "(version …)".
        let name = message
            .rsplit('(')
            .map(|part| part.trim_end().trim_end_matches(')'))
            .find(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
            .map(str::to_string);
        ClickHouseError::Server { code, name, message: message.to_string() }
    }
}

impl From<::clickhouse::error::Error> for ClickHouseError {
    fn from(e: ::clickhouse::error::Error) -> Self {
        use ::clickhouse::error::Error as E;
        match e {
            E::BadResponse(body) => ClickHouseError::from_body(&body),
            E::Network(e) => ClickHouseError::Network(error_chain(&*e)),
            E::TimedOut => ClickHouseError::Timeout,
            other => ClickHouseError::Client(other.to_string()),
        }
    }
}

/// An error and its sources on one line, each cause once (HTTP clients' own messages omit why
/// a connection failed).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A client for the configured server and database.
pub fn client(config: &ClickHouseConfig) -> ::clickhouse::Client {
    let mut url = config.endpoint.as_str().trim_end_matches('/').to_string();
    if url.is_empty() {
        url = "http://localhost:8123".into();
    }
    use hyper_util::client::legacy::Client as HyperClient;
    ::clickhouse::Client::with_http_client(
        HyperClient::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build(connector()),
    )
    .with_url(url)
        .with_user(config.user.clone())
        .with_password(config.password.clone())
        .with_database(config.database.clone())
        .with_compression(match config.compression {
            Compression::Lz4 => ::clickhouse::Compression::Lz4,
            Compression::None => ::clickhouse::Compression::None,
        })
}

/// The clickhouse crate's own HTTP connector (keepalive 60 s, HTTP and HTTPS with the webpki
/// roots; the client closes idle connections after 2 s, as the crate's does), with
/// `TCP_NODELAY`. The crate leaves Nagle's algorithm on, and an insert's body goes out in several writes: the last small one waited
/// for the server's delayed ACK, about 25 ms per insert (the sink delivered ~10,000 events/s to
/// a server that answers at once, with the CPU idle 60% of the time; BENCHMARKS.md).
fn connector() -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    use hyper_util::client::legacy::connect::HttpConnector;
    let mut connector = HttpConnector::new();
    connector.set_keepalive(Some(Duration::from_secs(60)));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector)
}

/// Inserts the rows `table` has for `events` (those its row builder makes a row of; none is
/// not an error), with a deduplication token.
pub async fn insert_events(
    client: &Client,
    table: rows::Table,
    events: &[&SharedEvent],
    token: &str,
    timeout: Duration,
) -> Result<(), ClickHouseError> {
    use rows::Table;
    // One insert per table, each with its own row type.
    macro_rules! insert_as {
        ($row:ident, $build:path) => {{
            let rows: Vec<_> = events.iter().filter_map(|e| $build(e)).collect();
            insert_rows::<rows::$row<'static>>(client, table.name(), &rows, token, timeout).await
        }};
    }
    match table {
        Table::Events => insert_as!(EventRow, rows::event_row),
        Table::Conversations => insert_as!(ConversationRow, rows::conversation_row),
        Table::Interactions => insert_as!(InteractionRow, rows::interaction_row),
        Table::Decisions => insert_as!(DecisionRow, rows::decision_row),
        Table::Spans => insert_as!(SpanRow, rows::span_row),
    }
}

/// One INSERT of rows with a deduplication token.
pub async fn insert_rows<T: RowWrite>(
    client: &Client,
    table: &str,
    rows: &[T::Value<'_>],
    token: &str,
    timeout: Duration,
) -> Result<(), ClickHouseError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client
        .insert::<T>(table)
        .await?
        .with_setting("insert_deduplication_token", token)
        .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
        // Token deduplication applies to synchronous inserts; newer servers default to async.
        .with_setting("async_insert", "0")
        .with_timeouts(Some(timeout), Some(timeout));
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clickhouse_exception_bodies() {
        let e = ClickHouseError::from_body(
            "Code: 60. DB::Exception: Unknown table expression identifier 'nope'. (UNKNOWN_TABLE) (version 24.8.1.1)\n",
        );
        assert_eq!(e.code(), Some(60));
        let ClickHouseError::Server { name, message, .. } = &e else { panic!() };
        assert_eq!(name.as_deref(), Some("UNKNOWN_TABLE"));
        assert!(message.starts_with("Unknown table"));
        assert!(!e.is_permanent());
        let e = ClickHouseError::from_body("Code: 469. DB::Exception: Constraint `c` is violated. (VIOLATED_CONSTRAINT)");
        assert!(e.is_permanent());
        assert!(e.to_string().contains("469 (VIOLATED_CONSTRAINT)"), "{e}");
        let e = ClickHouseError::from_body("<html>502 Bad Gateway</html>");
        assert_eq!(e.code(), Some(0));
        assert!(!e.is_permanent());
    }
}
