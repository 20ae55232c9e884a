//! The per-step metrics log (`metrics.jsonl`, one JSON object per line, flushed as written) and
//! the progress line on stderr.
//!
//! The log is the run's record: the plot ([`crate::plot`]) and the tests read it back. On resume
//! from step N the lines after N are dropped before appending, so a killed-and-resumed run has
//! each step exactly once, as an uninterrupted run would. nanochat and llm.c log the same
//! quantities (loss, lr, grad norm, tokens/s) one line per step.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainingError};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Optimizer updates completed, this one included (1 for the first).
    pub step: u64,
    /// Mean per-token training loss of this step.
    pub loss: f64,
    /// The learning rate used for this update.
    pub learning_rate: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Trained tokens in this step.
    pub tokens: u64,
    /// Trained tokens per second over this step.
    pub tokens_per_s: f64,
    /// Seconds since the run started, carried across resumes.
    pub elapsed_s: f64,
    /// Mean per-token loss on held-out data, on the steps where it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_loss: Option<f64>,
    /// Anything else the stage wants to record (DPO's reward margin, accuracy, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// An open `metrics.jsonl`, appended to one flushed line at a time.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Starts a fresh log at `path`, replacing any earlier one.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(TrainingError::io(path))?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Reopens the log of a run resumed after `step`: lines for later steps (written after the
    /// checkpoint, before the kill) are dropped, as is a torn last line, by rewriting the file
    /// through a temporary and a rename. A missing file is started afresh.
    pub fn resume(path: &Path, step: u64) -> Result<Self> {
        let kept: Vec<String> = match File::open(path) {
            Ok(file) => read_lines(path, file)?
                .into_iter()
                .filter(|(metrics, _)| metrics.step <= step)
                .map(|(_, line)| line)
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Err(TrainingError::Io {
                    path: path.to_owned(),
                    source: error,
                });
            }
        };
        let mut temporary_name = path.as_os_str().to_owned();
        temporary_name.push(format!(".tmp-{}", std::process::id()));
        let temporary = PathBuf::from(temporary_name);
        let mut contents = kept.join("\n");
        if !contents.is_empty() {
            contents.push('\n');
        }
        fs::write(&temporary, contents).map_err(TrainingError::io(&temporary))?;
        fs::rename(&temporary, path).map_err(TrainingError::io(&temporary))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(TrainingError::io(path))?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends one line and flushes it to the OS, so a kill loses at most the line being written.
    pub fn append(&mut self, metrics: &StepMetrics) -> Result<()> {
        let mut line = serde_json::to_vec(metrics).map_err(TrainingError::json(&self.path))?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .map_err(TrainingError::io(&self.path))
    }

    /// The log's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every line of a metrics log. A torn last line (the process was killed mid-write) is
/// skipped; a bad line anywhere else is an error naming it.
pub fn read_metrics(path: &Path) -> Result<Vec<StepMetrics>> {
    let file = File::open(path).map_err(TrainingError::io(path))?;
    Ok(read_lines(path, file)?
        .into_iter()
        .map(|(metrics, _)| metrics)
        .collect())
}

fn read_lines(path: &Path, file: File) -> Result<Vec<(StepMetrics, String)>> {
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(TrainingError::io(path))?;
    let count = lines.len();
    let mut parsed = Vec::with_capacity(count);
    for (index, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(metrics) => parsed.push((metrics, line)),
            Err(_) if index + 1 == count => {}
            Err(source) => {
                return Err(TrainingError::Json {
                    path: path.to_owned(),
                    line: Some(index + 1),
                    source,
                });
            }
        }
    }
    Ok(parsed)
}

/// The progress line on stderr: rewritten in place with `\r` on a terminal, one plain line per
/// update otherwise (a log file gets no carriage returns or escape codes).
#[derive(Debug)]
pub struct Progress {
    total_steps: u64,
    first_step: u64,
    started: Instant,
    terminal: bool,
}

impl Progress {
    /// Progress towards `total_steps`, counting speed from `first_step` (the resumed step, or 0),
    /// so the ETA of a resumed run is not skewed by steps it did not run.
    #[must_use]
    pub fn new(total_steps: u64, first_step: u64) -> Self {
        Self {
            total_steps,
            first_step,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Shows the state after `metrics.step`.
    pub fn update(&self, metrics: &StepMetrics) {
        let done = metrics.step.saturating_sub(self.first_step);
        let remaining = self.total_steps.saturating_sub(metrics.step);
        let eta = (done > 0).then(|| {
            self.started
                .elapsed()
                .mul_f64(remaining as f64 / done as f64)
        });
        let line = progress_line(metrics, self.total_steps, eta);
        let mut stderr = std::io::stderr().lock();
        // Progress is best-effort: a closed stderr must not stop training.
        let _ = if self.terminal {
            write!(stderr, "\r{line}\x1b[K").and_then(|()| stderr.flush())
        } else {
            writeln!(stderr, "{line}")
        };
    }

    /// Ends the in-place line on a terminal.
    pub fn finish(&self) {
        if self.terminal {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// `step 12/100 | loss 2.3456 | lr 3.00e-4 | 1234 tok/s | eta 1m05s`.
#[must_use]
pub fn progress_line(metrics: &StepMetrics, total_steps: u64, eta: Option<Duration>) -> String {
    let eta = eta.map_or_else(|| "?".to_owned(), format_duration);
    format!(
        "step {}/{total_steps} | loss {:.4} | lr {:.2e} | {:.0} tok/s | eta {eta}",
        metrics.step, metrics.loss, metrics.learning_rate, metrics.tokens_per_s
    )
}

fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 3600, seconds / 60 % 60, seconds % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(step: u64) -> StepMetrics {
        StepMetrics {
            step,
            loss: 2.0 / step as f64,
            learning_rate: 3e-4,
            grad_norm: 1.0,
            tokens: 100,
            tokens_per_s: 1234.4,
            elapsed_s: step as f64,
            held_out_loss: None,
            extra: serde_json::Map::new(),
        }
    }

    #[test]
    fn resume_drops_steps_after_the_checkpoint_and_a_torn_line() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&path).unwrap();
        for step in 1..=7 {
            log.append(&metrics(step)).unwrap();
        }
        drop(log);
        // A kill in the middle of writing step 8.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"step": 8, "lo"#).unwrap();
        drop(file);

        let mut log = MetricsLog::resume(&path, 5).unwrap();
        log.append(&metrics(6)).unwrap();
        let steps: Vec<u64> = read_metrics(&path)
            .unwrap()
            .iter()
            .map(|m| m.step)
            .collect();
        assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn extra_fields_round_trip_flat() {
        let mut record = metrics(3);
        record
            .extra
            .insert("reward_margin".to_owned(), serde_json::json!(0.5));
        record.held_out_loss = Some(1.5);
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains(r#""reward_margin":0.5"#), "{line}");
        assert_eq!(serde_json::from_str::<StepMetrics>(&line).unwrap(), record);
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_naming_it() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("metrics.jsonl");
        let good = serde_json::to_string(&metrics(1)).unwrap();
        fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let error = read_metrics(&path).unwrap_err().to_string();
        assert!(error.contains("metrics.jsonl line 2"), "{error}");
    }

    #[test]
    fn progress_line_shows_step_loss_rate_speed_and_eta() {
        let line = progress_line(&metrics(12), 100, Some(Duration::from_secs(65)));
        assert_eq!(
            line,
            "step 12/100 | loss 0.1667 | lr 3.00e-4 | 1234 tok/s | eta 1m05s"
        );
        assert!(progress_line(&metrics(1), 100, None).ends_with("eta ?"));
    }
}
