//! `schema apply | status`: the ClickHouse migrations of `schemas/`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serphona_obs::analytics::schema::{self, Migration, MigrationStatus, Migrator, RenderOptions, State};
use tabled::{Table, Tabled, settings::Style};

use super::Context;
use super::output::Format;

/// `schema` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, in order, to the server of the `clickhouse:` config section.
    ///
    /// Idempotent: applied migrations are recorded (number, name, checksum, time) in
    /// DATABASE.schema_migrations and not run again. When an applied migration's file has
    /// changed since, that is drift: it is reported and nothing is applied (exit 1).
    Apply {
        /// Print the DDL that would run instead of running it (all of it when the server
        /// cannot be reached).
        #[arg(long)]
        dry_run: bool,
        /// Render ON CLUSTER DDL for this cluster: Replicated*MergeTree tables NAME_local and
        /// Distributed tables under the plain names (sharded by conversation).
        #[arg(long, value_name = "NAME", value_parser = cluster_name)]
        cluster: Option<String>,
        /// Migrations folder (default: the migrations built into this binary, = schemas/).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// table or json.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Format,
    },
    /// Every migration: applied, pending, drift (file changed since it was applied) or unknown
    /// (applied by another version). Exits 1 when any drifted.
    Status {
        /// Migrations folder (default: the built-in migrations).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// table or json.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Format,
    },
}

fn cluster_name(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(s.to_string())
    } else {
        Err("a cluster name is letters, digits and _".into())
    }
}

fn migrations(dir: Option<&PathBuf>) -> anyhow::Result<Vec<Migration>> {
    Ok(match dir {
        Some(dir) => schema::from_dir(dir)?,
        None => schema::built_in(),
    })
}

fn migrator(ctx: &Context, dir: Option<&PathBuf>, cluster: Option<String>) -> anyhow::Result<Migrator> {
    let ch = &ctx.config.clickhouse;
    let opts = RenderOptions { database: ch.database.clone(), retention_days: ch.retention_days, cluster };
    Ok(Migrator::new(serphona_obs::analytics::client(ch), opts, migrations(dir)?))
}

/// Runs a `schema` subcommand.
pub fn run(ctx: Context, command: Command) -> anyhow::Result<ExitCode> {
    // Shown in messages: credentials in the URL are masked.
    let endpoint = ctx.config.clickhouse.endpoint.to_string();
    let database = ctx.config.clickhouse.database.clone();
    let rt = super::runtime()?;
    let mut out = std::io::stdout().lock();
    match command {
        Command::Apply { dry_run: true, cluster, dir, output } => {
            let m = migrator(&ctx, dir.as_ref(), cluster)?;
            let (ddl, error) = rt.block_on(m.dry_run());
            if let Some(e) = &error {
                eprintln!("note: {e}; showing every migration");
            }
            match output {
                Format::Json => {
                    let items: Vec<_> = ddl.iter().map(|(f, s)| serde_json::json!({"file": f, "statements": s})).collect();
                    writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
                }
                Format::Table => {
                    if ddl.is_empty() {
                        writeln!(out, "-- nothing to apply: every migration is applied")?;
                    }
                    for (file, stmts) in &ddl {
                        writeln!(out, "-- {file}")?;
                        for s in stmts {
                            writeln!(out, "{s};\n")?;
                        }
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply { dry_run: false, cluster, dir, output } => {
            let m = migrator(&ctx, dir.as_ref(), cluster)?;
            let report = rt
                .block_on(m.apply())
                .map_err(|e| anyhow::anyhow!(e).context(format!("schema apply on {endpoint} (database {database})")))?;
            match output {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
                Format::Table => {
                    for f in &report.applied {
                        writeln!(out, "applied {f}")?;
                    }
                    writeln!(
                        out,
                        "{} migration(s) applied ({} statements), {} already applied, on {endpoint} database {database}",
                        report.applied.len(),
                        report.statements,
                        report.unchanged
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { dir, output } => {
            let m = migrator(&ctx, dir.as_ref(), None)?;
            let status = rt
                .block_on(m.status())
                .map_err(|e| anyhow::anyhow!(e).context(format!("schema status on {endpoint} (database {database})")))?;
            let drift = status.iter().any(|s| matches!(s.state, State::Drift { .. }));
            match output {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?,
                Format::Table => writeln!(out, "{}", status_table(&status))?,
            }
            drop(out);
            if drift {
                eprintln!(
                    "error: drift: applied migrations changed since they were applied; `schema apply` refuses to run until they are restored"
                );
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Tabled)]
struct Line {
    #[tabled(rename = "version")]
    version: u32,
    #[tabled(rename = "file")]
    file: String,
    #[tabled(rename = "state")]
    state: String,
    #[tabled(rename = "applied at")]
    applied_at: String,
    #[tabled(rename = "checksum")]
    checksum: String,
}

fn status_table(status: &[MigrationStatus]) -> String {
    let fmt = |t: &time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
    let lines: Vec<Line> = status
        .iter()
        .map(|s| {
            let checksum = schema::short(&s.checksum).to_string();
            let (state, at, checksum) = match &s.state {
                State::Applied { applied_at } => ("applied", fmt(applied_at), checksum),
                State::Pending => ("pending", "-".to_string(), checksum),
                State::Drift { applied_checksum, applied_at } => {
                    ("DRIFT", fmt(applied_at), format!("{checksum} (applied {})", schema::short(applied_checksum)))
                }
                State::Unknown { applied_at } => ("unknown", fmt(applied_at), checksum),
            };
            let state = state.to_string();
            Line { version: s.version, file: s.file.clone(), state, applied_at: at, checksum }
        })
        .collect();
    Table::new(lines).with(Style::sharp()).to_string()
}
