//! Reading JSONL line by line with problems that name the file and line.
//!
//! Lines are read as bytes so invalid UTF-8 is reported with its byte offset instead of aborting
//! the whole file; blank lines carry no record and are passed over; `\r\n` endings are accepted.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use crate::message::FieldProblem;
use crate::records::Record;

/// A problem with one line of a data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    /// The file, as given (`-` for standard input).
    pub source: String,
    /// 1-based line number.
    pub line: usize,
    /// The field's path in the record, empty for the whole line.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl LineProblem {
    /// A problem with a whole line.
    #[must_use]
    pub fn new(source: &str, line: usize, message: String) -> LineProblem {
        LineProblem {
            source: source.to_owned(),
            line,
            field: String::new(),
            message,
        }
    }

    /// A field problem placed at a line.
    #[must_use]
    pub fn at(source: &str, line: usize, problem: FieldProblem) -> LineProblem {
        LineProblem {
            source: source.to_owned(),
            line,
            field: problem.field,
            message: problem.message,
        }
    }
}

impl fmt::Display for LineProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}: ", self.source, self.line)?;
        if !self.field.is_empty() {
            write!(formatter, "{}: ", self.field)?;
        }
        formatter.write_str(&self.message)
    }
}

/// A file that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {path}: {source}")]
pub struct OpenError {
    /// The path.
    pub path: String,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// The JSON values of a JSONL stream, each with its line number.
pub struct JsonlLines {
    reader: Box<dyn BufRead>,
    source: String,
    line: usize,
    buffer: Vec<u8>,
    failed: bool,
}

impl fmt::Debug for JsonlLines {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("JsonlLines")
            .field("source", &self.source)
            .field("line", &self.line)
            .finish_non_exhaustive()
    }
}

impl JsonlLines {
    /// Opens a file, or standard input for `-`.
    pub fn open(path: &str) -> Result<JsonlLines, OpenError> {
        let reader: Box<dyn BufRead> = if path == "-" {
            Box::new(BufReader::new(io::stdin()))
        } else {
            let file = File::open(Path::new(path)).map_err(|source| OpenError {
                path: path.to_owned(),
                source,
            })?;
            Box::new(BufReader::with_capacity(1 << 16, file))
        };
        Ok(JsonlLines::from_reader(reader, path))
    }

    /// Reads from any buffered reader; `source` names it in problems.
    #[must_use]
    pub fn from_reader(reader: Box<dyn BufRead>, source: &str) -> JsonlLines {
        JsonlLines {
            reader,
            source: source.to_owned(),
            line: 0,
            buffer: Vec::new(),
            failed: false,
        }
    }

    /// The name of the stream.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Parsed records instead of raw values.
    pub fn records(self) -> impl Iterator<Item = Result<(usize, Record), Vec<LineProblem>>> {
        let source = self.source.clone();
        self.map(move |item| {
            let (line, value) = item.map_err(|problem| vec![problem])?;
            Record::from_json(&value)
                .map(|record| (line, record))
                .map_err(|problems| {
                    problems
                        .into_iter()
                        .map(|problem| LineProblem::at(&source, line, problem))
                        .collect()
                })
        })
    }
}

impl Iterator for JsonlLines {
    type Item = Result<(usize, Value), LineProblem>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            self.buffer.clear();
            self.line += 1;
            match self.reader.read_until(b'\n', &mut self.buffer) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => {
                    self.failed = true;
                    return Some(Err(LineProblem::new(
                        &self.source,
                        self.line,
                        format!("read error: {error}"),
                    )));
                }
            }
            let bytes = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
            let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(error) => {
                    return Some(Err(LineProblem::new(
                        &self.source,
                        self.line,
                        format!("invalid UTF-8 at byte {} of the line", error.valid_up_to()),
                    )));
                }
            };
            return Some(
                serde_json::from_str(text)
                    .map(|value| (self.line, value))
                    .map_err(|error| {
                        LineProblem::new(
                            &self.source,
                            self.line,
                            format!("malformed JSON at column {}: {error}", error.column()),
                        )
                    }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &'static [u8]) -> Vec<Result<(usize, Value), LineProblem>> {
        JsonlLines::from_reader(Box::new(bytes), "data.jsonl").collect()
    }

    #[test]
    fn problems_name_file_and_line() {
        let items = lines(b"{\"a\": 1}\r\n\n{\"a\": \n\xff\xfe\n{}");
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_ref().unwrap().0, 1);
        let malformed = items[1].as_ref().unwrap_err();
        assert_eq!(
            (malformed.line, malformed.source.as_str()),
            (3, "data.jsonl")
        );
        assert!(
            malformed
                .to_string()
                .starts_with("data.jsonl:3: malformed JSON")
        );
        let invalid = items[2].as_ref().unwrap_err();
        assert_eq!(
            invalid.to_string(),
            "data.jsonl:4: invalid UTF-8 at byte 0 of the line"
        );
        assert_eq!(items[3].as_ref().unwrap().0, 5);
    }
}
