//! The checks of a dashboard's JSON that need no server: unique panel ids, grid positions within
//! 24 columns and not overlapping, datasource uids of the provisioned set (with their types),
//! every referenced variable defined, every panel with queries.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::expand::{self, BUILT_INS};
use super::model::{self, DATASOURCES, DsRef, GRAFANA_DATASOURCES, MIXED, Panel};

/// Grafana's grid is 24 columns wide.
pub const COLUMNS: i64 = 24;

/// The oldest dashboard schema the dashboards may have (Grafana 11's).
pub const MIN_SCHEMA_VERSION: i64 = 39;

/// The tag every dashboard carries (their links find each other by it).
pub const TAG: &str = "serphona";

/// One thing wrong with a dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Index (in [`model::panels`]) of the panel it is about, if one.
    pub panel: Option<usize>,
    /// What is wrong, naming the panel, query or variable.
    pub message: String,
}

/// Every problem of one dashboard's JSON.
pub fn check(d: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut dash = |message: String| out.push(Problem { panel: None, message });
    if !d.is_object() {
        dash("the file is not a JSON object (a dashboard's JSON model)".into());
        return out;
    }
    let text = |k: &str| d.get(k).and_then(Value::as_str).filter(|s| !s.trim().is_empty());
    if text("uid").is_none() {
        dash("no uid: dashboards need a stable uid (provision and links find them by it)".into());
    }
    if text("title").is_none() {
        dash("no title".into());
    }
    match d.get("schemaVersion").and_then(Value::as_i64) {
        Some(v) if v >= MIN_SCHEMA_VERSION => {}
        Some(v) => dash(format!("schemaVersion {v} is older than {MIN_SCHEMA_VERSION} (Grafana 11)")),
        None => dash("no schemaVersion".into()),
    }
    let tagged = d.get("tags").and_then(Value::as_array).is_some_and(|t| t.iter().any(|t| t.as_str() == Some(TAG)));
    if !tagged {
        dash(format!("tags do not include {TAG:?} (the dashboards' links find each other by it)"));
    }
    if !d.get("panels").is_some_and(Value::is_array) {
        dash("no panels array".into());
    }

    let panels = model::panels(d);
    let variables = model::variables(d);
    let defined: BTreeSet<&str> = variables.iter().map(|v| v.name()).collect();

    // Variables: names, datasources, their own references (chained variables).
    let mut seen = BTreeSet::new();
    for v in &variables {
        let name = v.name();
        if name.is_empty() {
            out.push(Problem { panel: None, message: "a template variable has no name".into() });
            continue;
        }
        if !seen.insert(name) {
            out.push(Problem { panel: None, message: format!("template variable {name:?} is defined twice") });
        }
        if let Some(ds) = v.datasource() {
            if let Some(m) = datasource_problem(&ds, false) {
                out.push(Problem { panel: None, message: format!("variable ${name}: {m}") });
            }
        } else if v.kind() == "query" {
            out.push(Problem { panel: None, message: format!("variable ${name}: no datasource (Grafana would use its default one)") });
        }
        for text in [v.query(), v.json.get("regex").and_then(Value::as_str)].into_iter().flatten() {
            for m in undefined(text, &defined) {
                out.push(Problem { panel: None, message: format!("variable ${name}: {m}") });
            }
        }
    }

    // Annotations' datasources.
    for a in d.pointer("/annotations/list").and_then(Value::as_array).into_iter().flatten() {
        if let Some(m) = a.get("datasource").and_then(DsRef::read).and_then(|ds| datasource_problem(&ds, false)) {
            let name = a.get("name").and_then(Value::as_str).unwrap_or("?");
            out.push(Problem { panel: None, message: format!("annotation {name:?}: {m}") });
        }
    }

    // Panel ids.
    let mut by_id: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, p) in panels.iter().enumerate() {
        match p.id() {
            Some(id) => by_id.entry(id).or_default().push(i),
            None => out.push(Problem { panel: Some(i), message: format!("{} has no id", p.label()) }),
        }
    }
    for (id, users) in &by_id {
        if users.len() > 1 {
            let titles: Vec<String> = users.iter().map(|&i| format!("{:?}", panels[i].title())).collect();
            for &i in users {
                out.push(Problem {
                    panel: Some(i),
                    message: format!("duplicate panel id {id}: used by {} panels ({})", users.len(), titles.join(", ")),
                });
            }
        }
    }

    // Grid positions: inside the 24 columns, and no two panels of the same level overlapping
    // (the top level; the panels of each collapsed row among themselves).
    let mut grids: Vec<(usize, model::Grid)> = Vec::new();
    for (i, p) in panels.iter().enumerate() {
        let Some(g) = p.grid() else {
            out.push(Problem { panel: Some(i), message: format!("{} has no gridPos with integer x, y, w, h", p.label()) });
            continue;
        };
        if g.w < 1 || g.h < 1 || g.x < 0 || g.y < 0 {
            out.push(Problem { panel: Some(i), message: format!("{}: gridPos {g} has a negative position or an empty size", p.label()) });
        } else if g.x + g.w > COLUMNS {
            out.push(Problem {
                panel: Some(i),
                message: format!("{}: gridPos {g} goes past the grid's {COLUMNS} columns (x + w = {})", p.label(), g.x + g.w),
            });
        }
        grids.push((i, g));
    }
    for (a, (i, gi)) in grids.iter().enumerate() {
        for (j, gj) in &grids[a + 1..] {
            if panels[*i].in_row == panels[*j].in_row && gi.overlaps(gj) {
                out.push(Problem {
                    panel: Some(*j),
                    message: format!("{} ({gj}) overlaps {} ({gi})", panels[*j].label(), panels[*i].label()),
                });
            }
        }
    }

    // Datasources, queries and variable references of each panel.
    for (i, p) in panels.iter().enumerate() {
        for m in panel_problems(p, &defined) {
            out.push(Problem { panel: Some(i), message: format!("{}: {m}", p.label()) });
        }
    }
    out
}

