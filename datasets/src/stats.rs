//! `herd data stats`: counts, the token-length distribution, and what a length limit would cut.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::encode::{EncodeOptions, encode_record};
use crate::jsonl::{JsonlLines, LineProblem};
use crate::records::Record;
use crate::render::Renderer;

/// Statistics of one data file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DatasetStats {
    /// The file.
    pub source: String,
    /// Valid conversations.
    pub conversations: usize,
    /// Valid preferences.
    pub preferences: usize,
    /// Messages per role, over every dialogue (a preference's prompt counted once).
    pub messages_by_role: BTreeMap<String, usize>,
    /// Assistant messages that call a tool.
    pub tool_calls: usize,
    /// Token sequences (one per conversation; chosen, rejected and edited per preference).
    pub sequences: usize,
    /// Tokens over all sequences.
    pub total_tokens: usize,
    /// Tokens the SFT loss counts.
    pub trained_tokens: usize,
    /// Sequence length summary.
    pub length: LengthSummary,
    /// Sequence lengths by power-of-two bucket.
    pub histogram: Vec<Bucket>,
    /// For each requested limit, what it would cut.
    pub truncation: Vec<Truncation>,
    /// Lines that could not be used.
    #[serde(serialize_with = "problems_as_strings")]
    pub problems: Vec<LineProblem>,
}

fn problems_as_strings<S: serde::Serializer>(
    problems: &[LineProblem],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(problems.iter().map(ToString::to_string))
}

/// Minimum, mean, percentiles and maximum of the sequence lengths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LengthSummary {
    /// Shortest.
    pub min: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: usize,
    /// 90th percentile.
    pub p90: usize,
    /// 99th percentile.
    pub p99: usize,
    /// Longest.
    pub max: usize,
}

/// Sequences with `from <= length < to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Inclusive lower bound.
    pub from: usize,
    /// Exclusive upper bound.
    pub to: usize,
    /// Sequences in the bucket.
    pub count: usize,
}

/// What a maximum length would cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Truncation {
    /// The limit.
    pub max_length: usize,
    /// Sequences longer than it.
    pub sequences_over: usize,
    /// Records with at least one sequence longer than it.
    pub records_over: usize,
    /// Tokens beyond the limit, summed.
    pub tokens_cut: usize,
}

/// Computes the statistics; lines that fail are listed in `problems`.
#[must_use]
pub fn compute(
    lines: JsonlLines,
    renderer: &Renderer<'_>,
    options: EncodeOptions,
    max_lengths: &[usize],
) -> DatasetStats {
    let mut stats = DatasetStats {
        source: lines.source().to_owned(),
        ..DatasetStats::default()
    };
    let source = stats.source.clone();
    let mut lengths = Vec::new();
    let mut truncation: Vec<Truncation> = max_lengths
        .iter()
        .map(|&max_length| Truncation {
            max_length,
            sequences_over: 0,
            records_over: 0,
            tokens_cut: 0,
        })
        .collect();
    let options = EncodeOptions {
        max_length: None,
        ..options
    };
    for item in lines.records() {
        let (line, record) = match item {
            Ok(parsed) => parsed,
            Err(mut problems) => {
                stats.problems.append(&mut problems);
                continue;
            }
        };
        let encoded = match encode_record(renderer, &record, options) {
            Ok(encoded) => encoded,
            Err(error) => {
                stats
                    .problems
                    .push(LineProblem::new(&source, line, error.to_string()));
                continue;
            }
        };
        let mut dialogues = Vec::new();
        match &record {
            Record::Conversation(conversation) => {
                stats.conversations += 1;
                dialogues.push(conversation.dialogue.messages());
            }
            Record::Preference(preference) => {
                stats.preferences += 1;
                dialogues.push(preference.prompt.messages());
                dialogues.push(&preference.chosen);
                dialogues.push(&preference.rejected);
                if let Some(edited) = &preference.edited {
                    dialogues.push(edited);
                }
            }
        }
        for message in dialogues.into_iter().flatten() {
            *stats
                .messages_by_role
                .entry(message.role.header_name().to_owned())
                .or_default() += 1;
            stats.tool_calls += usize::from(message.tool_call.is_some());
        }
        let sequences = encoded.sequences();
        for limit in &mut truncation {
            let mut over = false;
            for (_, sequence) in &sequences {
                if sequence.len() > limit.max_length {
                    over = true;
                    limit.sequences_over += 1;
                    limit.tokens_cut += sequence.len() - limit.max_length;
                }
            }
            limit.records_over += usize::from(over);
        }
        for (_, sequence) in sequences {
            stats.sequences += 1;
            stats.total_tokens += sequence.len();
            stats.trained_tokens += sequence.trained_tokens();
            lengths.push(sequence.len());
        }
    }
    lengths.sort_unstable();
    stats.length = summarize(&lengths);
    stats.histogram = histogram(&lengths);
    stats.truncation = truncation;
    stats
}

