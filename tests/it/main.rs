//! The one integration-test binary. Each module covers one area; `support` starts the real
//! test peers.

mod support;

mod anomalies;
mod cli;
mod clickhouse;
mod completions;
mod crash;
mod damaged;
mod dashboards;
mod doctor;
mod loki;
mod library;
mod middleware;
mod privacy;
mod prometheus;
mod query;
mod scenario;
mod seed_contract;
mod simulation;
mod stack;
mod store;
mod trace;
mod tui;
mod usage;