fn panel_problems(p: &Panel<'_>, defined: &BTreeSet<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let panel_ds = p.datasource();
    if let Some(ds) = &panel_ds {
        if let Some(m) = datasource_problem(ds, true) {
            out.push(format!("datasource: {m}"));
        }
    }
    let targets = p.targets();
    if p.shows_queries() && targets.is_empty() {
        out.push("no queries (targets)".into());
    }
    let mixed = panel_ds.as_ref().and_then(DsRef::uid) == Some(MIXED);
    let mut refs = BTreeSet::new();
    for t in &targets {
        let r = t.ref_id();
        if !refs.insert(r) {
            out.push(format!("query refId {r} is used twice"));
        }
        match (t.datasource(), &panel_ds) {
            (Some(ds), _) => {
                if let Some(m) = datasource_problem(&ds, false) {
                    out.push(format!("query {r}: datasource: {m}"));
                }
            }
            (None, Some(_)) if mixed => out.push(format!("query {r}: no datasource in a mixed panel")),
            (None, Some(_)) => {}
            (None, None) => out.push(format!("query {r}: no datasource (Grafana would use its default one)")),
        }
        match t.query() {
            Some(q) if !q.trim().is_empty() => {
                for m in undefined(q, defined) {
                    out.push(format!("query {r}: {m}"));
                }
            }
            _ => out.push(format!("query {r} has no query text (expr or rawSql)")),
        }
        if let Some(legend) = t.json.get("legendFormat").and_then(Value::as_str) {
            for m in undefined(legend, defined) {
                out.push(format!("query {r} legend: {m}"));
            }
        }
    }
    for field in ["title", "description", "repeat"] {
        if let Some(text) = p.json.get(field).and_then(Value::as_str) {
            for m in undefined(text, defined) {
                out.push(format!("{field}: {m}"));
            }
        }
    }
    for link in model::links(p.json) {
        for field in ["url", "title"] {
            if let Some(text) = link.get(field).and_then(Value::as_str) {
                for m in undefined(text, defined) {
                    out.push(format!("link {field}: {m}"));
                }
            }
        }
        if let Some(uid) = link.pointer("/internal/datasourceUid").and_then(Value::as_str) {
            if !DATASOURCES.iter().any(|(u, _)| *u == uid) {
                out.push(format!("link to datasource uid {uid:?}: {}", not_provisioned()));
            }
        }
        if let Some(q) = link.pointer("/internal/query/query").and_then(Value::as_str) {
            for m in undefined(q, defined) {
                out.push(format!("link query: {m}"));
            }
        }
    }
    out
}

/// "uid X is not …" when a reference is not to a provisioned datasource (or names one with
/// another type).
fn datasource_problem(ds: &DsRef, panel_level: bool) -> Option<String> {
    match ds {
        DsRef::Name(name) => Some(format!(
            "given by name ({name:?}); refer to datasources by {{\"type\", \"uid\"}} with one of the provisioned uids ({})",
            uids()
        )),
        DsRef::Ref { uid: None, .. } => Some(format!("no uid; use one of the provisioned uids ({})", uids())),
        DsRef::Ref { uid: Some(uid), kind } => {
            if let Some((_, want)) = DATASOURCES.iter().find(|(u, _)| u == uid) {
                match kind {
                    Some(k) if k != want => Some(format!("uid {uid:?} is a {want} datasource, not {k:?}")),
                    _ => None,
                }
            } else if GRAFANA_DATASOURCES.contains(&uid.as_str()) {
                (uid == MIXED && !panel_level).then(|| "-- Mixed -- is for panels, not queries".to_string())
            } else {
                Some(format!("uid {uid:?} {}", not_provisioned()))
            }
        }
    }
}

