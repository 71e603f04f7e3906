//! What Grafana does to a query before its datasource runs it, redone for the lint: template
//! variables (`$tenant`, `${tenant:singlequote}`, `[[tenant]]`), Grafana's global variables
//! (`$__rate_interval`, `$__range`, `$__from`, …) and the ClickHouse plugin's macros
//! (`$__conditionalAll(…)` in its frontend, then `$__timeFilter(col)`, `$__timeInterval(col)`, …
//! in its backend), expanded as plugin 4.x expands them.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use time::OffsetDateTime;

/// Grafana's variable syntax (`variableRegex` of Grafana's template service): `$name`,
/// `[[name]]`, `[[name:format]]`, `${name}`, `${name.field}`, `${name:format}`.
static VARIABLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}").expect("valid regex"));

/// Names Grafana, its datasources or the ClickHouse plugin give a meaning to: global
/// variables, data-link variables and SQL macros.
pub const BUILT_INS: [&str; 35] = [
    "__interval",
    "__interval_ms",
    "__rate_interval",
    "__rate_interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
    "__auto",
    "__dashboard",
    "__user",
    "__org",
    "__name",
    "__timezone",
    "__url_time_range",
    "__all_variables",
    "__value",
    "__data",
    "__field",
    "__series",
    "__cell",
    "__timeFilter",
    "__timeFilter_ms",
    "__dateFilter",
    "__dateTimeFilter",
    "__dt",
    "__fromTime",
    "__toTime",
    "__fromTime_ms",
    "__toTime_ms",
    "__timeInterval",
    "__timeInterval_ms",
    "__interval_s",
    "__conditionalAll",
];

/// A variable reference found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Byte range of the whole reference.
    pub range: std::ops::Range<usize>,
    /// The variable's name.
    pub name: String,
    /// `:format`, when given.
    pub format: Option<String>,
}

/// Every variable reference in `text`, in order.
pub fn references(text: &str) -> Vec<Reference> {
    VARIABLE
        .captures_iter(text)
        .map(|c| {
            let whole = c.get(0).expect("group 0");
            let name = [1, 2, 4].iter().find_map(|&i| c.get(i)).map_or("", |m| m.as_str()).to_string();
            let format = c.get(3).or_else(|| c.get(6)).map(|m| m.as_str().to_string());
            Reference { range: whole.range(), name, format }
        })
        .collect()
}

/// What a template variable stands for in a lint run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// All is selected: with a custom all value Grafana puts that value in as is, whatever the
    /// format (`allValue: ".*"` gives `.*`); without one it lists every option, which the lint
    /// stands in for with `.*`.
    All { custom: Option<String> },
    /// One selected value.
    One(String),
}

/// The time window and intervals of a lint run.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Start of the time range.
    pub from: OffsetDateTime,
    /// End of the time range.
    pub to: OffsetDateTime,
    /// `$__interval`: the step between points.
    pub interval: Duration,
    /// `$__rate_interval`.
    pub rate_interval: Duration,
}

impl Window {
    /// A window of `range` ending at `to`, about 200 points wide (at least 1 s per point).
    pub fn ending(to: OffsetDateTime, range: Duration, rate_interval: Duration) -> Window {
        let step = (range.as_secs() / 200).max(1);
        Window { from: to - range, to, interval: Duration::from_secs(step), rate_interval }
    }

    fn range(&self) -> Duration {
        Duration::try_from(self.to - self.from).unwrap_or(Duration::ZERO)
    }
}

