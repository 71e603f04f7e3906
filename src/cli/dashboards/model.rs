//! The parts of a Grafana dashboard's JSON model that `lint` and `provision` read: panels (and
//! the panels of collapsed rows), their queries, template variables and datasource references.

use serde_json::Value;

/// The datasources the stack provisions (compose/grafana/provisioning/datasources): uid → type.
/// Every datasource reference of the dashboards is one of these, by uid.
pub const DATASOURCES: [(&str, &str); 4] = [
    ("serphona-prometheus", "prometheus"),
    ("serphona-loki", "loki"),
    ("serphona-tempo", "tempo"),
    ("serphona-clickhouse", "grafana-clickhouse-datasource"),
];

/// Grafana's own pseudo datasources (built-in annotations, mixed panels, dashboard reuse,
/// expressions).
pub const GRAFANA_DATASOURCES: [&str; 5] = ["-- Grafana --", "grafana", "-- Mixed --", "-- Dashboard --", "__expr__"];

/// The mixed pseudo datasource: each query names its own.
pub const MIXED: &str = "-- Mixed --";

/// Panel types that show no query results.
const NO_QUERY_PANELS: [&str; 7] = ["row", "text", "dashlist", "news", "annolist", "alertlist", "welcome"];

/// What kind of datasource a query goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// PromQL.
    Prometheus,
    /// LogQL.
    Loki,
    /// TraceQL (not run by the lint).
    Tempo,
    /// SQL through the grafana-clickhouse-datasource plugin.
    #[serde(rename = "clickhouse")]
    ClickHouse,
}

impl Kind {
    /// The kind of one of [`DATASOURCES`], by uid.
    pub fn of_uid(uid: &str) -> Option<Kind> {
        match uid {
            "serphona-prometheus" => Some(Kind::Prometheus),
            "serphona-loki" => Some(Kind::Loki),
            "serphona-tempo" => Some(Kind::Tempo),
            "serphona-clickhouse" => Some(Kind::ClickHouse),
            _ => None,
        }
    }

    /// For messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prometheus => "prometheus",
            Kind::Loki => "loki",
            Kind::Tempo => "tempo",
            Kind::ClickHouse => "clickhouse",
        }
    }
}

/// A `datasource` field: `{"type": …, "uid": …}`, or a legacy name string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DsRef {
    /// `{"type", "uid"}` (either may be missing).
    Ref { uid: Option<String>, kind: Option<String> },
    /// A datasource given by name (Grafana before 8.3).
    Name(String),
}

impl DsRef {
    /// Reads a `datasource` field; `None` when absent or null.
    pub fn read(v: &Value) -> Option<DsRef> {
        match v {
            Value::Object(o) => Some(DsRef::Ref {
                uid: o.get("uid").and_then(Value::as_str).map(str::to_string),
                kind: o.get("type").and_then(Value::as_str).map(str::to_string),
            }),
            Value::String(s) => Some(DsRef::Name(s.clone())),
            _ => None,
        }
    }

    /// The uid, when given as a reference.
    pub fn uid(&self) -> Option<&str> {
        match self {
            DsRef::Ref { uid, .. } => uid.as_deref(),
            DsRef::Name(_) => None,
        }
    }
}

/// One panel, with where it is in the file.
#[derive(Debug, Clone, Copy)]
pub struct Panel<'a> {
    /// The panel's JSON.
    pub json: &'a Value,
    /// Index of the row panel whose `panels` hold it (a collapsed row), if any.
    pub in_row: Option<usize>,
}

/// A grid position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub x: i64,
    pub y: i64,
    pub w: i64,
    pub h: i64,
}

impl Grid {
    /// Whether two rectangles share any cell.
    pub fn overlaps(&self, o: &Grid) -> bool {
        self.x < o.x + o.w && o.x < self.x + self.w && self.y < o.y + o.h && o.y < self.y + self.h
    }
}

impl std::fmt::Display for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "x={} y={} w={} h={}", self.x, self.y, self.w, self.h)
    }
}