fn uids() -> String {
    DATASOURCES.iter().map(|(u, _)| *u).collect::<Vec<_>>().join(", ")
}

fn not_provisioned() -> String {
    format!("is not a provisioned datasource (the stack provisions {})", uids())
}

/// "$x is not defined" for each reference to a variable that is neither a template variable
/// nor one of Grafana's built-ins (a misspelt built-in is named as such).
fn undefined(text: &str, defined: &BTreeSet<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in expand::references(text) {
        let name = r.name.as_str();
        let message = if name.starts_with("__") {
            if BUILT_INS.contains(&name) {
                continue;
            }
            format!("${name} is not a Grafana built-in variable or ClickHouse macro")
        } else if defined.contains(name) {
            continue;
        } else {
            let list = if defined.is_empty() { "none".to_string() } else { defined.iter().copied().collect::<Vec<_>>().join(", ") };
            format!("${name} is not a template variable of the dashboard (defined: {list})")
        };
        if !out.contains(&message) {
            out.push(message);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base(panels: Value) -> Value {
        json!({
            "uid": "u", "title": "T", "schemaVersion": 39, "tags": ["serphona"],
            "templating": {"list": [{"name": "tenant", "type": "query", "datasource": {"type": "prometheus", "uid": "serphona-prometheus"},
                                     "query": "label_values(x, tenant_id)"}]},
            "panels": panels
        })
    }

    fn prom(expr: &str) -> Value {
        json!({"refId": "A", "datasource": {"type": "prometheus", "uid": "serphona-prometheus"}, "expr": expr})
    }

    fn messages(d: &Value) -> Vec<String> {
        check(d).into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn a_sound_dashboard_has_no_problems() {
        let d = base(json!([
            {"id": 1, "type": "row", "title": "R", "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}, "panels": []},
            {"id": 2, "type": "stat", "title": "S", "gridPos": {"x": 0, "y": 1, "w": 12, "h": 5},
             "datasource": {"type": "prometheus", "uid": "serphona-prometheus"}, "targets": [prom(r#"sum(x{t=~"$tenant"}[$__rate_interval])"#)]},
            {"id": 3, "type": "stat", "title": "S2", "gridPos": {"x": 12, "y": 1, "w": 12, "h": 5},
             "targets": [prom("sum(y)")]}
        ]));
        assert_eq!(messages(&d), Vec::<String>::new());
    }

    #[test]
    fn each_problem_is_named() {
        let d = base(json!([
            {"id": 1, "type": "stat", "title": "A", "gridPos": {"x": 0, "y": 0, "w": 12, "h": 5}, "targets": [prom("a")]},
            {"id": 1, "type": "stat", "title": "B", "gridPos": {"x": 6, "y": 2, "w": 12, "h": 5}, "targets": [prom("b")]},
            {"id": 3, "type": "stat", "title": "C", "gridPos": {"x": 20, "y": 9, "w": 8, "h": 5},
             "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "nope"}, "expr": "c{a=~\"$agent\"}[$__rate_intervl]"}]},
            {"id": 4, "type": "timeseries", "title": "D", "gridPos": {"x": 0, "y": 20, "w": 6, "h": 5},
             "datasource": {"type": "loki", "uid": "serphona-prometheus"}, "targets": []}
        ]));
        let m = messages(&d).join("\n");
        for part in [
            "duplicate panel id 1: used by 2 panels (\"A\", \"B\")",
            "panel 1 \"B\" (x=6 y=2 w=12 h=5) overlaps panel 1 \"A\" (x=0 y=0 w=12 h=5)",
            "panel 3 \"C\": gridPos x=20 y=9 w=8 h=5 goes past the grid's 24 columns (x + w = 28)",
            "panel 3 \"C\": query A: datasource: uid \"nope\" is not a provisioned datasource",
            "panel 3 \"C\": query A: $agent is not a template variable of the dashboard (defined: tenant)",
            "panel 3 \"C\": query A: $__rate_intervl is not a Grafana built-in variable",
            "panel 4 \"D\": datasource: uid \"serphona-prometheus\" is a prometheus datasource, not \"loki\"",
            "panel 4 \"D\": no queries (targets)",
        ] {
            assert!(m.contains(part), "missing {part:?} in:\n{m}");
        }
    }

    #[test]
    fn dashboard_level_problems() {
        let d = json!({"title": "T", "schemaVersion": 30, "panels": [],
            "templating": {"list": [{"name": "a", "type": "query", "query": "label_values(x{y=\"$b\"}, a)"}]}});
        let m = messages(&d).join("\n");
        for part in [
            "no uid",
            "schemaVersion 30 is older than 39",
            "tags do not include \"serphona\"",
            "variable $a: no datasource",
            "variable $a: $b is not a template variable",
        ] {
            assert!(m.contains(part), "missing {part:?} in:\n{m}");
        }
    }
}