fn summarize(sorted: &[usize]) -> LengthSummary {
    let Some(&max) = sorted.last() else {
        return LengthSummary::default();
    };
    // Nearest-rank percentile.
    let percentile = |fraction: f64| {
        let rank = (fraction * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    };
    LengthSummary {
        min: sorted[0],
        mean: sorted.iter().sum::<usize>() as f64 / sorted.len() as f64,
        p50: percentile(0.5),
        p90: percentile(0.9),
        p99: percentile(0.99),
        max,
    }
}

fn histogram(sorted: &[usize]) -> Vec<Bucket> {
    let Some(&max) = sorted.last() else {
        return Vec::new();
    };
    let mut buckets = Vec::new();
    let mut from = 0;
    let mut to = 32;
    while from <= max {
        let count = sorted.partition_point(|&length| length < to)
            - sorted.partition_point(|&length| length < from);
        buckets.push(Bucket { from, to, count });
        from = to;
        to *= 2;
    }
    buckets
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(formatter, "{}", self.source)?;
        writeln!(
            formatter,
            "  records        {} conversations, {} preferences",
            self.conversations, self.preferences
        )?;
        let roles: Vec<String> = self
            .messages_by_role
            .iter()
            .map(|(role, count)| format!("{role} {count}"))
            .collect();
        writeln!(formatter, "  messages       {}", roles.join(", "))?;
        writeln!(formatter, "  tool calls     {}", self.tool_calls)?;
        writeln!(
            formatter,
            "  sequences      {} ({} tokens, {} trained by SFT = {:.1}%)",
            self.sequences,
            self.total_tokens,
            self.trained_tokens,
            100.0 * self.trained_tokens as f64 / self.total_tokens.max(1) as f64
        )?;
        let length = &self.length;
        writeln!(
            formatter,
            "  length         min {} · mean {:.1} · p50 {} · p90 {} · p99 {} · max {}",
            length.min, length.mean, length.p50, length.p90, length.p99, length.max
        )?;
        let widest = self
            .histogram
            .iter()
            .map(|bucket| bucket.count)
            .max()
            .unwrap_or(1)
            .max(1);
        writeln!(formatter, "  histogram (tokens per sequence)")?;
        for bucket in &self.histogram {
            let bar = "█".repeat((40 * bucket.count).div_ceil(widest));
            writeln!(
                formatter,
                "    {:>6} – {:<6} {:>6}  {bar}",
                bucket.from,
                bucket.to - 1,
                bucket.count
            )?;
        }
        for limit in &self.truncation {
            writeln!(
                formatter,
                "  max length {:<6} would cut {} of {} sequences ({} records, {} tokens)",
                limit.max_length,
                limit.sequences_over,
                self.sequences,
                limit.records_over,
                limit.tokens_cut
            )?;
        }
        if !self.problems.is_empty() {
            writeln!(
                formatter,
                "  {} lines could not be used:",
                self.problems.len()
            )?;
            for problem in &self.problems {
                writeln!(formatter, "    {problem}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_buckets() {
        let lengths: Vec<usize> = (1..=100).collect();
        let summary = summarize(&lengths);
        assert_eq!(
            (
                summary.min,
                summary.p50,
                summary.p90,
                summary.p99,
                summary.max
            ),
            (1, 50, 90, 99, 100)
        );
        let buckets = histogram(&lengths);
        assert_eq!(
            buckets,
            [
                Bucket {
                    from: 0,
                    to: 32,
                    count: 31
                },
                Bucket {
                    from: 32,
                    to: 64,
                    count: 32
                },
                Bucket {
                    from: 64,
                    to: 128,
                    count: 37
                },
            ]
        );
    }
}