impl<'a> Panel<'a> {
    /// `id`, when it is an integer.
    pub fn id(&self) -> Option<i64> {
        self.json.get("id").and_then(Value::as_i64)
    }

    /// `title` ("" when absent).
    pub fn title(&self) -> &'a str {
        self.json.get("title").and_then(Value::as_str).unwrap_or("")
    }

    /// `type` ("" when absent).
    pub fn kind(&self) -> &'a str {
        self.json.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// Rows and text panels run no queries.
    pub fn shows_queries(&self) -> bool {
        !NO_QUERY_PANELS.contains(&self.kind())
    }

    /// `gridPos`, when it has the four integers.
    pub fn grid(&self) -> Option<Grid> {
        let g = self.json.get("gridPos")?;
        let n = |k: &str| g.get(k).and_then(Value::as_i64);
        Some(Grid { x: n("x")?, y: n("y")?, w: n("w")?, h: n("h")? })
    }

    /// The panel's own datasource.
    pub fn datasource(&self) -> Option<DsRef> {
        self.json.get("datasource").and_then(DsRef::read)
    }

    /// `targets` (empty when absent).
    pub fn targets(&self) -> Vec<Target<'a>> {
        self.json.get("targets").and_then(Value::as_array).map(|a| a.iter().map(|json| Target { json }).collect()).unwrap_or_default()
    }

    /// "panel 3 \"Title\"", for messages.
    pub fn label(&self) -> String {
        match self.id() {
            Some(id) => format!("panel {id} {:?}", self.title()),
            None => format!("panel {:?} (no id)", self.title()),
        }
    }
}

/// One query of a panel.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The target's JSON.
    pub json: &'a Value,
}

impl<'a> Target<'a> {
    /// `refId` ("?" when absent).
    pub fn ref_id(&self) -> &'a str {
        self.json.get("refId").and_then(Value::as_str).unwrap_or("?")
    }

    /// The target's own datasource.
    pub fn datasource(&self) -> Option<DsRef> {
        self.json.get("datasource").and_then(DsRef::read)
    }

    /// The query text: `expr` (PromQL, LogQL), `rawSql` (SQL) or `query` (TraceQL).
    pub fn query(&self) -> Option<&'a str> {
        ["expr", "rawSql", "query"].iter().find_map(|k| self.json.get(*k).and_then(Value::as_str))
    }

    /// Whether it is hidden (`hide: true`): Grafana does not run it.
    pub fn hidden(&self) -> bool {
        self.json.get("hide").and_then(Value::as_bool).unwrap_or(false)
    }

    /// Prometheus: an instant query (`instant: true` and not `range: true`).
    pub fn instant(&self) -> bool {
        let flag = |k: &str| self.json.get(k).and_then(Value::as_bool).unwrap_or(false);
        flag("instant") && !flag("range")
    }

    /// ClickHouse: the result is a time series (`format` 0; 1 is a table).
    pub fn time_series(&self) -> bool {
        match self.json.get("format") {
            Some(Value::Number(n)) => n.as_u64() == Some(0),
            Some(Value::String(s)) => s == "time_series" || s == "timeseries",
            _ => self.json.get("queryType").and_then(Value::as_str) == Some("timeseries"),
        }
    }
}

/// Every panel: the top-level ones, then the panels inside (collapsed) rows, each with the
/// index of its row.
pub fn panels(dashboard: &Value) -> Vec<Panel<'_>> {
    let mut out = Vec::new();
    let Some(top) = dashboard.get("panels").and_then(Value::as_array) else { return out };
    for (i, json) in top.iter().enumerate() {
        out.push(Panel { json, in_row: None });
        if let Some(inner) = json.get("panels").and_then(Value::as_array) {
            out.extend(inner.iter().map(|json| Panel { json, in_row: Some(i) }));
        }
    }
    out
}

/// One template variable.
#[derive(Debug, Clone)]
pub struct Variable<'a> {
    /// The variable's JSON.
    pub json: &'a Value,
}

