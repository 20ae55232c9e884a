//! Choosing among one prompt's K samples (Llama 3 paper §4.2.2: "use our reward model to select
//! the best candidate"), with a verifier's result folded in as [`Selection`] says.
//!
//! Each selectable sample gets a [`Ranking`] — `score`, then `tie_break` — and samples compare by
//! that pair. The best is the first sample with the greatest ranking, the worst the last one with
//! the least, so equal rankings resolve by sample order and the choice is deterministic. A
//! preference pair (best, worst) exists only when the two differ in *score* (not just the
//! tie-break) and in text: a pair of equals teaches nothing ([`makes_pair`]).
//!
//! "verified" below is the verifier's `Some(v)`; a sample it cannot check (`None`) counts as 0 in
//! the ranking — not checkable is no evidence of being right — but is not "failed" for
//! `require_verified`.

use std::cmp::Ordering;

use crate::config::Selection;

/// What is known about one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleScores {
    /// The reward model's score, if one ran.
    pub reward: Option<f64>,
    /// The verifier's result (`None`: not checkable, or no verifier).
    pub verified: Option<f64>,
}

/// How a sample ranks: `score` first, then `tie_break`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranking {
    /// The score reported as the sample's score (and compared against `min_score`).
    pub score: f64,
    /// Compared when scores are equal.
    pub tie_break: f64,
}

impl Ranking {
    fn compare(&self, other: &Ranking) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.tie_break.total_cmp(&other.tie_break))
    }
}

/// The ranking of a sample, or `None` when a reward the selection reads is missing.
#[must_use]
pub fn rank(selection: Selection, verifier_weight: f64, scores: SampleScores) -> Option<Ranking> {
    let verified = scores.verified.unwrap_or(0.0);
    Some(match selection {
        Selection::RewardModel => Ranking {
            score: scores.reward?,
            tie_break: 0.0,
        },
        Selection::Verifier => Ranking {
            score: verified,
            tie_break: 0.0,
        },
        Selection::VerifierThenRewardModel => Ranking {
            score: verified,
            tie_break: scores.reward?,
        },
        Selection::Weighted => Ranking {
            score: scores.reward? + verifier_weight * verified,
            tie_break: 0.0,
        },
    })
}

/// The best and worst of `rankings` (indices; `None` entries are not selectable): the first
/// greatest and the last least. `None` when nothing is selectable.
#[must_use]
pub fn best_and_worst(rankings: &[Option<Ranking>]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, Ranking)> = None;
    let mut worst: Option<(usize, Ranking)> = None;
    for (index, ranking) in rankings.iter().enumerate() {
        let Some(ranking) = *ranking else { continue };
        if best.is_none_or(|(_, current)| ranking.compare(&current) == Ordering::Greater) {
            best = Some((index, ranking));
        }
        if worst.is_none_or(|(_, current)| ranking.compare(&current) != Ordering::Greater) {
            worst = Some((index, ranking));
        }
    }
    Some((best?.0, worst?.0))
}

/// Whether `a` ranks strictly above `b`.
#[must_use]
pub fn ranks_above(a: Ranking, b: Ranking) -> bool {
    a.compare(&b) == Ordering::Greater
}

/// Whether (`best`, `worst`) makes a preference pair: `best`'s *score* is higher. The tie-break
/// (the reward model under `verifier_then_reward_model`) picks among equally scored samples — the
/// SFT sample — but never makes a pair by itself: between two answers the verifier found equally
/// wrong, a reward model's whim is what the verifier is there to overrule.
#[must_use]
pub fn makes_pair(best: Ranking, worst: Ranking) -> bool {
    best.score > worst.score
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(reward: Option<f64>, verified: Option<f64>) -> SampleScores {
        SampleScores { reward, verified }
    }

    #[test]
    #[expect(clippy::float_cmp, reason = "hand-computed sums, exact in binary")]
    fn each_selection_ranks_as_documented() {
        let right_low = scores(Some(-1.0), Some(1.0));
        let wrong_high = scores(Some(2.0), Some(0.0));
        let unchecked = scores(Some(0.5), None);
        let all = [right_low, wrong_high, unchecked];
        let ranked = |selection, weight| -> Vec<Option<Ranking>> {
            all.iter().map(|&s| rank(selection, weight, s)).collect()
        };
        // The reward model alone: 2.0 > 0.5 > -1.0.
        assert_eq!(
            best_and_worst(&ranked(Selection::RewardModel, 1.0)),
            Some((1, 0))
        );
        // The verifier alone: 1 > 0 = 0 (unchecked counts 0); the worst is the last of the least.
        assert_eq!(
            best_and_worst(&ranked(Selection::Verifier, 1.0)),
            Some((0, 2))
        );
        // Verifier first, reward breaks the 0 = 0 tie: wrong_high (2.0) above unchecked (0.5).
        assert_eq!(
            best_and_worst(&ranked(Selection::VerifierThenRewardModel, 1.0)),
            Some((0, 2))
        );
        // Weighted, w = 1: -1 + 1 = 0, 2 + 0 = 2, 0.5 + 0 = 0.5.
        let weighted = ranked(Selection::Weighted, 1.0);
        assert_eq!(weighted[0].unwrap().score, 0.0);
        assert_eq!(best_and_worst(&weighted), Some((1, 0)));
        // w = 4: -1 + 4 = 3 beats 2.
        assert_eq!(
            best_and_worst(&ranked(Selection::Weighted, 4.0)),
            Some((0, 2))
        );
    }

    #[test]
    fn missing_rewards_and_unselectable_samples_are_skipped() {
        assert_eq!(
            rank(Selection::RewardModel, 1.0, scores(None, Some(1.0))),
            None
        );
        assert!(rank(Selection::Verifier, 1.0, scores(None, Some(1.0))).is_some());
        let rankings = [
            None,
            Some(Ranking {
                score: 1.0,
                tie_break: 0.0,
            }),
            None,
        ];
        assert_eq!(best_and_worst(&rankings), Some((1, 1)));
        assert_eq!(best_and_worst(&[None, None]), None);
    }

    #[test]
    fn ties_resolve_by_sample_order() {
        let a = Ranking {
            score: 0.5,
            tie_break: 0.25,
        };
        assert_eq!(best_and_worst(&[Some(a), Some(a), Some(a)]), Some((0, 2)));
        assert!(!ranks_above(a, a));
        let b = Ranking {
            score: 0.5,
            tie_break: 0.5,
        };
        assert!(ranks_above(b, a));
        assert!(!makes_pair(b, a), "a tie-break alone makes no pair");
        let c = Ranking {
            score: 1.0,
            tie_break: 0.0,
        };
        assert!(makes_pair(c, b));
    }
}
