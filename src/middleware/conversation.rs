//! Carrying a conversation between services: W3C `traceparent`/`tracestate`, the conversation
//! id in its header (`tracing.conversation_header`, default `x-conversation-id`), and the
//! conversation's tenant and agent as W3C baggage (`serphona.tenant_id`, `serphona.agent_id`).

use std::sync::Arc;

use http::HeaderMap;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};

use crate::trace::ConversationRef;

/// Baggage key of the tenant.
pub const TENANT_BAGGAGE: &str = "serphona.tenant_id";
/// Baggage key of the agent.
pub const AGENT_BAGGAGE: &str = "serphona.agent_id";
/// The longest conversation id taken from a header; longer values are ignored.
pub const MAX_ID_LEN: usize = 256;

/// The upstream context of a request: the remote parent span from `traceparent` (if any) and
/// the conversation it names (if any).
pub(crate) fn extract(headers: &impl Extractor, conversation_header: &Arc<str>) -> (Context, Option<ConversationRef>) {
    let cx = TraceContextPropagator::new().extract(headers);
    let cx = BaggagePropagator::new().extract_with_context(&cx, headers);
    let conversation = headers.get(conversation_header).and_then(valid_id).map(|id| {
        let baggage = cx.baggage();
        let value = |key: &'static str| -> Arc<str> {
            baggage.get(key).map_or_else(|| Arc::from(""), |v| Arc::from(clean(v.as_str())))
        };
        ConversationRef {
            conversation_id: Arc::from(id),
            tenant_id: value(TENANT_BAGGAGE),
            agent_id: value(AGENT_BAGGAGE),
            header: conversation_header.clone(),
        }
    });
    (cx, conversation)
}

/// A conversation id from a header: visible ASCII, 1 to [`MAX_ID_LEN`] bytes.
fn valid_id(v: &str) -> Option<&str> {
    let v = v.trim();
    (!v.is_empty() && v.len() <= MAX_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic())).then_some(v)
}

/// A tenant or agent from baggage, cut to a sane length and without control characters.
fn clean(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).take(MAX_ID_LEN).collect()
}

/// Writes `cx`'s span as `traceparent`/`tracestate` and, when `cx` belongs to a conversation,
/// its id header and its tenant and agent as baggage.
pub(crate) fn inject(cx: &Context, injector: &mut dyn Injector) {
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(cx, injector);
    }
    if let Some(conv) = cx.get::<ConversationRef>() {
        injector.set(&conv.header, conv.conversation_id.to_string());
        let mut entries = Vec::new();
        if !conv.tenant_id.is_empty() {
            entries.push(KeyValue::new(TENANT_BAGGAGE, conv.tenant_id.to_string()));
        }
        if !conv.agent_id.is_empty() {
            entries.push(KeyValue::new(AGENT_BAGGAGE, conv.agent_id.to_string()));
        }
        let with_baggage = cx.with_baggage(cx.baggage().iter().map(|(k, (v, _))| KeyValue::new(k.clone(), v.clone())).chain(entries));
        BaggagePropagator::new().inject_context(&with_baggage, injector);
    } else if !cx.baggage().is_empty() {
        BaggagePropagator::new().inject_context(cx, injector);
    }
}

/// Headers as an [`Injector`].
pub(crate) struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

/// Headers as an [`Extractor`].
pub(crate) struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Puts `cx` (span and conversation) into outgoing headers: what the client helpers do.
pub fn inject_headers(cx: &Context, headers: &mut HeaderMap) {
    inject(cx, &mut HeaderInjector(headers));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    fn header() -> Arc<str> {
        Arc::from("x-conversation-id")
    }

    fn conversation_cx() -> Context {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(sc).with_value(ConversationRef {
            conversation_id: Arc::from("conv-1"),
            tenant_id: Arc::from("acme, inc"),
            agent_id: Arc::from("billing-bot"),
            header: Arc::from("x-conversation-id"),
        })
    }

    #[test]
    fn a_conversation_round_trips_through_headers() {
        let mut headers = HeaderMap::new();
        inject_headers(&conversation_cx(), &mut headers);
        assert_eq!(headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(headers["x-conversation-id"], "conv-1");
        let (cx, conv) = extract(&HeaderExtractor(&headers), &header());
        let conv = conv.expect("the conversation header came through");
        assert_eq!(&*conv.conversation_id, "conv-1");
        assert_eq!(&*conv.tenant_id, "acme, inc", "baggage values are percent-encoded and back");
        assert_eq!(&*conv.agent_id, "billing-bot");
        assert_eq!(cx.span().span_context().span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        assert!(cx.span().span_context().is_remote());
    }

    #[test]
    fn hostile_conversation_ids_are_ignored() {
        for bad in ["", "   ", "a b", "x\u{7f}", &"x".repeat(MAX_ID_LEN + 1)] {
            let mut headers = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(bad) {
                headers.insert("x-conversation-id", v);
            }
            let (_, conv) = extract(&HeaderExtractor(&headers), &header());
            assert!(conv.is_none(), "{bad:?} was taken");
        }
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", http::HeaderValue::from_static("00-zz-yy-01"));
        let (cx, _) = extract(&HeaderExtractor(&headers), &header());
        assert!(!cx.span().span_context().is_valid(), "a malformed traceparent starts nothing");
    }
}
