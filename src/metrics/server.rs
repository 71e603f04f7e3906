//! The `/metrics` HTTP endpoint, served on the library's I/O runtime
//! ([`crate::pipeline::runtime::io_runtime`]), so it works from sync code and from inside any
//! async runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::{Metrics, MetricsError};

/// A running `/metrics` endpoint; stops when dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves `/metrics`, `/healthz` and `/`.
    ///
    /// The bind happens before this returns, so a taken port is an error here, not later.
    pub fn start(metrics: Arc<Metrics>, addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
        let listener = std::net::TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
        listener.set_nonblocking(true).map_err(|source| MetricsError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = crate::pipeline::runtime::io_runtime();
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(|source| MetricsError::Bind { addr, source })?
        };
        let task = runtime.spawn(async move {
            let app = Router::new()
                .route("/metrics", get(scrape))
                .route("/healthz", get(|| async { "ok\n" }))
                .route("/", get(|| async { "serphona-obs: metrics at /metrics\n" }))
                .with_state(metrics);
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(MetricsServer { addr: bound, stop: Some(stop), task: Some(task) })
    }

    /// The address it listens on (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Scrapes are not recorded in `http_request_duration_seconds`: the library records no
/// telemetry about its own export paths, and scrape traffic would skew the service's latency.
async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.encode())
}

impl MetricsServer {
    /// Stops serving; waits for the server until `deadline`, then leaves it to finish
    /// on its own (an open scrape connection cannot hold up the caller's shutdown).
    pub fn stop(mut self, deadline: Instant) {
        self.stop_until(deadline);
    }

    fn stop_until(&mut self, deadline: Instant) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            while !task.is_finished() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_until(Instant::now() + std::time::Duration::from_secs(2));
    }
}
