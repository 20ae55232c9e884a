//! Typed TOML configs for every stage: read the file, apply `--set key=value` overrides, parse
//! into the stage's `#[serde(deny_unknown_fields)]` struct, and hand back the resolved TOML that
//! is saved beside every checkpoint.
//!
//! Overrides are applied to the document *before* the typed parse (as Hydra and torchtune's
//! `key=value` overrides), so an override goes through exactly the checks a value written in the
//! file does: a misspelt key is an unknown field, a wrong type is a type error. A dotted key walks
//! into tables (`training.learning_rate=3e-4`), creating missing ones so that the typed parse
//! rejects them by name. The value is parsed as a TOML value (`3e-4`, `true`, `[1, 2]`,
//! `"text"`) and, failing that, taken as a bare string (`output_dir=runs/a`).
//!
//! Every error names the file, the dotted key, its value as written, and the line and column
//! in the file — or the `--set` that introduced it.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue};
use toml::{Spanned, Table, Value};

/// What can go wrong while loading a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", path.display())]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters).
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A `--set` argument is malformed or cannot be applied.
    #[error("{}: --set {assignment}: {reason}", path.display())]
    Override {
        /// The config file the override applies to.
        path: PathBuf,
        /// The argument as given.
        assignment: String,
        /// Why it is rejected.
        reason: String,
    },
    /// A key written in the file is unknown, or its value has the wrong type or is out of range.
    #[error("{}:{line}:{column}: `{key}` = {value}: {message}", path.display())]
    InFile {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
        /// 1-based column of the key.
        column: usize,
        /// The dotted key.
        key: String,
        /// Its value as written.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// A key set by `--set` is unknown, or its value has the wrong type.
    #[error("{}: --set {key}={value}: {message}", path.display())]
    InOverride {
        /// The config file the override applies to.
        path: PathBuf,
        /// The dotted key.
        key: String,
        /// Its value as given.
        value: String,
        /// What is wrong.
        message: String,
    },
    /// The typed parse failed somewhere no key can be pointed at (e.g. a missing section).
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The parsed config could not be written back as TOML.
    #[error("{}: cannot write the resolved config: {message}", path.display())]
    Serialize {
        /// The config file.
        path: PathBuf,
        /// What the serializer said.
        message: String,
    },
}

/// Reads the TOML config at `path`, applies `overrides` (each `dotted.key=value`), and parses the
/// result into `T`. Returns the config and its resolved TOML (the file plus overrides, as `T`
/// serializes it, so defaults are written out), to save beside each checkpoint.
pub fn load_config<T: DeserializeOwned + Serialize>(
    path: &Path,
    overrides: &[String],
) -> Result<(T, String), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_config(&text, path, overrides)
}

/// [`load_config`] on text already read; `path` only names the file in errors.
pub fn parse_config<T: DeserializeOwned + Serialize>(
    text: &str,
    path: &Path,
    overrides: &[String],
) -> Result<(T, String), ConfigError> {
    let mut document: Table = toml::from_str(text).map_err(|error| {
        let (line, column) = error
            .span()
            .map_or((0, 0), |span| line_column(text, span.start));
        ConfigError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: error.message().to_owned(),
        }
    })?;
    let mut assignments = Vec::with_capacity(overrides.len());
    for assignment in overrides {
        assignments.push(apply_override(&mut document, assignment, path)?);
    }
    // With no override the file's own text is parsed, so spans are the file's; otherwise the
    // merged document is written out and parsed, and errors are mapped back by key.
    let merged = if assignments.is_empty() {
        text.to_owned()
    } else {
        toml::to_string(&document).map_err(|error| ConfigError::Serialize {
            path: path.to_owned(),
            message: error.to_string(),
        })?
    };
    let config: T = toml::from_str(&merged)
        .map_err(|error| locate(&error, text, &merged, &assignments, path))?;
    let resolved = toml::to_string(&config).map_err(|error| ConfigError::Serialize {
        path: path.to_owned(),
        message: error.to_string(),
    })?;
    Ok((config, resolved))
}

/// One parsed `--set`: the dotted key and the value as given.
#[derive(Debug)]
struct Assignment {
    key: String,
    value: String,
}

