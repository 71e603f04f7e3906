//! Loki's push body: the batch being filled, its streams by label values, each line with its
//! timestamp and structured metadata, JSON then gzip.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceId;
use serde::Serialize;

use super::LokiError;
use crate::pipeline::SharedEvent;
use crate::types::{EventType, Level};

/// Streams are keyed by their label values: service, level, event type (the environment is
/// the sink's own).
pub(super) type StreamKey = (Arc<str>, Level, EventType);

/// One line with its timestamp and structured metadata.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) ts: i64,
    pub(super) line: Arc<str>,
    pub(super) tenant_id: Arc<str>,
    pub(super) conversation_id: Arc<str>,
    pub(super) trace_id: TraceId,
}

impl Entry {
    /// The event's line (encoded once for every sink, shared), or the serialization error.
    pub(super) fn new(event: &SharedEvent) -> Result<Entry, serde_json::Error> {
        let line = match event.shared_line() {
            Some(line) => line.clone(),
            None => return Err(event.encode_error().unwrap_or_else(|| serde::ser::Error::custom("not encodable"))),
        };
        Ok(Entry {
            ts: timestamp_nanos(event.timestamp),
            line,
            tenant_id: event.tenant_id.clone(),
            conversation_id: event.conversation_id.clone(),
            trace_id: event.trace.trace_id,
        })
    }
}

/// Nanoseconds since the epoch, within what Loki parses (0 to 2262).
pub(super) fn timestamp_nanos(t: time::OffsetDateTime) -> i64 {
    t.unix_timestamp_nanos().clamp(0, i64::MAX as i128) as i64
}

/// The batch being filled.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) streams: BTreeMap<StreamKey, Vec<Entry>>,
    pub(super) lines: usize,
    pub(super) bytes: usize,
    pub(super) first_at: Option<Instant>,
}

impl Pending {
    pub(super) fn push(&mut self, key: StreamKey, entry: Entry, now: Instant) {
        self.first_at.get_or_insert(now);
        self.lines += 1;
        self.bytes += entry.line.len();
        self.streams.entry(key).or_default().push(entry);
    }

    pub(super) fn deadline(&self, wait: Duration) -> Option<Instant> {
        self.first_at.map(|t| t + wait)
    }

    /// The batch, each stream's entries sorted by timestamp (stable).
    pub(super) fn seal(&mut self) -> Option<Batch> {
        if self.lines == 0 {
            return None;
        }
        let lines = std::mem::take(&mut self.lines);
        self.bytes = 0;
        self.first_at = None;
        let mut streams: Vec<(StreamKey, Vec<Entry>)> = std::mem::take(&mut self.streams).into_iter().collect();
        for (_, entries) in &mut streams {
            entries.sort_by_key(|e| e.ts);
        }
        Some(Batch { streams, lines, attempts: 0, body: None, tickets: Vec::new() })
    }
}

/// A sealed batch waiting to be pushed.
pub(super) struct Batch {
    pub(super) streams: Vec<(StreamKey, Vec<Entry>)>,
    pub(super) lines: usize,
    pub(super) attempts: u32,
    /// The gzip body, and whether it carries structured metadata (built once, sent again on
    /// retries byte for byte).
    pub(super) body: Option<(bool, Vec<u8>)>,
    /// The watermark's tickets of the batch's events (and of events before them that could
    /// not be encoded), for the positions file.
    pub(super) tickets: crate::sinks::positions::Tickets,
}

impl Batch {
    pub(super) fn body(&mut self, environment: &str, metadata: bool) -> Vec<u8> {
        match &self.body {
            Some((m, body)) if *m == metadata => body.clone(),
            _ => {
                let body = gzip(&encode(&self.streams, environment, metadata));
                self.body = Some((metadata, body.clone()));
                body
            }
        }
    }
}

/// Loki's JSON push body.
pub(super) fn encode(streams: &[(StreamKey, Vec<Entry>)], environment: &str, metadata: bool) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        streams: Vec<Stream<'a>>,
    }
    #[derive(Serialize)]
    struct Stream<'a> {
        stream: Labels<'a>,
        values: Vec<Value<'a>>,
    }
    #[derive(Serialize)]
    struct Labels<'a> {
        service: &'a str,
        environment: &'a str,
        level: &'static str,
        event_type: &'static str,
    }
    #[derive(Serialize)]
    struct Meta<'a> {
        tenant_id: &'a str,
        conversation_id: &'a str,
        trace_id: String,
    }
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Value<'a> {
        Plain(String, &'a str),
        WithMetadata(String, &'a str, Meta<'a>),
    }
    let body = Body {
        streams: streams
            .iter()
            .map(|((service, level, event_type), entries)| Stream {
                stream: Labels { service, environment, level: level.as_str(), event_type: event_type.as_str() },
                values: entries
                    .iter()
                    .map(|e| {
                        if metadata {
                            let meta = Meta {
                                tenant_id: &e.tenant_id,
                                conversation_id: &e.conversation_id,
                                trace_id: e.trace_id.to_string(),
                            };
                            Value::WithMetadata(e.ts.to_string(), &e.line, meta)
                        } else {
                            Value::Plain(e.ts.to_string(), &e.line)
                        }
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_vec(&body).expect("a push body of strings serializes")
}

/// Gzip at level 1: the push thread spent most of its time in deflate at the default level 6,
/// and Loki's buffer overflowed under sustained load; level 1 deflates several times faster,
/// for a somewhat larger body (figures in BENCHMARKS.md, "Sinks").
pub(super) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Lines of a rejected push that Loki says it ignored (`total ignored: N out of M`, once per
/// stream or once per push depending on the version), when its message says.
pub(super) fn ignored_lines(message: &str) -> Option<usize> {
    static TOTAL: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"total ignored: (\d+) out of \d+").expect("valid regex"));
    let counts: Vec<usize> = TOTAL.captures_iter(message).filter_map(|c| c[1].parse().ok()).collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// A 400 that says the Loki does not take structured metadata.
pub(super) fn refuses_structured_metadata(error: &LokiError) -> bool {
    matches!(error, LokiError::Status { status: 400, message } if message.to_ascii_lowercase().contains("structured metadata"))
}

