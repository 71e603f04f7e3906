//! An in-test stand-in for the few Grafana HTTP API endpoints `dashboards provision` uses (no
//! Grafana runs on the test machines): `GET /api/folders/{uid}`, `POST /api/folders`,
//! `GET /api/dashboards/uid/{uid}` and `POST /api/dashboards/db`, answered as Grafana 11 answers
//! them (the stored dashboard comes back with the `id` and `version` Grafana sets; 404s and
//! 401s carry `{"message"}`). Every request is recorded.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The token the stand-in accepts (`Authorization: Bearer …`).
pub const TOKEN: &str = "glsa_test_token";
/// The user and password it accepts (basic authentication).
pub const USER: &str = "admin";
/// The password of [`USER`].
pub const PASSWORD: &str = "s3cret";

/// One request, as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// GET, POST.
    pub method: String,
    /// The path.
    pub path: String,
    /// The JSON body, when there was one.
    pub body: Option<Value>,
}

#[derive(Default)]
struct Data {
    requests: Vec<Request>,
    /// uid → title.
    folders: BTreeMap<String, String>,
    /// uid → (dashboard as stored, folder uid).
    dashboards: BTreeMap<String, (Value, String)>,
    /// uids of dashboards that came from Grafana's provisioning files.
    provisioned: Vec<String>,
    next_id: i64,
}

type Shared = Arc<Mutex<Data>>;

/// The running stand-in; stopped on drop.
pub struct Grafana {
    addr: SocketAddr,
    data: Shared,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Grafana {
    /// Starts it on a free loopback port.
    pub fn start() -> Grafana {
        let data: Shared = Arc::default();
        let app = Router::new()
            .route("/api/folders/{uid}", axum::routing::get(get_folder))
            .route("/api/folders", axum::routing::post(create_folder))
            .route("/api/dashboards/uid/{uid}", axum::routing::get(get_dashboard))
            .route("/api/dashboards/db", axum::routing::post(save_dashboard))
            .fallback(|| async { (StatusCode::NOT_FOUND, r#"{"message":"Not found"}"#) })
            .layer(axum::middleware::from_fn_with_state(data.clone(), record_and_authenticate))
            .with_state(data.clone());
        let (runtime, addr) = super::serve(app, 1, "the Grafana stand-in");
        Grafana { addr, data, runtime: Some(runtime) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.data.lock().unwrap().requests.clone()
    }

    /// The folders: uid → title.
    pub fn folders(&self) -> BTreeMap<String, String> {
        self.data.lock().unwrap().folders.clone()
    }

    /// Marks a stored dashboard as one from Grafana's provisioning files (which Grafana does
    /// not let the API overwrite) and changes its title.
    pub fn provision_from_files(&self, uid: &str, title: &str) {
        let mut data = self.data.lock().unwrap();
        data.dashboards.get_mut(uid).expect("a stored dashboard").0["title"] = json!(title);
        data.provisioned.push(uid.to_string());
    }

    /// The stored dashboards: uid → (JSON with Grafana's id and version, folder uid).
    pub fn dashboards(&self) -> BTreeMap<String, (Value, String)> {
        self.data.lock().unwrap().dashboards.clone()
    }
}

impl Drop for Grafana {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// Records the request, then lets it through only with the token or the user and password.
async fn record_and_authenticate(State(data): State<Shared>, request: axum::extract::Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 24).await.unwrap_or_default();
    data.lock().unwrap().requests.push(Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        body: serde_json::from_slice(&bytes).ok(),
    });
    let auth = parts.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let basic = format!("Basic {}", base64(&format!("{USER}:{PASSWORD}")));
    if auth != format!("Bearer {TOKEN}") && auth != basic {
        let message = if auth.starts_with("Bearer ") { "invalid API key" } else { "Unauthorized" };
        return answer(StatusCode::UNAUTHORIZED, json!({"message": message}));
    }
    next.run(axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

async fn get_folder(State(data): State<Shared>, Path(uid): Path<String>) -> Response {
    let data = data.lock().unwrap();
    match data.folders.get(&uid) {
        Some(title) => answer(StatusCode::OK, json!({"id": 1, "uid": uid, "title": title, "url": format!("/dashboards/f/{uid}/")})),
        None => answer(StatusCode::NOT_FOUND, json!({"message": "folder not found", "status": "not-found"})),
    }
}

async fn create_folder(State(data): State<Shared>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let (Some(uid), Some(title)) = (body["uid"].as_str(), body["title"].as_str()) else {
        return answer(StatusCode::BAD_REQUEST, json!({"message": "bad request data"}));
    };
    let mut data = data.lock().unwrap();
    if data.folders.contains_key(uid) || data.folders.values().any(|t| t == title) {
        return answer(StatusCode::CONFLICT, json!({"message": "a folder with the same name already exists"}));
    }
    data.folders.insert(uid.to_string(), title.to_string());
    answer(StatusCode::OK, json!({"id": 1, "uid": uid, "title": title, "url": format!("/dashboards/f/{uid}/")}))
}

async fn get_dashboard(State(data): State<Shared>, Path(uid): Path<String>) -> Response {
    let data = data.lock().unwrap();
    match data.dashboards.get(&uid) {
        Some((dashboard, folder)) => answer(
            StatusCode::OK,
            json!({
                "dashboard": dashboard,
                "meta": {
                    "type": "db",
                    "slug": uid,
                    "url": format!("/d/{uid}/{uid}"),
                    "version": dashboard["version"],
                    "folderUid": folder,
                    "folderTitle": data.folders.get(folder).cloned().unwrap_or_default(),
                    "provisioned": data.provisioned.contains(&uid),
                },
            }),
        ),
        None => answer(StatusCode::NOT_FOUND, json!({"message": "Dashboard not found"})),
    }
}

async fn save_dashboard(State(data): State<Shared>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut dashboard = body["dashboard"].clone();
    let Some(uid) = dashboard["uid"].as_str().map(str::to_string) else {
        return answer(StatusCode::BAD_REQUEST, json!({"message": "dashboard uid missing"}));
    };
    let folder = body["folderUid"].as_str().unwrap_or("").to_string();
    let mut data = data.lock().unwrap();
    if data.provisioned.contains(&uid) {
        return answer(StatusCode::BAD_REQUEST, json!({"message": "Cannot save provisioned dashboard"}));
    }
    if !folder.is_empty() && !data.folders.contains_key(&folder) {
        return answer(StatusCode::BAD_REQUEST, json!({"message": "folder not found"}));
    }
    let existing = data.dashboards.get(&uid).map(|(d, _)| (d["id"].as_i64().unwrap_or(0), d["version"].as_i64().unwrap_or(0)));
    if existing.is_some() && body["overwrite"] != true {
        return answer(
            StatusCode::PRECONDITION_FAILED,
            json!({"message": "A dashboard with the same uid already exists", "status": "name-exists"}),
        );
    }
    let (id, version) = match existing {
        Some((id, version)) => (id, version + 1),
        None => {
            data.next_id += 1;
            (data.next_id, 1)
        }
    };
    dashboard["id"] = json!(id);
    dashboard["version"] = json!(version);
    data.dashboards.insert(uid.clone(), (dashboard, folder));
    answer(
        StatusCode::OK,
        json!({"id": id, "uid": uid, "url": format!("/d/{uid}/{uid}"), "status": "success", "version": version, "slug": uid}),
    )
}

/// Standard base64 (no crate for one header in a test).
fn base64(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
