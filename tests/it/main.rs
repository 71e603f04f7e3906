//! The one integration-test binary. Each module covers one area; `support` starts the real
//! test peers.

mod support;

mod cli;
mod clickhouse;
mod dashboards;
mod loki;
mod library;
mod middleware;
mod prometheus;
mod query;
mod stack;
mod store;
mod trace;
mod simulation;
mod tui;
