//! The HTTP and gRPC middleware (issue 4): two services sharing one conversation and one trace,
//! route templates as the path label through the real Prometheus, 5xx in `error_rate`, and a
//! tonic service and client in one trace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serphona_obs::middleware::http::{HttpLayer, RequestBuilderExt};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

use crate::support::otlp::{Receiver, Received, Transport};
use crate::support::prometheus::Prometheus;

const WAIT: Duration = Duration::from_secs(30);

#[allow(clippy::field_reassign_with_default)] // the way the crate docs show it
fn service_config(name: &str, dir: &std::path::Path, receiver: Option<&Receiver>) -> Config {
    let mut config = Config::default();
    config.service_name = name.into();
    config.data_dir = dir.to_path_buf();
    config.metrics.listen = "127.0.0.1:0".parse().unwrap();
    match receiver {
        Some(r) => {
            config.tracing.endpoint = serphona_obs::config::Endpoint::parse(&r.endpoint()).unwrap();
            config.tracing.protocol = r.protocol();
        }
        None => config.tracing.enabled = false,
    }
    config
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// A `tracing` writer into a shared buffer (the request log lines, as JSON).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn request_lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "serphona_obs::request")
            .collect()
    }
}

#[test]
fn two_services_share_one_trace_and_the_conversation() {
    let receiver = Receiver::start(Transport::Grpc);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Observability::init(service_config("orchestrator", dir_a.path(), Some(&receiver))).unwrap();
    let b = Observability::init(service_config("knowledge", dir_b.path(), Some(&receiver))).unwrap();
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().json().with_writer(move || writer.clone()).with_max_level(tracing::Level::INFO).finish();
    // One thread runs both services and the client, so the scoped subscriber sees every line.
    let _default = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();

    let conv = a.start_conversation(ConversationStart::new("acme", "billing-bot", "cust-9", Channel::Chat));
    let (id, trace) = (conv.id().to_string(), conv.trace_id().to_string());
    rt.block_on(async {
        // B: a knowledge service that records a tool decision in the conversation it is called for.
        let obs_b = b.clone();
        let app_b = Router::new()
            .route(
                "/lookup/{topic}",
                post(move |Path(topic): Path<String>| {
                    let obs_b = obs_b.clone();
                    async move {
                        let conv = obs_b.current_conversation().expect("the request names a conversation");
                        assert!(conv.is_joined(), "B did not start it");
                        conv.track_decision(Decision::new(DecisionType::ToolCall, "kb.search", format!("look up {topic}")));
                        "article-17"
                    }
                }),
            )
            .layer(HttpLayer::new(b.clone()));
        let url_b = serve(app_b).await;

        // A: the orchestrator; each customer turn calls B during the conversation.
        let obs_a = a.clone();
        let client = reqwest::Client::new();
        let app_a = Router::new()
            .route(
                "/conversations/{id}/turns",
                post(move |Path(_id): Path<String>, text: String| {
                    let (obs_a, client, url_b) = (obs_a.clone(), client.clone(), url_b.clone());
                    async move {
                        let conv = obs_a.current_conversation().expect("the header names a local conversation");
                        conv.track_interaction(Interaction::customer(text));
                        let answer = conv
                            .in_span_async("kb.lookup", async {
                                let response = client.post(format!("{url_b}/lookup/billing")).propagate().send().await.unwrap();
                                assert!(response.status().is_success());
                                response.text().await.unwrap()
                            })
                            .await;
                        conv.track_interaction(Interaction::agent(format!("See {answer}")));
                        answer
                    }
                }),
            )
            .layer(HttpLayer::new(a.clone()));
        let url_a = serve(app_a).await;

        let client = reqwest::Client::new();
        for text in ["my bill is wrong", "it is twice the usual"] {
            let response = client
                .post(format!("{url_a}/conversations/{id}/turns"))
                .header("x-conversation-id", &id)
                .body(text)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "article-17");
        }
    });
    conv.end(ConversationEnd::new(Resolution::Resolved).rating(5));
    a.shutdown(WAIT).unwrap();
    b.shutdown(WAIT).unwrap();

    // 1 conversation + 4 turns, 2 A requests + 2 kb.lookup + 2 B requests + 2 B decisions.
    let spans = receiver.wait_for(WAIT, "13 spans", |s| s.len() >= 13);
    assert_eq!(spans.len(), 13, "{:#?}", spans.iter().map(|s| (s.name(), s.resource.get("service.name"))).collect::<Vec<_>>());
    for s in &spans {
        assert_eq!(s.trace_id(), trace, "{} of {:?} is in the conversation's trace", s.name(), s.resource.get("service.name"));
    }
    let of = |service: &str, name: &str| -> Vec<&Received> {
        spans.iter().filter(|s| s.resource.get("service.name").map(String::as_str) == Some(service) && s.name() == name).collect()
    };
    let root = &of("orchestrator", "conversation")[0];
    let a_requests = of("orchestrator", "POST /conversations/{id}/turns");
    let lookups = of("orchestrator", "kb.lookup");
    let b_requests = of("knowledge", "POST /lookup/{topic}");
    let decisions = of("knowledge", "execute_tool kb.search");
    assert_eq!((a_requests.len(), lookups.len(), b_requests.len(), decisions.len()), (2, 2, 2, 2));
    for r in &a_requests {
        assert_eq!(r.parent_span_id(), root.span_id(), "A's request joined the conversation under its span");
        assert_eq!(r.attr("gen_ai.conversation.id").as_deref(), Some(id.as_str()));
        assert_eq!(r.attr("http.response.status_code").as_deref(), Some("200"));
    }
    for l in &lookups {
        assert!(a_requests.iter().any(|r| r.span_id() == l.parent_span_id()), "kb.lookup runs inside A's request");
    }
    for r in &b_requests {
        assert!(lookups.iter().any(|l| l.span_id() == r.parent_span_id()), "B's request is a child of A's kb.lookup (traceparent)");
        assert_eq!(r.attr("conversation_id").as_deref(), Some(id.as_str()));
    }
    for d in &decisions {
        assert!(b_requests.iter().any(|r| r.span_id() == d.parent_span_id()), "B's decision is under B's request");
    }

    // B's events carry the conversation id, the tenant and agent from baggage, and the trace.
    let events_b = serphona_obs::store::local::LocalStore::open(dir_b.path()).read_all().unwrap();
    assert_eq!(events_b.len(), 2);
    for e in &events_b {
        assert_eq!(&*e.conversation_id, id);
        assert_eq!((&*e.tenant_id, &*e.agent_id, &*e.service), ("acme", "billing-bot", "knowledge"));
        assert_eq!(e.trace.trace_id.to_string(), trace);
        assert!(decisions.iter().any(|d| d.span_id() == e.trace.span_id.to_string()), "the event's span is the decision span");
    }
    // B's request log lines carry the same conversation and trace.
    let lines = logs.request_lines();
    let b_lines: Vec<_> = lines.iter().filter(|l| l["fields"]["service"] == "knowledge").collect();
    assert_eq!(b_lines.len(), 2, "{lines:#?}");
    for l in b_lines {
        assert_eq!(l["fields"]["conversation_id"], id.as_str());
        assert_eq!(l["fields"]["trace_id"], trace.as_str());
        assert_eq!(l["fields"]["path"], "/lookup/{topic}");
        assert_eq!(l["fields"]["status"], "200");
    }
}

