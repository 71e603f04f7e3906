//! Middleware: server layers for axum ([`http`]) and tonic ([`grpc`]), and the client helpers
//! that carry a conversation to the next service.
//!
//! Each request gets a server span: a child of the incoming W3C `traceparent` or, when the
//! request names a conversation (header `tracing.conversation_header`, default
//! `x-conversation-id`) that runs in this process, a child of that conversation's span, so
//! the request lands in the conversation's trace. The request is recorded in
//! `http_request_duration_seconds{method,path,status}` with the route template as `path`
//! (never the raw path: ids in URLs would make a series each), server errors in
//! `error_rate{service,error_type}`, and a request log line goes to `tracing` (target
//! `serphona_obs::request`) with the trace, span and conversation ids.
//!
//! The handler runs with the request's OpenTelemetry context attached, so
//! [`Observability::current_conversation`] gives the conversation the request named — the
//! local one, or a *joined* handle on one another service started — and outgoing calls made
//! through [`http::RequestBuilderExt`] or [`grpc::PropagateInterceptor`] carry the trace and
//! the conversation on.

pub mod conversation;
#[cfg(feature = "tonic")]
pub mod grpc;
#[cfg(feature = "axum")]
pub mod http;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Instant;

use ::http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::trace::{Link, SpanBuilder, SpanKind, Status, TraceContextExt};
use opentelemetry::{Context, KeyValue};

use crate::Observability;
use crate::trace::tree::GEN_AI_CONVERSATION_ID;

/// Set this in a response's extensions to count the request in
/// `error_rate{service,error_type}` under your own error type (a handler error that is not a
/// 5xx, or a more telling class than `http_5xx`):
/// `response.extensions_mut().insert(ErrorType::new("llm_timeout"))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorType(pub Arc<str>);

impl ErrorType {
    /// An error type; keep it short and low-cardinality.
    pub fn new(error_type: &str) -> Self {
        ErrorType(Arc::from(error_type))
    }
}

/// HTTP or gRPC: how the path label, the status and errors are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(all(feature = "axum", feature = "tonic")), allow(dead_code))]
pub(crate) enum Protocol {
    Http,
    Grpc,
}

/// The `path` label of requests axum matched no route for.
pub const UNMATCHED_ROUTE: &str = "<unmatched>";

/// The tower layer behind [`http::HttpLayer`] and [`grpc::GrpcLayer`].
#[derive(Clone)]
pub struct ObserveLayer {
    obs: Observability,
    protocol: Protocol,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, obs: self.obs.clone(), protocol: self.protocol }
    }
}

