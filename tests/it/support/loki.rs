//! An in-test receiver of Loki's push API (`POST /loki/api/v1/push`, JSON, optionally gzip):
//! it decodes every push and records its headers, streams and values, and can be told to
//! answer with an error status, to hang (accept and never answer), or to stop (the port then
//! refuses connections). No Loki runs here; this is the contract the sink is tested against.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 204 No Content, as Loki answers a push it took.
    Ok,
    /// This status with this body.
    Status(u16, String),
    /// Never answers (the connection stays open).
    Hang,
}

impl Reply {
    /// The status recorded for this reply (0 for a hang).
    pub fn status(&self) -> u16 {
        match self {
            Reply::Ok => 204,
            Reply::Status(status, _) => *status,
            Reply::Hang => 0,
        }
    }
}

/// One value of a stream: `[ts, line]` or `[ts, line, {structured metadata}]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub ts: String,
    pub line: String,
    pub metadata: Option<BTreeMap<String, String>>,
}

/// One stream of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub labels: BTreeMap<String, String>,
    pub values: Vec<Value>,
}

/// One push as received, with what it was answered.
#[derive(Debug, Clone)]
pub struct Push {
    /// Request headers, names lowercase.
    pub headers: BTreeMap<String, String>,
    pub streams: Vec<Stream>,
    /// The status answered (0: hung).
    pub answered: u16,
}

impl Push {
    /// Every value of the push, with its stream's labels.
    pub fn values(&self) -> impl Iterator<Item = (&BTreeMap<String, String>, &Value)> {
        self.streams.iter().flat_map(|s| s.values.iter().map(move |v| (&s.labels, v)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    pushes: Mutex<Vec<Push>>,
    /// Replies for the next pushes, in order; then `default`.
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    /// Bodies that did not decode (a test failure, reported by `pushes`).
    errors: Mutex<Vec<String>>,
}

impl State {
    fn next_reply(&self) -> Reply {
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone().unwrap_or(Reply::Ok))
    }
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<State>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// Starts on a free loopback port, answering 204 to every push.
    pub fn start() -> Receiver {
        let state = Arc::new(State::default());
        let served = state.clone();
        let app = axum::Router::new().route(
            "/loki/api/v1/push",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = served.clone();
                async move { handle(&state, &headers, &body).await }
            }),
        );
        let (runtime, addr) = super::serve(app, 2, "the Loki receiver");
        Receiver { addr, state, runtime: Some(runtime) }
    }

    /// `http://127.0.0.1:<port>`: what `logging.loki_endpoint` takes.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next pushes with these replies, in order (then the default).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Answers every push (after the script) with `reply`.
    pub fn answer(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    /// Every push received so far, whatever it was answered. Panics if a body did not decode.
    pub fn pushes(&self) -> Vec<Push> {
        let errors = self.state.errors.lock().unwrap();
        assert!(errors.is_empty(), "the Loki receiver got pushes it could not decode: {errors:?}");
        self.state.pushes.lock().unwrap().clone()
    }

    /// The pushes answered with a 2xx (what a Loki would have kept).
    pub fn accepted(&self) -> Vec<Push> {
        self.pushes().into_iter().filter(|p| (200..300).contains(&p.answered)).collect()
    }

    /// The lines of the accepted pushes, in arrival order.
    pub fn accepted_lines(&self) -> Vec<String> {
        self.accepted().iter().flat_map(|p| p.values().map(|(_, v)| v.line.clone()).collect::<Vec<_>>()).collect()
    }

    /// Waits until `done` holds for the accepted lines; panics with `what` after `timeout`.
    pub fn wait_for_lines(&self, timeout: Duration, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.accepted_lines();
            if done(&lines) {
                return lines;
            }
            assert!(Instant::now() < deadline, "the Loki receiver did not get {what} within {timeout:?} (has {} lines)", lines.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops serving: the port refuses connections from now on.
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(state: &State, headers: &axum::http::HeaderMap, body: &[u8]) -> (axum::http::StatusCode, String) {
    let headers: BTreeMap<String, String> =
        headers.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    let reply = state.next_reply();
    match decode(headers.get("content-encoding").map(String::as_str), body) {
        Ok(streams) => state.pushes.lock().unwrap().push(Push { headers, streams, answered: reply.status() }),
        Err(e) => {
            state.errors.lock().unwrap().push(e.clone());
            return (axum::http::StatusCode::BAD_REQUEST, e);
        }
    }
    match reply {
        Reply::Ok => (axum::http::StatusCode::NO_CONTENT, String::new()),
        Reply::Status(status, message) => (axum::http::StatusCode::from_u16(status).unwrap(), message),
        Reply::Hang => std::future::pending().await,
    }
}

/// Decodes a push body the way Loki does: gzip when the request says so, then the JSON
/// push format (`{"streams":[{"stream":{…},"values":[[ts, line(, {…})], …]}]}`).
fn decode(encoding: Option<&str>, body: &[u8]) -> Result<Vec<Stream>, String> {
    let json = match encoding {
        Some("gzip") => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).map_err(|e| format!("bad gzip: {e}"))?;
            out
        }
        None => body.to_vec(),
        Some(other) => return Err(format!("unexpected Content-Encoding {other:?}")),
    };
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|e| format!("bad JSON: {e}"))?;
    let strings = |v: &serde_json::Value, what: &str| -> Result<BTreeMap<String, String>, String> {
        v.as_object()
            .ok_or_else(|| format!("{what} is not an object: {v}"))?
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(|| format!("{what} {k} is not a string: {v}"))?.to_string())))
            .collect()
    };
    let mut streams = Vec::new();
    for stream in value["streams"].as_array().ok_or("no streams array")? {
        let labels = strings(&stream["stream"], "label")?;
        let mut values = Vec::new();
        for v in stream["values"].as_array().ok_or("no values array")? {
            let v = v.as_array().ok_or_else(|| format!("a value is not an array: {v}"))?;
            if !(2..=3).contains(&v.len()) {
                return Err(format!("a value has {} elements", v.len()));
            }
            let ts = v[0].as_str().ok_or_else(|| format!("ts is not a string: {}", v[0]))?;
            if ts.parse::<i64>().is_err() {
                return Err(format!("ts {ts:?} is not nanoseconds"));
            }
            values.push(Value {
                ts: ts.to_string(),
                line: v[1].as_str().ok_or_else(|| format!("line is not a string: {}", v[1]))?.to_string(),
                metadata: v.get(2).map(|m| strings(m, "structured metadata")).transpose()?,
            });
        }
        streams.push(Stream { labels, values });
    }
    Ok(streams)
}
