//! A small tonic service that links serphona-obs, and a client calling it during a
//! conversation: one trace across both, and the call in `http_request_duration_seconds` under
//! its gRPC method.
//!
//! ```text
//! cargo run --example tonic_service
//! ```
//!
//! The service is written against tonic's server API by hand to keep the example free of a
//! build script; a real service uses the code tonic-build generates, with the same layer and
//! interceptor.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use serphona_obs::middleware::grpc::{GrpcLayer, PropagateInterceptor};
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::{Grpc, NamedService, UnaryService};

/// The request and the reply: a text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Utterance {
    #[prost(string, tag = "1")]
    pub text: String,
}

const CLASSIFY: &str = "/serphona.example.Intents/Classify";

/// An intent classifier: records its decision in the conversation the call belongs to.
#[derive(Clone)]
struct Intents {
    obs: Observability,
}

impl NamedService for Intents {
    const NAME: &'static str = "serphona.example.Intents";
}

struct Classify(Observability);

impl UnaryService<Utterance> for Classify {
    type Response = Utterance;
    type Future = BoxFuture<tonic::Response<Utterance>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<Utterance>) -> Self::Future {
        let obs = self.0.clone();
        Box::pin(async move {
            let intent = if request.get_ref().text.contains("bill") { "billing_dispute" } else { "other" };
            if let Some(conv) = obs.current_conversation() {
                conv.track_decision(Decision::new(DecisionType::IntentDetection, intent, "keyword model").confidence(0.9));
            }
            Ok(tonic::Response::new(Utterance { text: intent.into() }))
        })
    }
}

impl tower::Service<http::Request<Body>> for Intents {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let obs = self.obs.clone();
        Box::pin(async move {
            if req.uri().path() != CLASSIFY {
                return Ok(tonic::Status::unimplemented("no such method").into_http());
            }
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::<Utterance, Utterance>::default());
            Ok(grpc.unary(Classify(obs), req).await)
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (config, _warnings) = Config::load(None)?;
    let obs = Observability::init(config)?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .layer(GrpcLayer::new(obs.clone()))
        .add_service(Intents { obs: obs.clone() })
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(server);

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut client = tonic::client::Grpc::new(tonic::service::interceptor::InterceptedService::new(channel, PropagateInterceptor));

    let conv = obs.start_conversation(ConversationStart::new("acme", "voice-bot", "caller-7", Channel::Voice));
    conv.track_interaction(Interaction::customer("my bill is twice the usual").duration_ms(2100.0));
    let intent = conv
        .in_span_async("classify", async {
            client.ready().await?;
            let request = tonic::Request::new(Utterance { text: "my bill is twice the usual".into() });
            let path = http::uri::PathAndQuery::from_static(CLASSIFY);
            let reply = client.unary(request, path, tonic_prost::ProstCodec::<Utterance, Utterance>::default()).await?;
            Ok::<_, Box<dyn std::error::Error>>(reply.into_inner().text)
        })
        .await?;
    conv.track_interaction(Interaction::agent(format!("I see, a {intent} question. Let me look.")));
    println!("intent: {intent}; trace {}", conv.trace_id());
    conv.end(ConversationEnd::new(Resolution::Resolved).rating(4));
    obs.shutdown(Duration::from_secs(5))?;
    Ok(())
}
