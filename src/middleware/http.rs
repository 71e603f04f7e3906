//! HTTP: the server layer for axum and the client helper for reqwest.
//!
//! ```no_run
//! # fn f(obs: serphona_obs::Observability) {
//! use axum::{Router, routing::get};
//! use serphona_obs::middleware::http::HttpLayer;
//!
//! let app: Router = Router::new()
//!     .route("/conversations/{id}", get(|| async { "ok" }))
//!     .layer(HttpLayer::new(obs)); // `layer`, after the routes: the route template is known
//! # }
//! ```
//!
//! The `path` label is axum's matched route template (`/conversations/{id}`); requests that
//! match no route count as `<unmatched>`. A 5xx counts in `error_rate` as `http_5xx`, or as the
//! [`ErrorType`](super::ErrorType) the handler put in the response's extensions.

use opentelemetry::Context;

use super::{ObserveLayer, Protocol};
use crate::Observability;

/// The server layer for HTTP services (axum, or any tower service over `http` types).
pub struct HttpLayer;

impl HttpLayer {
    /// A layer recording requests with `obs`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(obs: Observability) -> ObserveLayer {
        ObserveLayer { obs, protocol: Protocol::Http }
    }
}

/// Carries the trace and the conversation to the service a request goes to.
pub trait RequestBuilderExt {
    /// Adds `traceparent`/`tracestate` of the current OpenTelemetry context and, when it
    /// belongs to a conversation (inside a request that named one, inside
    /// [`Conversation::in_span`](crate::Conversation::in_span), or with a conversation's
    /// context attached), the conversation header and its tenant and agent as baggage.
    fn propagate(self) -> Self;

    /// [`propagate`](Self::propagate) with an explicit context, e.g.
    /// [`Conversation::context`](crate::Conversation::context).
    fn propagate_context(self, cx: &Context) -> Self;
}

impl RequestBuilderExt for reqwest::RequestBuilder {
    fn propagate(self) -> Self {
        self.propagate_context(&Context::current())
    }

    fn propagate_context(self, cx: &Context) -> Self {
        let mut headers = http::HeaderMap::new();
        super::conversation::inject_headers(cx, &mut headers);
        self.headers(headers)
    }
}
