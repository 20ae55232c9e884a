//! `herd reward eval` and `herd reward score`: a trained reward model on files.
//!
//! - Evaluation reads preference records, expands them into pairs as training does (`data.rs`:
//!   an edit adds edited > chosen and edited > rejected), and reports pairwise accuracy
//!   (`r_better > r_worse`, TRL's `accuracy`), the mean margin, and the distribution of the rewards of
//!   the better and the worse responses (count, mean, population std, min, quartiles, max; the
//!   quartiles interpolate linearly, as numpy's default).
//! - Scoring writes one JSON line per input line, the input record kept whole under `record`
//!   (record parsing rejects unknown fields, so a reward cannot be added beside them): a
//!   conversation, whose last message must be the assistant's, gives `{"reward": r, "record": …}`;
//!   a preference gives `{"reward_chosen": …, "reward_rejected": …, ["reward_edited": …,] "record": …}`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use datasets::jsonl::JsonlLines;
use datasets::message::Role;
use datasets::records::Record;
use datasets::render::Renderer;
use serde::Serialize;
use serde_json::{Value, json};

use crate::data::read_preferences;
use crate::error::RewardError;
use crate::model::RewardModel;

/// Summary statistics of a set of rewards.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Distribution {
    /// How many rewards.
    pub count: usize,
    /// Their mean.
    pub mean: f64,
    /// Their population standard deviation.
    pub std: f64,
    /// The smallest.
    pub min: f64,
    /// The first quartile.
    pub q25: f64,
    /// The median.
    pub median: f64,
    /// The third quartile.
    pub q75: f64,
    /// The largest.
    pub max: f64,
}

impl Distribution {
    /// The statistics of `values` (all zero when empty).
    #[must_use]
    pub fn of(values: &[f32]) -> Distribution {
        let mut sorted: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        sorted.sort_by(f64::total_cmp);
        let count = sorted.len();
        if count == 0 {
            return Distribution {
                count,
                mean: 0.0,
                std: 0.0,
                min: 0.0,
                q25: 0.0,
                median: 0.0,
                q75: 0.0,
                max: 0.0,
            };
        }
        let mean = sorted.iter().sum::<f64>() / count as f64;
        let variance = sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count as f64;
        // numpy's "linear" quantile: position q·(n − 1) between the two nearest order statistics.
        let quantile = |q: f64| {
            let position = q * (count - 1) as f64;
            let below = position.floor() as usize;
            let above = position.ceil() as usize;
            sorted[below] + (sorted[above] - sorted[below]) * (position - below as f64)
        };
        Distribution {
            count,
            mean,
            std: variance.sqrt(),
            min: sorted[0],
            q25: quantile(0.25),
            median: quantile(0.5),
            q75: quantile(0.75),
            max: sorted[count - 1],
        }
    }
}

/// What `herd reward eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Pairs scored.
    pub pairs: usize,
    /// Fraction of pairs with `r_better > r_worse`.
    pub accuracy: f64,
    /// Mean `r_better − r_worse`.
    pub mean_margin: f64,
    /// Rewards of the better responses.
    pub chosen: Distribution,
    /// Rewards of the worse responses.
    pub rejected: Distribution,
}

impl Evaluation {
    /// A small plain-text table.
    #[must_use]
    pub fn table(&self) -> String {
        let mut text = format!(
            "pairs {}   accuracy {:.4}   mean margin {:.4}\n\n",
            self.pairs, self.accuracy, self.mean_margin
        );
        let _ = writeln!(
            text,
            "{:<9}{:>7}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "rewards", "count", "mean", "std", "min", "q25", "median", "q75", "max"
        );
        for (name, d) in [("chosen", &self.chosen), ("rejected", &self.rejected)] {
            // Writing to a String cannot fail.
            let _ = writeln!(
                text,
                "{name:<9}{:>7}{:>10.4}{:>10.4}{:>10.4}{:>10.4}{:>10.4}{:>10.4}{:>10.4}",
                d.count, d.mean, d.std, d.min, d.q25, d.median, d.q75, d.max
            );
        }
        text
    }
}