/// A service wrapped by [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    obs: Observability,
    protocol: Protocol,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Observe<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    type Response = Response<ObservedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let finish = Finish::begin(&self.obs, self.protocol, &req);
        req.extensions_mut().insert(finish.cx.clone());
        let inner = {
            let _attached = finish.cx.clone().attach();
            self.inner.call(req)
        };
        ResponseFuture { inner, finish: Some(finish) }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Observe`]: runs the handler with the request's context
    /// attached.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Holds the request's context (attached at every poll) until the response is there.
        finish: Option<Finish>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ObservedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _attached = this.finish.as_ref().expect("ResponseFuture polled after completion").cx.clone().attach();
            ready!(this.inner.poll(task))
        };
        let mut finish = this.finish.take().expect("ResponseFuture polled after completion");
        Poll::Ready(match result {
            Ok(response) => {
                finish.response(&response);
                let (parts, body) = response.into_parts();
                Ok(Response::from_parts(parts, ObservedBody { inner: body, finish: Some(finish) }))
            }
            Err(e) => {
                finish.service_failed();
                Err(e)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records the request when it has been sent (for gRPC, the status
    /// comes in the trailers at the end) or dropped.
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(task));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(trailers), Some(finish)) = (f.trailers_ref(), this.finish.as_mut()) {
                    finish.trailers(trailers);
                }
            }
            Some(Err(_)) => {
                if let Some(mut finish) = this.finish.take() {
                    finish.body_failed();
                }
            }
            None => {
                if let Some(mut finish) = this.finish.take() {
                    finish.ended = true;
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One request in flight; recorded once, when dropped (after the body ended, failed or was
/// abandoned).
pub struct Finish {
    obs: Observability,
    protocol: Protocol,
    cx: Context,
    method: ::http::Method,
    route: Arc<str>,
    path: String,
    started: Instant,
    /// The status label: the HTTP status, or the gRPC status code.
    status: Option<String>,
    error_type: Option<Arc<str>>,
    conversation: Option<Arc<str>>,
    /// The body was sent to the end.
    ended: bool,
}

impl Finish {
    fn begin<B>(obs: &Observability, protocol: Protocol, req: &Request<B>) -> Finish {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let route: Arc<str> = match protocol {
            #[cfg(feature = "axum")]
            Protocol::Http => req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or_else(|| Arc::from(UNMATCHED_ROUTE), |p| Arc::from(p.as_str())),
            #[cfg(not(feature = "axum"))]
            Protocol::Http => Arc::from(UNMATCHED_ROUTE),
            Protocol::Grpc => obs.metrics().path_label(&path),
        };
        let (upstream, named) = conversation::extract(&conversation::HeaderExtractor(req.headers()), obs.conversation_header());
        let upstream_sc = upstream.span().span_context().clone();
        let mut links = Vec::new();
        let parent = match named.as_ref().and_then(|c| obs.conversation(&c.conversation_id)) {
            Some(local) => {
                let local_cx = local.context();
                if upstream_sc.is_valid() && upstream_sc.trace_id() != local.trace_id() {
                    links.push(Link::with_context(upstream_sc));
                }
                local_cx
            }
            None => match &named {
                Some(c) => upstream.with_value(c.clone()),
                None => upstream,
            },
        };
        let conversation = named.map(|c| c.conversation_id);
        let (name, mut attributes) = match protocol {
            Protocol::Http => (
                format!("{method} {route}"),
                vec![
                    KeyValue::new("http.request.method", method.to_string()),
                    KeyValue::new("http.route", route.to_string()),
                    KeyValue::new("url.path", path.clone()),
                ],
            ),
            Protocol::Grpc => {
                let full = path.trim_start_matches('/');
                let (service, rpc) = full.split_once('/').unwrap_or((full, ""));
                (
                    full.to_string(),
                    vec![
                        KeyValue::new("rpc.system", "grpc"),
                        KeyValue::new("rpc.service", service.to_string()),
                        KeyValue::new("rpc.method", rpc.to_string()),
                    ],
                )
            }
        };
        if let Some(id) = &conversation {
            attributes.push(KeyValue::new("conversation_id", id.to_string()));
            attributes.push(KeyValue::new(GEN_AI_CONVERSATION_ID, id.to_string()));
        }
        let builder = SpanBuilder::from_name(name).with_kind(SpanKind::Server).with_attributes(attributes).with_links(links);
        let cx = obs.tracing().start_span(builder, &parent);
        Finish {
            obs: obs.clone(),
            protocol,
            cx,
            method,
            route,
            path,
            started: Instant::now(),
            status: None,
            error_type: None,
            conversation,
            ended: false,
        }
    }

    fn response<B>(&mut self, response: &Response<B>) {
        match self.protocol {
            Protocol::Http => self.status = Some(response.status().as_str().to_string()),
            Protocol::Grpc => self.grpc_status(response.headers()),
        }
        if let Some(ErrorType(t)) = response.extensions().get::<ErrorType>() {
            self.error_type = Some(t.clone());
        }
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if self.protocol == Protocol::Grpc {
            self.grpc_status(trailers);
        }
    }

    fn grpc_status(&mut self, headers: &HeaderMap) {
        if let Some(code) = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u16>().ok()) {
            self.status = Some(code.to_string());
        }
    }

    fn service_failed(&mut self) {
        self.status = Some(match self.protocol {
            Protocol::Http => "500".into(),
            Protocol::Grpc => "2".into(),
        });
        self.error_type.get_or_insert_with(|| Arc::from("service_error"));
    }

    fn body_failed(&mut self) {
        self.error_type.get_or_insert_with(|| Arc::from("response_body"));
    }

    /// The status label and the error type to count, from what was seen.
    fn outcome(&self) -> (String, Option<Arc<str>>) {
        match self.protocol {
            Protocol::Http => {
                // No response at all: the client went away first (nginx's 499).
                let status = self.status.clone().unwrap_or_else(|| "499".into());
                let server_error = status.starts_with('5').then(|| Arc::from("http_5xx"));
                (status, self.error_type.clone().or(server_error))
            }
            Protocol::Grpc => {
                // No status seen: cancelled before the end, or a body that ended without one.
                let status = self.status.clone().unwrap_or_else(|| if self.ended { "2".into() } else { "1".into() });
                let server_error = grpc_server_error(&status).map(Arc::from);
                (status, self.error_type.clone().or(server_error))
            }
        }
    }
}

/// gRPC codes that mean the server failed (not the caller): the `error_type` they count as.
fn grpc_server_error(code: &str) -> Option<&'static str> {
    Some(match code {
        "2" => "grpc_unknown",
        "4" => "grpc_deadline_exceeded",
        "13" => "grpc_internal",
        "14" => "grpc_unavailable",
        "15" => "grpc_data_loss",
        _ => return None,
    })
}

impl Drop for Finish {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let (status, error_type) = self.outcome();
        self.obs.record_request(self.method.as_str(), &self.route, &status, elapsed, error_type.as_deref());
        let span = self.cx.span();
        match self.protocol {
            Protocol::Http => {
                if let Ok(code) = status.parse::<i64>() {
                    span.set_attribute(KeyValue::new("http.response.status_code", code));
                }
            }
            Protocol::Grpc => {
                if let Ok(code) = status.parse::<i64>() {
                    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
                }
            }
        }
        if let Some(t) = &error_type {
            span.set_attribute(KeyValue::new("error.type", t.to_string()));
            span.set_status(Status::error(t.to_string()));
        }
        span.end();
        let sc = span.span_context();
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        let conversation_id = self.conversation.as_deref().unwrap_or("");
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    target: "serphona_obs::request",
                    service = self.obs.service(),
                    method = self.method.as_str(),
                    path = &*self.route,
                    url_path = self.path.as_str(),
                    status = status.as_str(),
                    duration_ms,
                    trace_id = %sc.trace_id(),
                    span_id = %sc.span_id(),
                    conversation_id,
                    error_type = error_type.as_deref().unwrap_or(""),
                    "request"
                )
            };
        }
        if error_type.is_some() {
            log!(warn);
        } else {
            log!(info);
        }
    }
}
