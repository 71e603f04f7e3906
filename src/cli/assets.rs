//! The files the stack needs (`compose/`, `dashboards/`, `schemas/`), built into the binary so
//! `up` works from any folder after `cargo install`; `--assets-dir DIR` reads them from disk
//! instead (a checkout being edited).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use include_dir::{Dir, include_dir};

static COMPOSE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/compose");
static DASHBOARDS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/dashboards");
static SCHEMAS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/schemas");

/// The built-in folder a relative path starts with, and the rest of the path.
fn built_in(path: &str) -> Option<(&'static Dir<'static>, &str)> {
    let (top, rest) = path.split_once('/').unwrap_or((path, ""));
    let dir = match top {
        "compose" => &COMPOSE,
        "dashboards" => &DASHBOARDS,
        "schemas" => &SCHEMAS,
        _ => return None,
    };
    Some((dir, rest))
}

/// Where the assets come from.
#[derive(Debug, Clone)]
pub struct Assets {
    dir: Option<PathBuf>,
}

impl Assets {
    /// The built-in assets, or those under `dir` (which must hold `compose/`, `dashboards/`
    /// or `schemas/`).
    pub fn new(dir: Option<PathBuf>) -> anyhow::Result<Assets> {
        if let Some(d) = &dir {
            anyhow::ensure!(
                ["compose", "dashboards", "schemas"].iter().any(|sub| d.join(sub).is_dir()),
                "--assets-dir {}: no compose/, dashboards/ or schemas/ folder in it",
                d.display()
            );
        }
        Ok(Assets { dir })
    }

    /// Says where they come from, for messages.
    pub fn origin(&self) -> String {
        match &self.dir {
            Some(d) => d.display().to_string(),
            None => "built in".into(),
        }
    }

    /// One file, by its path relative to the assets root (`dashboards/quality.json`).
    pub fn read(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        match &self.dir {
            Some(d) => std::fs::read(d.join(path)).with_context(|| format!("cannot read {}", d.join(path).display())),
            None => built_in(path)
                .and_then(|(dir, rest)| dir.get_file(rest))
                .map(|f| f.contents().to_vec())
                .with_context(|| format!("{path} is not among the built-in assets")),
        }
    }

    /// One file as text.
    pub fn read_string(&self, path: &str) -> anyhow::Result<String> {
        String::from_utf8(self.read(path)?).with_context(|| format!("{path} is not UTF-8"))
    }

    /// The files under `folder` (recursively), as paths relative to the assets root, sorted.
    pub fn list(&self, folder: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        match &self.dir {
            Some(d) => walk(d, &d.join(folder), &mut out)?,
            None => {
                if let Some((dir, rest)) = built_in(folder) {
                    let top = folder.split('/').next().unwrap_or(folder);
                    let sub = if rest.is_empty() { Some(dir) } else { dir.get_dir(rest) };
                    if let Some(sub) = sub {
                        collect(sub, top, &mut out);
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Writes the files under `folder` below `to` (keeping their relative paths), for tools
    /// that need them on disk (docker compose mounts them). Returns `to/folder`.
    pub fn extract(&self, folder: &str, to: &Path) -> anyhow::Result<PathBuf> {
        for file in self.list(folder)? {
            let target = to.join(&file);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            }
            std::fs::write(&target, self.read(&file)?).with_context(|| format!("cannot write {}", target.display()))?;
        }
        Ok(to.join(folder))
    }
}

fn collect(dir: &Dir<'_>, top: &str, out: &mut Vec<String>) {
    for file in dir.files() {
        out.push(format!("{top}/{}", file.path().to_string_lossy().replace('\\', "/")));
    }
    for sub in dir.dirs() {
        collect(sub, top, out);
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            walk(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}
