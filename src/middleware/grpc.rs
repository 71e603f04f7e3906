//! gRPC: the server layer for tonic and the client interceptor.
//!
//! ```no_run
//! # async fn f(obs: serphona_obs::Observability, channel: tonic::transport::Channel) {
//! use serphona_obs::middleware::grpc::{GrpcLayer, PropagateInterceptor};
//!
//! // server: tonic::transport::Server::builder().layer(GrpcLayer::new(obs.clone())).add_service(…)
//! // client: a generated client with the interceptor
//! let channel = tower::ServiceBuilder::new()
//!     .layer(tonic::service::InterceptorLayer::new(PropagateInterceptor))
//!     .service(channel);
//! # }
//! ```
//!
//! Requests are recorded in the same `http_request_duration_seconds{method,path,status}` as
//! HTTP, with `method="POST"`, the gRPC method as `path` (`/package.Service/Method`) and the gRPC
//! status code as `status` (`0` OK, `13` internal, …: the HTTP status of gRPC is nearly always
//! 200 and says nothing). The codes that mean the server failed (2 unknown, 4 deadline
//! exceeded, 13 internal, 14 unavailable, 15 data loss) count in `error_rate` as
//! `grpc_unknown`, `grpc_internal`, ….

use opentelemetry::Context;
use opentelemetry::propagation::Injector;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use super::{ObserveLayer, Protocol};
use crate::Observability;

/// The server layer for tonic: `Server::builder().layer(GrpcLayer::new(obs))`.
pub struct GrpcLayer;

impl GrpcLayer {
    /// A layer recording calls with `obs`.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(obs: Observability) -> ObserveLayer {
        ObserveLayer { obs, protocol: Protocol::Grpc }
    }
}

/// A tonic client interceptor that adds the current OpenTelemetry context (trace and
/// conversation, see [`RequestBuilderExt::propagate`](super::http::RequestBuilderExt::propagate))
/// to every call's metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropagateInterceptor;

impl tonic::service::Interceptor for PropagateInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_metadata(&Context::current(), request.metadata_mut());
        Ok(request)
    }
}

/// Adds `cx` (trace and conversation) to gRPC metadata, for calls made without the
/// interceptor.
pub fn inject_metadata(cx: &Context, metadata: &mut MetadataMap) {
    super::conversation::inject(cx, &mut MetadataInjector(metadata));
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value.as_str())) {
            self.0.insert(key, value);
        }
    }
}
