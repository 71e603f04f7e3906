//! YAML files read into typed shapes, with errors that name the file, the field and the line:
//! the config, the price table and the scenario files all read through [`from_str`].

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A YAML file that does not parse into its shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: field `{field}`: {message}", origin.display(), location(*line, *column))]
pub struct YamlError {
    /// The file.
    pub origin: PathBuf,
    /// Dotted path of the field, e.g. `tracing.endpoint` or `incidents[0].effect`.
    pub field: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// `:L:C`, `:L` or nothing.
pub(crate) fn location(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

/// Parses YAML text into `T`; `origin` names the file in errors. Use
/// `#[serde(deny_unknown_fields)]` on `T` so a typo is an error that names it.
pub fn from_str<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, YamlError> {
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_path(&strip_location(&inner.to_string()), &field);
        let (line, column) = match inner.location() {
            Some(l) => (Some(l.line()), Some(l.column())),
            None => (None, None),
        };
        YamlError {
            origin: origin.to_path_buf(),
            field: if field == "." { "(top level)".into() } else { field },
            line,
            column,
            message,
        }
    })
}

/// serde_norway starts messages with the (partial) path, which the error shows apart.
fn strip_path(message: &str, field: &str) -> String {
    if let Some((head, rest)) = message.split_once(": ") {
        if !head.contains(' ') && (field == head || field.starts_with(&format!("{head}."))) {
            return rest.to_string();
        }
    }
    message.to_string()
}

/// serde_norway appends " at line L column C" to messages; the location is reported apart.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        name: String,
        items: Vec<Item>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        share: f64,
    }

    #[test]
    fn errors_name_the_file_the_field_and_the_line() {
        let e = from_str::<Shape>("name: x\nitems:\n  - share: 0.5\n  - shar: 0.5\n", Path::new("f.yaml")).unwrap_err();
        assert_eq!(e.field, "items[1].shar");
        assert_eq!(e.line, Some(4));
        assert!(e.to_string().starts_with("f.yaml:4:"), "{e}");
        assert!(e.message.contains("unknown field `shar`"), "{}", e.message);
        let e = from_str::<Shape>("name: x\nitems:\n  - share: lots\n", Path::new("f.yaml")).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("items[0].share", Some(3)));
    }
}
