//! `dashboards provision`: the folder "Serphona" and the dashboards, upserted through Grafana's
//! HTTP API (`/api/folders`, `/api/dashboards/uid/<uid>`, `/api/dashboards/db`). Idempotent: a
//! dashboard whose JSON in Grafana (without `id` and `version`) already equals the file's, in
//! the folder, is not written again.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use super::lint::{error_chain, join};
use super::model::json_eq;
use super::{DashboardFile, http_client};

/// The folder's uid and title.
pub const FOLDER_UID: &str = "serphona";
/// The folder's title.
pub const FOLDER_TITLE: &str = "Serphona";

/// How to authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer` (a service account token or API key).
    Token(String),
    /// Basic authentication.
    Basic { user: String, password: String },
    /// Nothing (a Grafana with anonymous admin access).
    None,
}

/// What provision did to one thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It did not exist.
    Created,
    /// It existed and differed.
    Updated,
    /// It existed as it is in the file.
    Unchanged,
}

/// One line of the result (`--output json` prints an array of these).
#[derive(Debug, Serialize)]
pub struct Outcome {
    /// folder or dashboard.
    pub kind: &'static str,
    /// Its uid.
    pub uid: String,
    /// Its title.
    pub title: String,
    /// created, updated or unchanged.
    pub action: Action,
    /// Where it is in Grafana.
    pub url: String,
    /// The dashboard's version in Grafana after the run (null for the folder).
    pub version: Option<i64>,
}

struct Grafana {
    http: reqwest::Client,
    base: url::Url,
    auth: Auth,
}

/// Upserts the folder and `files` (all valid: the caller checked them).
pub async fn run(base: url::Url, auth: Auth, files: &[DashboardFile]) -> anyhow::Result<Vec<Outcome>> {
    let g = Grafana { http: http_client(Duration::from_secs(30))?, base, auth };
    let mut out = vec![g.folder().await?];
    for file in files {
        let dashboard = file.json.as_ref().map_err(|e| anyhow::anyhow!("{}: not valid JSON: {e}", file.path))?;
        out.push(g.dashboard(dashboard).await.with_context(|| format!("provisioning {}", file.path))?);
    }
    Ok(out)
}

impl Grafana {
    async fn folder(&self) -> anyhow::Result<Outcome> {
        let path = format!("api/folders/{FOLDER_UID}");
        let (status, body) = self.call(reqwest::Method::GET, &path, None).await?;
        let action = match status {
            200 => Action::Unchanged,
            404 => {
                let (status, body) =
                    self.call(reqwest::Method::POST, "api/folders", Some(json!({"uid": FOLDER_UID, "title": FOLDER_TITLE}))).await?;
                if status != 200 {
                    anyhow::bail!(
                        "Grafana at {} did not create the folder {FOLDER_TITLE:?} (uid {FOLDER_UID}): HTTP {status}: {}",
                        self.base,
                        message(&body)
                    );
                }
                Action::Created
            }
            _ => anyhow::bail!("Grafana at {}: GET /{path} answered HTTP {status}: {}", self.base, message(&body)),
        };
        Ok(Outcome {
            kind: "folder",
            uid: FOLDER_UID.into(),
            title: FOLDER_TITLE.into(),
            action,
            url: join(&self.base, &format!("dashboards/f/{FOLDER_UID}/")).to_string(),
            version: None,
        })
    }

