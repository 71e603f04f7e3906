//! `query` over the local store and the ClickHouse store (issue 5).
