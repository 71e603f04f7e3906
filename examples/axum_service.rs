//! A small axum service that links serphona-obs: an agent orchestrator's HTTP API.
//!
//! ```text
//! cargo run --example axum_service            # listens on 127.0.0.1:8080 (PORT to change)
//! curl -XPOST localhost:8080/conversations -d acme          # → conversation id
//! curl -XPOST localhost:8080/conversations/$ID/turns -H "x-conversation-id: $ID" -d "my bill is wrong"
//! curl -XPOST localhost:8080/conversations/$ID/end -H "x-conversation-id: $ID"
//! curl localhost:9464/metrics | grep http_request_duration_seconds
//! ```
//!
//! Every request gets a server span and is recorded in `http_request_duration_seconds` under
//! its route template; requests that carry `x-conversation-id` join the conversation's trace,
//! and the handlers find the conversation with `current_conversation()`. Spans go to the OTLP
//! endpoint of the config (`serphona-obs up` starts one), events to `.serphona-obs/`.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serphona_obs::middleware::http::HttpLayer;
use serphona_obs::types::*;
use serphona_obs::{Config, Observability};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (config, _warnings) = Config::load(None)?;
    let obs = Observability::init(config)?;
    let app = Router::new()
        .route("/conversations", post(start))
        .route("/conversations/{id}/turns", post(turn))
        .route("/conversations/{id}/end", post(end))
        .layer(HttpLayer::new(obs.clone()))
        .with_state(obs.clone());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(async { tokio::signal::ctrl_c().await.ok(); }).await?;
    obs.shutdown(Duration::from_secs(5))?;
    Ok(())
}

/// Starts a conversation for the tenant in the body; keeps it open in the library's registry.
async fn start(State(obs): State<Observability>, tenant: String) -> String {
    let conv = obs.start_conversation(ConversationStart::new(tenant.trim(), "billing-bot", "web-visitor", Channel::Chat));
    let id = conv.id().to_string();
    // Keep the handle alive until the end request: here, in a task that waits for it to end.
    tokio::spawn(async move {
        while !conv.is_ended() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    id
}

/// A customer turn and the agent's answer, with the LLM call in a span of the conversation.
async fn turn(State(obs): State<Observability>, Path(id): Path<String>, text: String) -> Result<String, StatusCode> {
    let conv = obs.current_conversation().filter(|c| c.id() == id).ok_or(StatusCode::NOT_FOUND)?;
    conv.track_interaction(Interaction::customer(text).sentiment(-0.2));
    let answer = conv
        .in_span_async("llm.generate", async {
            tokio::time::sleep(Duration::from_millis(30)).await; // the model
            "Let me check that charge for you.".to_string()
        })
        .await;
    conv.track_interaction(Interaction::agent(answer.clone()).duration_ms(1200.0));
    Ok(answer)
}

async fn end(State(obs): State<Observability>, Path(id): Path<String>) -> StatusCode {
    match obs.conversation(&id) {
        Some(conv) => {
            conv.end(ConversationEnd::new(Resolution::Resolved).rating(5));
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}