/// A duration as Grafana writes intervals: `15s`, `2m`, `1h`, `1500ms`.
pub fn grafana_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        let s = ms / 1000;
        if s != 0 && s.is_multiple_of(3600) {
            format!("{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    }
}

/// Replaces template variables and Grafana's global variables as Grafana's template service
/// does before a query goes to its datasource. Names it does not know stay as they are (the
/// datasource's own macros, such as `$__timeFilter`, are among them).
pub fn interpolate(text: &str, vars: &HashMap<String, Value>, window: &Window) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for r in references(text) {
        let replacement = match vars.get(&r.name) {
            Some(Value::All { custom: Some(v) }) => Some(v.clone()),
            Some(Value::All { custom: None }) => Some(format_value(".*", r.format.as_deref(), true)),
            Some(Value::One(v)) => Some(format_value(v, r.format.as_deref(), false)),
            None => global(&r.name, r.format.as_deref(), window),
        };
        if let Some(rep) = replacement {
            out.push_str(&text[last..r.range.start]);
            out.push_str(&rep);
            last = r.range.end;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// A selected value in one of Grafana's formats (the common ones; others give the raw value).
fn format_value(v: &str, format: Option<&str>, regex_already: bool) -> String {
    match format {
        Some("singlequote") => format!("'{}'", v.replace('\'', "\\'")),
        Some("doublequote") => format!("\"{}\"", v.replace('"', "\\\"")),
        Some("sqlstring") => format!("'{}'", v.replace('\'', "''")),
        Some("json") => serde_json::to_string(&[v]).unwrap_or_default(),
        Some("regex") if !regex_already => regex::escape(v),
        Some("percentencode") => url::form_urlencoded::byte_serialize(v.as_bytes()).collect(),
        _ => v.to_string(),
    }
}

/// Grafana's global variables that depend on the time range.
fn global(name: &str, format: Option<&str>, w: &Window) -> Option<String> {
    let ms = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000).to_string();
    let secs = |t: OffsetDateTime| t.unix_timestamp().to_string();
    let range = w.range();
    Some(match name {
        "__interval" => grafana_duration(w.interval),
        "__interval_ms" => w.interval.as_millis().to_string(),
        "__rate_interval" => grafana_duration(w.rate_interval),
        "__rate_interval_ms" => w.rate_interval.as_millis().to_string(),
        "__range" => format!("{}s", range.as_secs()),
        "__range_s" => range.as_secs().to_string(),
        "__range_ms" => range.as_millis().to_string(),
        "__from" | "__to" => {
            let t = if name == "__from" { w.from } else { w.to };
            match format {
                Some("date:seconds") => secs(t),
                Some("date") | Some("date:iso") => t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                _ => ms(t),
            }
        }
        _ => return None,
    })
}

/// The ClickHouse plugin's frontend macro: `$__conditionalAll(condition, $var)` becomes `1=1`
/// when the variable has All (or nothing) selected, else the condition. Done before the
/// variables are interpolated, as the plugin does, so the All value never reaches the SQL.
pub fn conditional_all(sql: &str, vars: &HashMap<String, Value>) -> String {
    const MACRO: &str = "$__conditionalAll(";
    let mut sql = sql.to_string();
    while let Some(start) = sql.rfind(MACRO) {
        let open = start + MACRO.len() - 1;
        let Some((args, end)) = macro_args(&sql, open) else { return sql };
        if args.len() != 2 {
            return sql;
        }
        let var = args[1].trim();
        let name = var.trim_start_matches('$').trim_start_matches('{').trim_end_matches('}');
        let name = name.split(':').next().unwrap_or(name);
        let all = matches!(vars.get(name), Some(Value::All { .. })) || matches!(vars.get(name), Some(Value::One(v)) if v.is_empty());
        let phrase = if all { "1=1".to_string() } else { args[0].to_string() };
        sql.replace_range(start..end, &phrase);
    }
    sql
}

/// The arguments of a macro call whose `(` is at `open`, split at the top-level commas (as
/// written, not trimmed), and the index just past its `)`.
fn macro_args(text: &str, open: usize) -> Option<(Vec<&str>, usize)> {
    let mut depth = 0usize;
    let mut args = Vec::new();
    let mut arg_start = open + 1;
    for (i, c) in text[open..].char_indices() {
        let i = open + i;
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    args.push(&text[arg_start..i]);
                    return Some((args, i + 1));
                }
            }
            ',' if depth == 1 => {
                args.push(&text[arg_start..i]);
                arg_start = i + 1;
            }
            _ => {}
        }
    }
    None
}