impl<'a> Variable<'a> {
    /// `name` ("" when absent).
    pub fn name(&self) -> &'a str {
        self.json.get("name").and_then(Value::as_str).unwrap_or("")
    }

    /// `type` (query, custom, constant, datasource, interval, textbox, adhoc).
    pub fn kind(&self) -> &'a str {
        self.json.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// Whether it offers All.
    pub fn include_all(&self) -> bool {
        self.json.get("includeAll").and_then(Value::as_bool).unwrap_or(false)
    }

    /// The custom All value (`allValue`), when set.
    pub fn all_value(&self) -> Option<&'a str> {
        self.json.get("allValue").and_then(Value::as_str).filter(|s| !s.is_empty())
    }

    /// The first current value, when saved.
    pub fn current(&self) -> Option<String> {
        let v = self.json.get("current")?.get("value")?;
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_string),
            _ => None,
        }
    }

    /// The variable's query text (`definition`, or `query` as a string or `{query}`).
    pub fn query(&self) -> Option<&'a str> {
        let q = self.json.get("query");
        q.and_then(Value::as_str)
            .or_else(|| q.and_then(|q| q.get("query")).and_then(Value::as_str))
            .or_else(|| self.json.get("definition").and_then(Value::as_str))
            .filter(|s| !s.is_empty())
    }

    /// Its datasource.
    pub fn datasource(&self) -> Option<DsRef> {
        self.json.get("datasource").and_then(DsRef::read)
    }
}

/// `templating.list`.
pub fn variables(dashboard: &Value) -> Vec<Variable<'_>> {
    dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|json| Variable { json }).collect())
        .unwrap_or_default()
}

/// Every data link of a panel (`fieldConfig.defaults.links`, the links of overrides, and the
/// panel's own `links`).
pub fn links(panel: &Value) -> Vec<&Value> {
    let mut out: Vec<&Value> = Vec::new();
    if let Some(a) = panel.pointer("/fieldConfig/defaults/links").and_then(Value::as_array) {
        out.extend(a);
    }
    for o in panel.pointer("/fieldConfig/overrides").and_then(Value::as_array).into_iter().flatten() {
        for p in o.get("properties").and_then(Value::as_array).into_iter().flatten() {
            if p.get("id").and_then(Value::as_str) == Some("links") {
                out.extend(p.get("value").and_then(Value::as_array).into_iter().flatten());
            }
        }
    }
    if let Some(a) = panel.get("links").and_then(Value::as_array) {
        out.extend(a);
    }
    out
}

/// Whether two JSON values are equal, numbers compared by value (`1` equals `1.0`): how
/// `provision` decides a dashboard in Grafana is already the one in the file.
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w))),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn panels_include_those_of_collapsed_rows() {
        let d = json!({"panels": [
            {"id": 1, "type": "row", "collapsed": true, "panels": [{"id": 2, "type": "stat"}]},
            {"id": 3, "type": "timeseries"}
        ]});
        let p = panels(&d);
        assert_eq!(p.iter().map(|p| (p.id(), p.in_row)).collect::<Vec<_>>(), [(Some(1), None), (Some(2), Some(0)), (Some(3), None)]);
        assert!(!p[0].shows_queries() && p[1].shows_queries());
    }

    #[test]
    fn grid_overlap() {
        let a = Grid { x: 0, y: 0, w: 12, h: 8 };
        assert!(a.overlaps(&Grid { x: 11, y: 7, w: 2, h: 2 }));
        assert!(!a.overlaps(&Grid { x: 12, y: 0, w: 12, h: 8 }));
        assert!(!a.overlaps(&Grid { x: 0, y: 8, w: 24, h: 1 }));
    }

    #[test]
    fn json_eq_compares_numbers_by_value() {
        assert!(json_eq(&json!({"a": [1, 2.5, null]}), &json!({"a": [1.0, 2.5, null]})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_eq(&json!([1, 2]), &json!([2, 1])));
    }
}
