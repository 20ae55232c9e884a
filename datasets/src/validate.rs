//! `herd data validate`: every problem of a data file, each with `file:line` and field.

use serde::Serialize;

use crate::encode::{EncodeOptions, encode_record};
use crate::jsonl::{JsonlLines, LineProblem};
use crate::message::Role;
use crate::records::Record;
use crate::render::Renderer;

/// What a validation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Non-blank lines read.
    pub lines: usize,
    /// Valid conversations.
    pub conversations: usize,
    /// Valid preferences.
    pub preferences: usize,
    /// Every problem, in file order.
    pub problems: Vec<LineProblem>,
}

impl ValidationReport {
    /// Lines with at least one problem.
    #[must_use]
    pub fn invalid_lines(&self) -> usize {
        let mut lines: Vec<usize> = self.problems.iter().map(|problem| problem.line).collect();
        lines.dedup();
        lines.len()
    }
}

/// Summary counts for JSON output.
#[derive(Debug, Serialize)]
struct Summary {
    lines: usize,
    conversations: usize,
    preferences: usize,
    invalid_lines: usize,
    problems: usize,
}

impl ValidationReport {
    /// The counts as a JSON value.
    #[must_use]
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::to_value(Summary {
            lines: self.lines,
            conversations: self.conversations,
            preferences: self.preferences,
            invalid_lines: self.invalid_lines(),
            problems: self.problems.len(),
        })
        .unwrap_or_default()
    }
}

/// Checks every line. With a renderer, also renders each record and checks `max_length`.
#[must_use]
pub fn validate(
    lines: JsonlLines,
    renderer: Option<&Renderer<'_>>,
    options: EncodeOptions,
) -> ValidationReport {
    let source = lines.source().to_owned();
    let mut report = ValidationReport::default();
    for item in lines.records() {
        report.lines += 1;
        let (line, record) = match item {
            Ok(parsed) => parsed,
            Err(mut problems) => {
                report.problems.append(&mut problems);
                continue;
            }
        };
        if let Some(problem) = record_problem(&record) {
            report
                .problems
                .push(LineProblem::new(&source, line, problem));
            continue;
        }
        if let Some(renderer) = renderer
            && let Err(error) = encode_record(renderer, &record, options)
        {
            report
                .problems
                .push(LineProblem::new(&source, line, error.to_string()));
            continue;
        }
        match record {
            Record::Conversation(_) => report.conversations += 1,
            Record::Preference(_) => report.preferences += 1,
        }
    }
    report
}

/// Problems that are about training rather than the format.
fn record_problem(record: &Record) -> Option<String> {
    match record {
        Record::Conversation(conversation)
            if !conversation
                .dialogue
                .messages()
                .iter()
                .any(|message| message.role == Role::Assistant) =>
        {
            Some("messages: no assistant message, so nothing to train on".to_owned())
        }
        _ => None,
    }
}