    async fn dashboard(&self, file: &Value) -> anyhow::Result<Outcome> {
        let uid = file["uid"].as_str().unwrap_or_default().to_string();
        let title = file["title"].as_str().unwrap_or_default().to_string();
        let path = format!("api/dashboards/uid/{uid}");
        let (status, body) = self.call(reqwest::Method::GET, &path, None).await?;
        let existing = match status {
            200 => Some(serde_json::from_str::<Value>(&body).with_context(|| format!("Grafana's answer to GET /{path} is not JSON"))?),
            404 => None,
            _ => anyhow::bail!("Grafana at {}: GET /{path} answered HTTP {status}: {}", self.base, message(&body)),
        };
        if let Some(existing) = &existing {
            let same_folder = match existing.pointer("/meta/folderUid").and_then(Value::as_str) {
                Some(f) => f == FOLDER_UID,
                None => true, // a Grafana that does not say (before 8.0)
            };
            if same_folder && json_eq(&comparable(&existing["dashboard"]), &comparable(file)) {
                let url = existing.pointer("/meta/url").and_then(Value::as_str).map(|u| join(&self.base, u).to_string());
                return Ok(Outcome {
                    kind: "dashboard",
                    uid,
                    title,
                    action: Action::Unchanged,
                    url: url.unwrap_or_else(|| join(&self.base, &format!("d/{}", file["uid"].as_str().unwrap_or(""))).to_string()),
                    version: existing.pointer("/dashboard/version").and_then(Value::as_i64),
                });
            }
        }
        if existing.as_ref().and_then(|e| e.pointer("/meta/provisioned")).and_then(Value::as_bool) == Some(true) {
            anyhow::bail!(
                "Grafana at {} has dashboard {uid:?} from its own provisioning files (the stack's Grafana mounts dashboards/), and \
                 it differs from this one; such dashboards cannot be saved through the API: update the files Grafana reads \
                 (it reloads them), or provision into a Grafana that does not mount them",
                self.base
            );
        }
        let mut dashboard = comparable(file);
        dashboard["id"] = Value::Null;
        let request = json!({
            "dashboard": dashboard,
            "folderUid": FOLDER_UID,
            "overwrite": true,
            "message": "serphona-obs dashboards provision",
        });
        let (status, body) = self.call(reqwest::Method::POST, "api/dashboards/db", Some(request)).await?;
        if status != 200 {
            anyhow::bail!(
                "Grafana at {} refused dashboard {uid:?}: POST /api/dashboards/db answered HTTP {status}: {}",
                self.base,
                message(&body)
            );
        }
        let answer: Value = serde_json::from_str(&body).unwrap_or_default();
        Ok(Outcome {
            kind: "dashboard",
            uid,
            title,
            action: if existing.is_some() { Action::Updated } else { Action::Created },
            url: answer["url"].as_str().map_or_else(
                || join(&self.base, &format!("d/{}", file["uid"].as_str().unwrap_or(""))).to_string(),
                |u| join(&self.base, u).to_string(),
            ),
            version: answer["version"].as_i64(),
        })
    }

    /// One API call; a connection failure, 401 or 403 is an error that says what to do.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, String)> {
        let url = join(&self.base, path);
        let mut request = self.http.request(method.clone(), url.clone()).header("Accept", "application/json");
        request = match &self.auth {
            Auth::Token(t) => request.bearer_auth(t),
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::None => request,
        };
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach Grafana at {}: {} (is it running? `serphona-obs up` starts one; else pass --grafana-url)",
                self.base,
                error_chain(&e)
            )
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.with_context(|| format!("reading Grafana's answer to {method} {url}"))?;
        if status == 401 || status == 403 {
            let given = match &self.auth {
                Auth::Token(_) => "the token given (--token or GRAFANA_TOKEN)".to_string(),
                Auth::Basic { user, .. } => format!("user {user:?} (--user/--password or GRAFANA_USER/GRAFANA_PASSWORD)"),
                Auth::None => "no credentials".to_string(),
            };
            anyhow::bail!(
                "Grafana at {} refused {method} /{path} with HTTP {status} ({}) for {given}. Pass --token TOKEN (a service account \
                 token with the Editor or Admin role; or GRAFANA_TOKEN), or --user USER --password PASSWORD (or GRAFANA_USER and \
                 GRAFANA_PASSWORD; `serphona-obs up` prints the admin password it generated)",
                self.base,
                message(&text)
            );
        }
        Ok((status, text))
    }
}

/// The dashboard without what Grafana sets itself (`id`, `version`).
fn comparable(d: &Value) -> Value {
    let mut d = d.clone();
    if let Some(o) = d.as_object_mut() {
        o.remove("id");
        o.remove("version");
    }
    d
}

/// Grafana's `{"message": …}`, else the body's first line.
fn message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().lines().next().unwrap_or("").chars().take(300).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grafanas_own_fields_do_not_count_as_changes() {
        let file = json!({"uid": "u", "title": "T", "panels": [{"id": 1, "gridPos": {"x": 0}}]});
        let stored = json!({"id": 42, "version": 7, "uid": "u", "title": "T", "panels": [{"id": 1.0, "gridPos": {"x": 0}}]});
        assert!(json_eq(&comparable(&stored), &comparable(&file)));
        let changed = json!({"id": 42, "version": 7, "uid": "u", "title": "T2", "panels": [{"id": 1, "gridPos": {"x": 0}}]});
        assert!(!json_eq(&comparable(&changed), &comparable(&file)));
    }

    #[test]
    fn messages_from_grafana() {
        assert_eq!(message(r#"{"message":"Unauthorized"}"#), "Unauthorized");
        assert_eq!(message("Bad gateway\nmore"), "Bad gateway");
    }
}
