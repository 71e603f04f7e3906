//! The `/metrics` HTTP endpoint, served on the library's I/O runtime
//! ([`crate::pipeline::runtime::io_runtime`]), so it works from sync code and from inside any
//! async runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;

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
            let graceful = GracefulShutdown::new();
            let mut stopped = stopped;
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let metrics = metrics.clone();
                        let service = service_fn(move |req| {
                            let metrics = metrics.clone();
                            async move { Ok::<_, std::convert::Infallible>(respond(&metrics, &req)) }
                        });
                        let connection = graceful.watch(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
                        tokio::spawn(async move {
                            let _ = connection.await;
                        });
                    }
                    _ = &mut stopped => break,
                }
            }
            drop(listener);
            // Open scrapes finish; kept-alive connections close.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), graceful.shutdown()).await;
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
fn respond(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("a static response builds")
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/metrics" => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(Full::new(Bytes::from(metrics.encode())))
            .expect("a metrics response builds"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/" => text(StatusCode::OK, "serphona-obs: metrics at /metrics\n"),
        _ => text(StatusCode::NOT_FOUND, "not found: serphona-obs serves /metrics and /healthz\n"),
    }
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