#[test]
fn the_http_layer_labels_requests_by_route_template_and_counts_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let obs = Observability::init(service_config("api", dir.path(), None)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let base = rt.block_on(async {
        let app = Router::new()
            .route("/conversations/{id}", get(|Path(id): Path<String>| async move { format!("conversation {id}") }))
            .route("/boom", get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }))
            .route(
                "/llm",
                get(|| async {
                    let mut r = axum::response::IntoResponse::into_response((StatusCode::OK, "fallback answer"));
                    r.extensions_mut().insert(serphona_obs::middleware::ErrorType::new("llm_timeout"));
                    r
                }),
            )
            .layer(HttpLayer::new(obs.clone()));
        serve(app).await
    });
    let client = reqwest::blocking::Client::new();
    for path in ["/conversations/123", "/conversations/456", "/boom", "/llm", "/no/such/route"] {
        let _ = client.get(format!("{base}{path}")).send().unwrap();
    }
    let prom = Prometheus::start(&[obs.metrics_addr().unwrap()]);
    let count = |promql: &str| prom.value(promql);
    prom.wait_for("the requests", WAIT, |p| p.value("sum(http_request_duration_seconds_count)") == Some(5.0));
    let series = prom.series("http_request_duration_seconds_count");
    let paths: std::collections::BTreeSet<String> = series.iter().map(|s| s["path"].clone()).collect();
    assert_eq!(
        paths,
        ["/boom", "/conversations/{id}", "/llm", "<unmatched>"].into_iter().map(String::from).collect(),
        "raw paths never become labels"
    );
    assert_eq!(count(r#"http_request_duration_seconds_count{method="GET",path="/conversations/{id}",status="200"}"#), Some(2.0));
    assert_eq!(prom.query_vector(r#"http_request_duration_seconds_count{path="/conversations/{id}"}"#).len(), 1, "one series");
    assert_eq!(count(r#"http_request_duration_seconds_count{path="/boom",status="500"}"#), Some(1.0));
    assert_eq!(count(r#"http_request_duration_seconds_count{path="<unmatched>",status="404"}"#), Some(1.0));
    assert_eq!(count(r#"error_rate{service="api",error_type="http_5xx"}"#), Some(1.0));
    assert_eq!(count(r#"error_rate{service="api",error_type="llm_timeout"}"#), Some(1.0));
    assert_eq!(count(r#"sum(error_rate{service="api"})"#), Some(2.0), "the 404 and the 200s are not errors");
    drop(rt);
}

/// A tiny gRPC service written against tonic's server API (what tonic-build generates, by
/// hand): `/serphona.test.Echo/Say` answers, `/serphona.test.Echo/Fail` fails with INTERNAL.
mod echo {
    use std::convert::Infallible;
    use std::task::{Context, Poll};

    use tonic::body::Body;
    use tonic::codegen::BoxFuture;
    use tonic::server::{Grpc, NamedService, UnaryService};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Say {
        #[prost(string, tag = "1")]
        pub text: String,
    }

    pub const SAY: &str = "/serphona.test.Echo/Say";
    pub const FAIL: &str = "/serphona.test.Echo/Fail";

    #[derive(Clone)]
    pub struct Echo {
        pub obs: serphona_obs::Observability,
    }

    impl NamedService for Echo {
        const NAME: &'static str = "serphona.test.Echo";
    }

    struct Handler {
        obs: serphona_obs::Observability,
        fail: bool,
    }

    impl UnaryService<Say> for Handler {
        type Response = Say;
        type Future = BoxFuture<tonic::Response<Say>, tonic::Status>;
        fn call(&mut self, request: tonic::Request<Say>) -> Self::Future {
            let (obs, fail) = (self.obs.clone(), self.fail);
            Box::pin(async move {
                if fail {
                    return Err(tonic::Status::internal("model crashed"));
                }
                if let Some(conv) = obs.current_conversation() {
                    conv.track_decision(serphona_obs::types::Decision::new(
                        serphona_obs::types::DecisionType::Response,
                        "echo",
                        "asked to echo",
                    ));
                }
                Ok(tonic::Response::new(Say { text: format!("echo: {}", request.into_inner().text) }))
            })
        }
    }

    impl tower::Service<http::Request<Body>> for Echo {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Infallible>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<Body>) -> Self::Future {
            let obs = self.obs.clone();
            Box::pin(async move {
                let fail = match req.uri().path() {
                    SAY => false,
                    FAIL => true,
                    _ => return Ok(tonic::Status::unimplemented("no such method").into_http()),
                };
                let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Say, Say>::default());
                Ok(grpc.unary(Handler { obs, fail }, req).await)
            })
        }
    }
}

#[test]
fn a_tonic_call_is_one_trace_and_a_series_named_by_the_grpc_method() {
    use serphona_obs::middleware::grpc::{GrpcLayer, PropagateInterceptor};
    let receiver = Receiver::start(Transport::Grpc);
    let (dir_c, dir_s) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let client_obs = Observability::init(service_config("grpc-client", dir_c.path(), Some(&receiver))).unwrap();
    let server_obs = Observability::init(service_config("grpc-server", dir_s.path(), Some(&receiver))).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let conv = client_obs.start_conversation(ConversationStart::new("acme", "voice-bot", "cust-1", Channel::Voice));
    let (reply, failed) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = echo::Echo { obs: server_obs.clone() };
        let layer = GrpcLayer::new(server_obs.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap()
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let intercepted = tonic::service::interceptor::InterceptedService::new(channel, PropagateInterceptor);
        let mut client = tonic::client::Grpc::new(intercepted);
        conv.in_span_async("grpc.echo", async {
            client.ready().await.unwrap();
            let reply = client
                .unary(
                    tonic::Request::new(echo::Say { text: "hi".into() }),
                    http::uri::PathAndQuery::from_static(echo::SAY),
                    tonic_prost::ProstCodec::<echo::Say, echo::Say>::default(),
                )
                .await
                .unwrap()
                .into_inner();
            client.ready().await.unwrap();
            let failed = client
                .unary(
                    tonic::Request::new(echo::Say { text: "hi".into() }),
                    http::uri::PathAndQuery::from_static(echo::FAIL),
                    tonic_prost::ProstCodec::<echo::Say, echo::Say>::default(),
                )
                .await
                .unwrap_err();
            (reply, failed)
        })
        .await
    });
    assert_eq!(reply.text, "echo: hi");
    assert_eq!(failed.code(), tonic::Code::Internal);
    let trace = conv.trace_id().to_string();
    conv.end(ConversationEnd::new(Resolution::Resolved));
    // The request is recorded when its response body ends: give the server a moment.
    let m = server_obs.metrics().clone();
    let deadline = std::time::Instant::now() + WAIT;
    let count = |status: &str| m.http_request_duration.with_label_values(&["POST", echo::SAY, status]).get_sample_count();
    while count("0") + m.http_request_duration.with_label_values(&["POST", echo::FAIL, "13"]).get_sample_count() < 2 {
        assert!(std::time::Instant::now() < deadline, "the gRPC calls were not recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count("0"), 1, "status is the gRPC code from the trailers");
    assert_eq!(m.error_rate.with_label_values(&["grpc-server", "grpc_internal"]).get(), 1);
    client_obs.shutdown(WAIT).unwrap();
    server_obs.shutdown(WAIT).unwrap();
    drop(rt);

    let spans = receiver.wait_for(WAIT, "the client and server spans", |s| s.iter().filter(|s| s.name().starts_with("serphona.test.Echo/")).count() == 2);
    let helper = spans.iter().find(|s| s.name() == "grpc.echo").expect("the client's helper span");
    for name in ["serphona.test.Echo/Say", "serphona.test.Echo/Fail"] {
        let server = spans.iter().find(|s| s.name() == name).unwrap();
        assert_eq!(server.trace_id(), trace, "one trace across client and server");
        assert_eq!(server.parent_span_id(), helper.span_id());
        assert_eq!(server.resource.get("service.name").map(String::as_str), Some("grpc-server"));
        assert_eq!(server.attr("rpc.system").as_deref(), Some("grpc"));
    }
    let fail = spans.iter().find(|s| s.name() == "serphona.test.Echo/Fail").unwrap();
    assert_eq!(fail.attr("rpc.grpc.status_code").as_deref(), Some("13"));
    let decision = spans.iter().find(|s| s.name() == "decision.response").expect("the server's decision span");
    assert_eq!(decision.trace_id(), trace);
    for s in &spans {
        assert_eq!(s.trace_id(), trace, "{}", s.name());
    }
}