/// The ClickHouse plugin's backend macros (plugin 4.x, `pkg/macros`), expanded for `window`.
/// An unknown `$__name` is an error, as it is in the plugin.
pub fn clickhouse_macros(sql: &str, w: &Window) -> Result<String, String> {
    static MACRO: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\$__(\w+)").expect("valid regex"));
    let datetime = |t: OffsetDateTime| format!("toDateTime({})", t.unix_timestamp());
    let datetime64 = |t: OffsetDateTime| format!("fromUnixTimestamp64Milli({})", t.unix_timestamp_nanos() / 1_000_000);
    let date = |t: OffsetDateTime| format!("toDate('{}')", t.date());
    let interval_s = w.interval.as_secs().max(1);
    let interval_ms = w.interval.as_millis().max(1);
    let mut sql = sql.to_string();
    // From the last one back, so a macro inside another's arguments is expanded first.
    while let Some(m) = MACRO.find_iter(&sql).last() {
        let name = &sql[m.start() + 3..m.end()];
        let (args, end) = if sql[m.end()..].starts_with('(') {
            let (args, end) = macro_args(&sql, m.end()).ok_or_else(|| format!("$__{name}(: no closing parenthesis"))?;
            (args.into_iter().map(str::trim).map(str::to_string).collect::<Vec<_>>(), end)
        } else {
            (Vec::new(), m.end())
        };
        let want = |n: usize| -> Result<(), String> {
            if args.len() == n && args.iter().all(|a| !a.is_empty()) {
                Ok(())
            } else {
                Err(format!("$__{name} takes {n} argument(s), got {}", if args == [""] { 0 } else { args.len() }))
            }
        };
        let expansion = match name {
            "fromTime" => datetime(w.from),
            "toTime" => datetime(w.to),
            "fromTime_ms" => datetime64(w.from),
            "toTime_ms" => datetime64(w.to),
            "timeFilter" => {
                want(1)?;
                format!("{c} >= {} AND {c} <= {}", datetime(w.from), datetime(w.to), c = args[0])
            }
            "timeFilter_ms" => {
                want(1)?;
                format!("{c} >= {} AND {c} <= {}", datetime64(w.from), datetime64(w.to), c = args[0])
            }
            "dateFilter" => {
                want(1)?;
                format!("{c} >= {} AND {c} <= {}", date(w.from), date(w.to), c = args[0])
            }
            "dateTimeFilter" | "dt" => {
                want(2)?;
                format!(
                    "({d} >= {} AND {d} <= {}) AND ({t} >= {} AND {t} <= {})",
                    date(w.from),
                    date(w.to),
                    datetime(w.from),
                    datetime(w.to),
                    d = args[0],
                    t = args[1]
                )
            }
            "timeInterval" => {
                want(1)?;
                format!("toStartOfInterval(toDateTime({}), INTERVAL {interval_s} second)", args[0])
            }
            "timeInterval_ms" => {
                want(1)?;
                format!("toStartOfInterval(toDateTime64({}, 3), INTERVAL {interval_ms} millisecond)", args[0])
            }
            "interval_s" => interval_s.to_string(),
            "conditionalAll" => return Err("$__conditionalAll(…) needs two arguments: a condition and $variable".into()),
            other => return Err(format!("unknown macro $__{other}")),
        };
        sql.replace_range(m.start()..end, &expansion);
    }
    Ok(sql)
}

