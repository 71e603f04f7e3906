//! An in-test OTLP trace receiver built on `opentelemetry-proto`'s generated types: the tonic
//! `TraceService` server for OTLP/gRPC, and `POST /v1/traces` with protobuf bodies for
//! OTLP/HTTP. It keeps every span it receives with the resource it came with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;

/// One received span with its resource's attributes.
#[derive(Debug, Clone)]
pub struct Received {
    pub resource: HashMap<String, String>,
    pub scope: String,
    pub span: Span,
}

impl Received {
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }
    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }
    pub fn parent_span_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }
    pub fn name(&self) -> &str {
        &self.span.name
    }
    /// A span attribute as text (ints and doubles printed, bools as true/false).
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    pub fn event_names(&self) -> Vec<String> {
        self.span.events.iter().map(|e| e.name.clone()).collect()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).map(any_to_string)
}

fn any_to_string(v: &AnyValue) -> String {
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[derive(Clone, Default)]
struct Store {
    spans: Arc<Mutex<Vec<Received>>>,
    requests: Arc<Mutex<usize>>,
}

impl Store {
    fn take(&self, request: ExportTraceServiceRequest) {
        *self.requests.lock().unwrap() += 1;
        let mut spans = self.spans.lock().unwrap();
        for rs in request.resource_spans {
            let resource: HashMap<String, String> = rs
                .resource
                .map(|r| r.attributes.iter().filter_map(|kv| Some((kv.key.clone(), any_to_string(kv.value.as_ref()?)))).collect())
                .unwrap_or_default();
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                for span in ss.spans {
                    spans.push(Received { resource: resource.clone(), scope: scope.clone(), span });
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Which OTLP transport the receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    Http,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    pub transport: Transport,
    store: Store,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    pub fn start(transport: Transport) -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let store = Store::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).expect("bind the OTLP receiver");
        let addr = listener.local_addr().unwrap();
        let served = store.clone();
        match transport {
            Transport::Grpc => {
                runtime.spawn(async move {
                    tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(served))
                        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                        .await
                        .expect("OTLP/gRPC receiver");
                });
            }
            Transport::Http => {
                use axum::body::Bytes;
                use prost::Message;
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: Bytes| {
                        let served = served.clone();
                        async move {
                            match ExportTraceServiceRequest::decode(body) {
                                Ok(request) => {
                                    served.take(request);
                                    let response = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
                                    (axum::http::StatusCode::OK, [("content-type", "application/x-protobuf")], response)
                                }
                                Err(e) => (
                                    axum::http::StatusCode::BAD_REQUEST,
                                    [("content-type", "text/plain")],
                                    e.to_string().into_bytes(),
                                ),
                            }
                        }
                    }),
                );
                runtime.spawn(async move { axum::serve(listener, app).await.expect("OTLP/HTTP receiver") });
            }
        }
        Receiver { addr, transport, store, runtime: Some(runtime) }
    }

    /// The endpoint to put in `tracing.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The protocol to put in `tracing.protocol`.
    pub fn protocol(&self) -> serphona_obs::config::Protocol {
        match self.transport {
            Transport::Grpc => serphona_obs::config::Protocol::Grpc,
            Transport::Http => serphona_obs::config::Protocol::Http,
        }
    }

    pub fn spans(&self) -> Vec<Received> {
        self.store.spans.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        *self.store.requests.lock().unwrap()
    }

    /// Waits until `pred` holds for the spans received (fails after `timeout`).
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            assert!(Instant::now() < deadline, "the OTLP receiver did not get {what} within {timeout:?}; it has {} spans", spans.len());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
