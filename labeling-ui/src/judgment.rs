//! One annotator's judgment of an item, as submitted: the full ranking of the candidates, a
//! strength for each adjacent pair (Llama 3's four levels, §4.2.1, plus a tie), the item-level
//! flags, and an optional edit of the best response (edited > chosen > rejected).

use datasets::records::Strength;
use serde::{Deserialize, Serialize};

/// How much better the higher of two adjacent candidates in a ranking is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairStrength {
    /// One of the four preference levels.
    Level(Strength),
    /// The two are equally good: no preference.
    Tie,
}

impl PairStrength {
    /// The JSON spelling: a [`Strength`] spelling or `tie`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PairStrength::Level(level) => level.as_str(),
            PairStrength::Tie => "tie",
        }
    }

    /// Parses the JSON spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<PairStrength> {
        if text == "tie" {
            Some(PairStrength::Tie)
        } else {
            Strength::parse(text).map(PairStrength::Level)
        }
    }

    /// The size of the preference on the signed strength scale used for agreement: 4 for
    /// significantly better down to 1 for marginally better, 0 for a tie.
    #[must_use]
    pub fn magnitude(self) -> i32 {
        match self {
            PairStrength::Level(Strength::SignificantlyBetter) => 4,
            PairStrength::Level(Strength::Better) => 3,
            PairStrength::Level(Strength::SlightlyBetter) => 2,
            PairStrength::Level(Strength::MarginallyBetter) => 1,
            PairStrength::Tie => 0,
        }
    }
}

impl Serialize for PairStrength {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PairStrength {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PairStrength::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown strength {text:?} (expected significantly_better, better, slightly_better, marginally_better or tie)"
            ))
        })
    }
}

/// A human edit of one candidate (the best one): the edited text ranks above every candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    /// The candidate the annotator started from.
    pub candidate_id: i64,
    /// The edited response.
    pub content: String,
}

/// What an annotator decided about one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Judgment {
    /// Every candidate id, best first (empty when `not_rankable`).
    #[serde(default)]
    pub ranking: Vec<i64>,
    /// `strengths[i]` compares `ranking[i]` with `ranking[i + 1]`.
    #[serde(default)]
    pub strengths: Vec<PairStrength>,
    /// Every candidate is bad (the ranking still says which is least bad).
    #[serde(default)]
    pub all_bad: bool,
    /// The candidates cannot be ranked (e.g. the prompt is broken).
    #[serde(default)]
    pub not_rankable: bool,
    /// An edit of the best candidate.
    #[serde(default)]
    pub edited: Option<Edit>,
}

impl Judgment {
    /// Checks the judgment against the item's candidate ids; the message names the field.
    pub fn validate(&self, candidate_ids: &[i64]) -> Result<(), String> {
        if self.not_rankable {
            if !self.ranking.is_empty() || !self.strengths.is_empty() || self.edited.is_some() {
                return Err("not_rankable: ranking, strengths and edited must be empty".into());
            }
            return Ok(());
        }
        let mut ranked = self.ranking.clone();
        ranked.sort_unstable();
        let mut expected = candidate_ids.to_vec();
        expected.sort_unstable();
        if ranked != expected {
            return Err(format!(
                "ranking: must list every candidate of the item exactly once ({expected:?}), got {:?}",
                self.ranking
            ));
        }
        if self.strengths.len() + 1 != self.ranking.len() {
            return Err(format!(
                "strengths: expected {} (one per adjacent pair of the ranking), got {}",
                self.ranking.len().saturating_sub(1),
                self.strengths.len()
            ));
        }
        if let Some(edit) = &self.edited {
            if self.ranking.first() != Some(&edit.candidate_id) {
                return Err(format!(
                    "edited.candidate_id: only the best-ranked candidate ({:?}) can be edited, got {}",
                    self.ranking.first(),
                    edit.candidate_id
                ));
            }
            if edit.content.trim().is_empty() {
                return Err("edited.content: empty".into());
            }
        }
        Ok(())
    }

    /// The preference between the candidates at ranking positions `higher < lower`: the strongest
    /// adjacent step between them (A ≫ B > C means A ≫ C), or a tie when every step is a tie (or the positions are out of range).
    #[must_use]
    pub fn strength_between(&self, higher: usize, lower: usize) -> PairStrength {
        self.strengths
            .get(higher..lower)
            .unwrap_or_default()
            .iter()
            .copied()
            .max_by_key(|step| step.magnitude())
            .unwrap_or(PairStrength::Tie)
    }
}