/// Sets `key=value` in `document`, creating missing tables along the dotted key.
fn apply_override(
    document: &mut Table,
    assignment: &str,
    path: &Path,
) -> Result<Assignment, ConfigError> {
    let rejected = |reason: String| ConfigError::Override {
        path: path.to_owned(),
        assignment: assignment.to_owned(),
        reason,
    };
    let Some((key, raw_value)) = assignment.split_once('=') else {
        return Err(rejected("expected key=value".to_owned()));
    };
    let (key, raw_value) = (key.trim(), raw_value.trim());
    let segments: Vec<&str> = key.split('.').collect();
    if segments.iter().any(|segment| segment.is_empty()) {
        return Err(rejected(format!("`{key}` has an empty key segment")));
    }
    // A TOML value if it is one, else the text as a string: `output_dir=runs/a` needs no quotes.
    let value = raw_value
        .parse::<Value>()
        .unwrap_or_else(|_| Value::String(raw_value.to_owned()));
    let (last, parents) = segments
        .split_last()
        .ok_or_else(|| rejected("empty key".to_owned()))?;
    let mut table = document;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = table
            .entry((*segment).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(inner) => inner,
            other => {
                return Err(rejected(format!(
                    "`{}` is a {}, not a table",
                    segments[..=depth].join("."),
                    other.type_str()
                )));
            }
        };
    }
    table.insert((*last).to_owned(), value);
    Ok(Assignment {
        key: key.to_owned(),
        value: raw_value.to_owned(),
    })
}

/// Turns a typed-parse error on `merged` into an error naming the key: the `--set` that wrote it,
/// or its place in the original `text`.
fn locate(
    error: &toml::de::Error,
    text: &str,
    merged: &str,
    assignments: &[Assignment],
    path: &Path,
) -> ConfigError {
    let message = error.message().trim().to_owned();
    let entries = error
        .span()
        .map(|_| spanned_entries(merged))
        .unwrap_or_default();
    let Some(entry) = error.span().and_then(|span| innermost(&entries, &span)) else {
        return ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
    };
    // The last override of a key wins, as in the document.
    if let Some(assignment) = assignments.iter().rev().find(|assignment| {
        assignment.key == entry.key || entry.key.starts_with(&format!("{}.", assignment.key))
    }) {
        return ConfigError::InOverride {
            path: path.to_owned(),
            key: assignment.key.clone(),
            value: assignment.value.clone(),
            message,
        };
    }
    // Not from an override: point into the file as written.
    let original = spanned_entries(text);
    let (key_span, value) = original
        .iter()
        .find(|candidate| candidate.key == entry.key)
        .map_or((entry.key_span.clone(), entry.value.clone()), |found| {
            (found.key_span.clone(), found.value.clone())
        });
    let source = if original.iter().any(|candidate| candidate.key == entry.key) {
        text
    } else {
        merged
    };
    let (line, column) = line_column(source, key_span.start);
    ConfigError::InFile {
        path: path.to_owned(),
        line,
        column,
        key: entry.key.clone(),
        value,
        message,
    }
}

/// A key of a TOML document with where its key and value are.
#[derive(Debug, Clone)]
struct SpannedEntry {
    /// Dotted, with `[i]` for array elements.
    key: String,
    key_span: Range<usize>,
    value_span: Range<usize>,
    /// The value as written, shortened to one line.
    value: String,
}

/// Every key of `text` (nested ones dotted), with spans; empty if the text does not parse.
fn spanned_entries(text: &str) -> Vec<SpannedEntry> {
    let mut entries = Vec::new();
    if let Ok(document) = DeTable::parse(text) {
        collect_entries(text, "", document.get_ref(), &mut entries);
    }
    entries
}

fn collect_entries(text: &str, prefix: &str, table: &DeTable<'_>, entries: &mut Vec<SpannedEntry>) {
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        push_entry(text, name, key.span(), value, entries);
    }
}