/// Scores every pair of the preference file `data` (every line must be a usable preference).
pub fn evaluate_file(
    model: &RewardModel,
    renderer: &Renderer<'_>,
    data: &Path,
) -> Result<Evaluation, RewardError> {
    let mut better = Vec::new();
    let mut worse = Vec::new();
    for outcome in read_preferences(data, renderer, None) {
        for pair in outcome.map_err(RewardError::Data)?.pairs {
            better.push(pair.chosen);
            worse.push(pair.rejected);
        }
    }
    if better.is_empty() {
        return Err(RewardError::Data(format!(
            "{}: no preference pairs",
            data.display()
        )));
    }
    let chosen = model.score_ids(&better)?;
    let rejected = model.score_ids(&worse)?;
    let pairs = chosen.len();
    let accuracy = chosen.iter().zip(&rejected).filter(|(c, r)| c > r).count() as f64;
    let margin: f64 = chosen
        .iter()
        .zip(&rejected)
        .map(|(c, r)| f64::from(c - r))
        .sum();
    Ok(Evaluation {
        pairs,
        accuracy: accuracy / pairs as f64,
        mean_margin: margin / pairs as f64,
        chosen: Distribution::of(&chosen),
        rejected: Distribution::of(&rejected),
    })
}

/// Scores every line of `input` (conversations and preferences) and writes one JSON line per
/// input line to `output` (see the module header); returns the number of lines written.
pub fn score_file(
    model: &RewardModel,
    renderer: &Renderer<'_>,
    input: &Path,
    output: &mut dyn Write,
) -> Result<usize, RewardError> {
    let name = input.display().to_string();
    let lines = JsonlLines::open(&name).map_err(|error| RewardError::Data(error.to_string()))?;
    // Every sequence of the file first, so the model scores them in length-sorted batches.
    let mut sequences = Vec::new();
    let mut lines_out: Vec<(Value, Vec<(&'static str, usize)>)> = Vec::new();
    for item in lines.records() {
        let (line, record) = item.map_err(|problems| {
            RewardError::Data(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
        let mut fields = Vec::new();
        match &record {
            Record::Conversation(conversation) => {
                let last = conversation.dialogue.messages().last().map(|m| m.role);
                if last != Some(Role::Assistant) {
                    return Err(RewardError::Data(format!(
                        "{name}:{line}: the last message is {last:?}; a reward scores an \
                         assistant response"
                    )));
                }
                let ids = renderer.render(&conversation.dialogue, false)?.ids;
                fields.push(("reward", sequences.len()));
                sequences.push(ids);
            }
            Record::Preference(preference) => {
                let completions = [
                    ("reward_chosen", Some(&preference.chosen)),
                    ("reward_rejected", Some(&preference.rejected)),
                    ("reward_edited", preference.edited.as_ref()),
                ];
                for (field, completion) in completions {
                    let Some(completion) = completion else {
                        continue;
                    };
                    let dialogue = preference.full_dialogue(completion).map_err(|problems| {
                        RewardError::Data(format!(
                            "{name}:{line}: {}",
                            datasets::message::join_problems(&problems)
                        ))
                    })?;
                    fields.push((field, sequences.len()));
                    sequences.push(renderer.render(&dialogue, false)?.ids);
                }
            }
        }
        lines_out.push((record.to_json(), fields));
    }
    let rewards = model.score_ids(&sequences)?;
    for (record, fields) in &lines_out {
        let mut object = serde_json::Map::new();
        for &(field, index) in fields {
            object.insert(field.to_owned(), json!(rewards[index]));
        }
        object.insert("record".to_owned(), record.clone());
        let text = serde_json::to_string(&Value::Object(object))
            .map_err(|error| RewardError::Data(format!("{name}: cannot write a line: {error}")))?;
        writeln!(output, "{text}").map_err(|source| RewardError::Io {
            path: input.to_path_buf(),
            source,
        })?;
    }
    Ok(lines_out.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [1, 2, 3, 4]: mean 2.5, population variance 1.25 (std 1.118034); quartile positions 0.75,
    /// 1.5, 2.25 → 1.75, 2.5, 3.25 (numpy.quantile gives the same).
    #[test]
    fn distribution_by_hand() {
        let d = Distribution::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((d.count, d.min, d.max), (4, 1.0, 4.0));
        assert!((d.mean - 2.5).abs() < 1e-12 && (d.std - 1.118_034).abs() < 1e-6);
        assert!((d.q25 - 1.75).abs() < 1e-12);
        assert!((d.median - 2.5).abs() < 1e-12);
        assert!((d.q75 - 3.25).abs() < 1e-12);
        assert_eq!(Distribution::of(&[]).count, 0);
    }
}