/// A ClickHouse panel query as the plugin would send it: `$__conditionalAll`, then the
/// variables, then the backend macros.
pub fn clickhouse(sql: &str, vars: &HashMap<String, Value>, w: &Window) -> Result<String, String> {
    let sql = conditional_all(sql, vars);
    let sql = interpolate(&sql, vars, w);
    clickhouse_macros(&sql, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        let to = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        Window::ending(to, Duration::from_secs(3600), Duration::from_secs(60))
    }

    fn all() -> HashMap<String, Value> {
        HashMap::from([
            ("tenant".to_string(), Value::All { custom: Some(".*".into()) }),
            ("agent".to_string(), Value::One("billing-bot".into())),
        ])
    }

    #[test]
    fn finds_every_syntax() {
        let refs = references(r#"a{t=~"$tenant"} ${agent:singlequote} [[channel]] [[x:regex]] ${__value.raw} $__timeFilter(ts) ^x$"#);
        let got: Vec<(&str, Option<&str>)> = refs.iter().map(|r| (r.name.as_str(), r.format.as_deref())).collect();
        assert_eq!(
            got,
            [
                ("tenant", None),
                ("agent", Some("singlequote")),
                ("channel", None),
                ("x", Some("regex")),
                ("__value", None),
                ("__timeFilter", None)
            ]
        );
    }

    #[test]
    fn interpolates_variables_and_globals() {
        let w = window();
        let q = r#"sum(rate(x{tenant_id=~"$tenant",agent_id=~"${agent:regex}"}[$__rate_interval])) / $__range_s + increase(y[$__range]) $__interval"#;
        assert_eq!(
            interpolate(q, &all(), &w),
            r#"sum(rate(x{tenant_id=~".*",agent_id=~"billing\-bot"}[1m])) / 3600 + increase(y[3600s]) 18s"#
        );
        // A custom All value goes in as is, whatever the format (as Grafana does).
        assert_eq!(interpolate("${tenant:singlequote} ${agent:singlequote}", &all(), &w), ".* 'billing-bot'");
        assert_eq!(interpolate("$unknown ${__from:date:seconds}", &all(), &w), "$unknown 1799996400");
    }

    #[test]
    fn conditional_all_as_the_plugin_does_it() {
        let sql = "WHERE $__conditionalAll(tenant_id IN (${tenant:singlequote}), $tenant) AND $__conditionalAll(agent_id IN (${agent:singlequote}), $agent)";
        assert_eq!(conditional_all(sql, &all()), "WHERE 1=1 AND agent_id IN (${agent:singlequote})");
        let w = window();
        assert_eq!(clickhouse(sql, &all(), &w).unwrap(), "WHERE 1=1 AND agent_id IN ('billing-bot')");
    }

    #[test]
    fn clickhouse_macros_as_plugin_4() {
        let w = window();
        let sql = "SELECT $__timeInterval(ts) AS time, $__interval_s FROM t WHERE $__timeFilter(ts) AND d >= toStartOfHour($__fromTime) AND $__timeFilter_ms(x)";
        assert_eq!(
            clickhouse_macros(sql, &w).unwrap(),
            "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 18 second) AS time, 18 FROM t \
             WHERE ts >= toDateTime(1799996400) AND ts <= toDateTime(1800000000) AND d >= toStartOfHour(toDateTime(1799996400)) \
             AND x >= fromUnixTimestamp64Milli(1799996400000) AND x <= fromUnixTimestamp64Milli(1800000000000)"
        );
        assert_eq!(
            clickhouse_macros("$__timeFilter(toDate(x))", &w).unwrap(),
            "toDate(x) >= toDateTime(1799996400) AND toDate(x) <= toDateTime(1800000000)"
        );
        assert_eq!(clickhouse_macros("WHERE $__timeFiltr(ts)", &w).unwrap_err(), "unknown macro $__timeFiltr");
        assert!(clickhouse_macros("WHERE $__timeFilter()", &w).unwrap_err().contains("takes 1 argument"));
        assert!(clickhouse_macros("WHERE $__timeFilter(ts", &w).unwrap_err().contains("no closing parenthesis"));
    }

    #[test]
    fn durations_as_grafana_writes_them() {
        assert_eq!(grafana_duration(Duration::from_secs(60)), "1m");
        assert_eq!(grafana_duration(Duration::from_secs(90)), "90s");
        assert_eq!(grafana_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(grafana_duration(Duration::from_millis(1500)), "1500ms");
    }
}