fn push_entry(
    text: &str,
    key: String,
    key_span: Range<usize>,
    value: &Spanned<DeValue<'_>>,
    entries: &mut Vec<SpannedEntry>,
) {
    let value_span = value.span();
    let written = text.get(value_span.clone()).unwrap_or_default();
    let mut shown: String = written.lines().next().unwrap_or_default().trim().to_owned();
    if shown.chars().count() > 60 || written.lines().nth(1).is_some() {
        shown = shown.chars().take(60).collect::<String>() + "…";
    }
    match value.get_ref() {
        DeValue::Table(inner) => collect_entries(text, &key, inner, entries),
        DeValue::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                push_entry(text, format!("{key}[{index}]"), item.span(), item, entries);
            }
        }
        _ => {}
    }
    entries.push(SpannedEntry {
        key,
        key_span,
        value_span,
        value: shown,
    });
}

/// The most deeply nested entry whose key or value contains the start of `span`.
fn innermost<'a>(entries: &'a [SpannedEntry], span: &Range<usize>) -> Option<&'a SpannedEntry> {
    let contains = |range: &Range<usize>| {
        range.start <= span.start && span.start < range.end.max(range.start + 1)
    };
    entries
        .iter()
        .filter(|entry| contains(&entry.key_span) || contains(&entry.value_span))
        .max_by_key(|entry| (entry.key.matches(['.', '[']).count(), entry.key_span.start))
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Run {
        name: String,
        training: Training,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Training {
        steps: u64,
        learning_rate: f64,
        #[serde(default)]
        files: Vec<String>,
    }

    const TEXT: &str = "name = \"tiny\"\n\n[training]\nsteps = 10\nlearning_rate = 1e-3\n";

    fn parse(text: &str, overrides: &[&str]) -> Result<(Run, String), ConfigError> {
        let overrides: Vec<String> = overrides.iter().map(|&o| o.to_owned()).collect();
        parse_config(text, Path::new("run.toml"), &overrides)
    }

    #[test]
    fn a_nested_override_replaces_the_value_and_is_in_the_resolved_text() {
        let (run, resolved) = parse(
            TEXT,
            &[
                "training.steps=25",
                "name=runs/b",
                "training.files=[\"a.txt\"]",
            ],
        )
        .unwrap();
        assert_eq!(
            run,
            Run {
                name: "runs/b".to_owned(),
                training: Training {
                    steps: 25,
                    learning_rate: 1e-3,
                    files: vec!["a.txt".to_owned()],
                },
            }
        );
        let (again, _) = parse(&resolved, &[]).unwrap();
        assert_eq!(again, run);
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named_with_its_line() {
        let text = "name = \"tiny\"\n\n[training]\nsteps = 10\nlerning_rate = 1e-3\n";
        let error = parse(text, &[]).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "run.toml:5:1: `training.lerning_rate` = 1e-3: unknown field `lerning_rate`"
            ),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_key_in_an_override_is_named() {
        let error = parse(TEXT, &["training.stpes=3"]).unwrap_err().to_string();
        assert!(
            error.starts_with("run.toml: --set training.stpes=3: unknown field `stpes`"),
            "{error}"
        );
    }

    #[test]
    fn a_type_error_names_the_key_and_value() {
        let text = "name = \"tiny\"\n[training]\nsteps = \"ten\"\nlearning_rate = 1e-3\n";
        let error = parse(text, &["name=other"]).unwrap_err().to_string();
        assert!(
            error.starts_with("run.toml:3:1: `training.steps` = \"ten\": invalid type: string"),
            "{error}"
        );
        let error = parse(TEXT, &["training.steps=-1"]).unwrap_err().to_string();
        assert!(
            error.starts_with("run.toml: --set training.steps=-1: "),
            "{error}"
        );
    }

    #[test]
    fn malformed_input_is_reported_with_its_place() {
        let error = parse("name = \n", &[]).unwrap_err().to_string();
        assert!(error.starts_with("run.toml:1:"), "{error}");
        let error = parse(TEXT, &["name"]).unwrap_err().to_string();
        assert_eq!(error, "run.toml: --set name: expected key=value");
        let error = parse(TEXT, &["name.first=a"]).unwrap_err().to_string();
        assert_eq!(
            error,
            "run.toml: --set name.first=a: `name` is a string, not a table"
        );
    }
}
