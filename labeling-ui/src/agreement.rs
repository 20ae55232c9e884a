//! Inter-annotator agreement over rankings, and the consensus ranking of an item — pure math for the
//! admin page.
//!
//! A *unit* is an item and an unordered pair of its candidates {a, b} (a < b by id). An annotator's
//! value for a unit is the signed strength of their preference: +magnitude when they rank a above b,
//! −magnitude when below, 0 for a tie, the magnitude (4 significantly better … 1 marginally better)
//! of [`Judgment::strength_between`] the two positions — so values lie in −4..=4. Over the units:
//!
//! - pairwise agreement: over every unit and every two annotators who judged it, the fraction that
//!   agree on the direction (above, below, or tie — a category of its own);
//! - Krippendorff's α, ordinal and interval, following Krippendorff (2011), "Computing
//!   Krippendorff's Alpha-Reliability", §C (coincidence matrix, `n_c` marginals, the ordinal and
//!   interval δ² metrics); units with fewer than two values are not pairable and are dropped.
//!   `dev/agreement_fixtures.py` checks both against the `PyPI` package `krippendorff`.
//!
//! Over whole rankings: Kendall's τ-b (Kendall 1945, the variant `scipy.stats.kendalltau` computes
//! by default) between two annotators' rankings of the same item, candidates joined by tie steps
//! sharing a rank, averaged over every item and every two annotators who ranked it. A pair of
//! rankings where either is all ties has no τ-b and is left out of the mean.
//!
//! The consensus of an item is Tideman's Ranked Pairs (Tideman 1987) over the annotators'
//! pairwise votes, as Open-Assistant's `backend/oasst_backend/utils/ranking.py` computes it:
//! majorities are locked in from the largest margin down unless they close a cycle; equal margins
//! are taken in order of (winner id, loser id) and a pair nobody separates is locked lower id
//! first, so the result is one deterministic strict order (on 300 random tie-free votes of 2–5
//! candidates and 1–9 voters it gave the same ranking as that file, 300/300). Each annotator's
//! agreement with the consensus compares their direction on each unit with that order — except
//! where the head-to-head margin is zero: there the consensus is a tie, so annotators who agree
//! on a tie agree with it.
//!
//! `not_rankable` judgments are skipped, as are malformed ones (a strength count that does not
//! match the ranking, a repeated id); when an annotator judged an item twice, the later judgment in
//! the input replaces the earlier.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::judgment::Judgment;

/// One annotator's judgment of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RankedJudgment {
    /// The item's id.
    pub item: i64,
    /// The annotator's id.
    pub annotator: i64,
    /// What they submitted.
    pub judgment: Judgment,
}

/// Agreement over a project's judgments; `None` where a figure is undefined (e.g. no item judged by
/// two annotators, or every value the same).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgreementReport {
    /// Fraction of (unit, two annotators) comparisons that agree on the direction, tie included.
    pub pairwise_agreement: Option<f64>,
    /// How many comparisons `pairwise_agreement` counts.
    pub pairwise_comparisons: usize,
    /// Krippendorff's α of the signed strengths, ordinal metric.
    pub krippendorff_alpha_ordinal: Option<f64>,
    /// Krippendorff's α of the signed strengths, interval metric.
    pub krippendorff_alpha_interval: Option<f64>,
    /// Units with at least two values (the ones α counts).
    pub pairable_units: usize,
    /// Mean Kendall's τ-b between two annotators' rankings of an item.
    pub kendall_tau: Option<f64>,
    /// How many (item, two annotators) pairs `kendall_tau` averages.
    pub kendall_pairs: usize,
    /// One entry per annotator, by annotator id.
    pub per_annotator: Vec<AnnotatorAgreement>,
}

/// How one annotator's judgments compare with the consensus.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnotatorAgreement {
    /// The annotator's id.
    pub annotator: i64,
    /// Units (item, candidate pair) the annotator gave a value for.
    pub judged_units: usize,
    /// Over the annotator's units on items someone else judged too: the fraction whose direction
    /// (above, below, tie) matches the item's consensus — the order of [`consensus_ranking`], a
    /// tie where the annotators' head-to-head margin is zero (the ranking orders such a pair by id
    /// only).
    pub agreement_with_consensus: Option<f64>,
}

/// The agreement figures of `judgments` (see the module header for each definition).
#[must_use]
pub fn agreement_report(judgments: &[RankedJudgment]) -> AgreementReport {
    let items = judgments_by_item(judgments);
    // (item, a, b) → annotator → signed strength.
    let mut units: BTreeMap<(i64, i64, i64), BTreeMap<i64, i32>> = BTreeMap::new();
    for (&item, by_annotator) in &items {
        for (&annotator, judgment) in by_annotator {
            for ((a, b), value) in signed_values(judgment) {
                units
                    .entry((item, a, b))
                    .or_default()
                    .insert(annotator, value);
            }
        }
    }

    let mut comparisons = 0_usize;
    let mut agreements = 0_usize;
    for values in units.values() {
        let values: Vec<i32> = values.values().copied().collect();
        for (index, first) in values.iter().enumerate() {
            for second in &values[index + 1..] {
                comparisons += 1;
                agreements += usize::from(first.signum() == second.signum());
            }
        }
    }

    let pairable: Vec<Vec<i32>> = units
        .values()
        .filter(|values| values.len() >= 2)
        .map(|values| values.values().copied().collect())
        .collect();

    let mut taus = Vec::new();
    for by_annotator in items.values() {
        let annotators: Vec<&Judgment> = by_annotator.values().copied().collect();
        for (index, first) in annotators.iter().enumerate() {
            for second in &annotators[index + 1..] {
                taus.extend(kendall_tau_b_between(first, second));
            }
        }
    }

    AgreementReport {
        pairwise_agreement: ratio(agreements, comparisons),
        pairwise_comparisons: comparisons,
        krippendorff_alpha_ordinal: krippendorff_alpha(&pairable, Metric::Ordinal),
        krippendorff_alpha_interval: krippendorff_alpha(&pairable, Metric::Interval),
        pairable_units: pairable.len(),
        kendall_tau: mean(&taus),
        kendall_pairs: taus.len(),
        per_annotator: per_annotator(&items, &units),
    }
}

/// The consensus ranking of one item, best first: Tideman's Ranked Pairs over the annotators'
/// pairwise votes (a voter prefers a to b when ranking a strictly above b; ties vote for neither).
/// Every candidate any judgment ranks appears once; empty when no judgment ranks anything.
#[must_use]
pub fn consensus_ranking(judgments_of_one_item: &[&Judgment]) -> Vec<i64> {
    let (candidates, margins) = head_to_head(judgments_of_one_item);
    ranked_pairs(candidates, &margins)
}

/// Every candidate the usable judgments rank, by id, and for each pair a < b the head-to-head
/// margin: voters ranking a strictly above b minus voters ranking b strictly above a.
fn head_to_head(judgments: &[&Judgment]) -> (Vec<i64>, BTreeMap<(i64, i64), i64>) {
    let ranks: Vec<BTreeMap<i64, usize>> = judgments
        .iter()
        .filter(|judgment| is_usable(judgment))
        .map(|judgment| tie_ranks(judgment))
        .collect();
    let candidates: BTreeSet<i64> = ranks.iter().flat_map(|rank| rank.keys().copied()).collect();
    let candidates: Vec<i64> = candidates.into_iter().collect();
    let mut margins = BTreeMap::new();
    for (index, &a) in candidates.iter().enumerate() {
        for &b in &candidates[index + 1..] {
            let mut margin = 0_i64;
            for rank in &ranks {
                if let (Some(rank_a), Some(rank_b)) = (rank.get(&a), rank.get(&b)) {
                    margin += match rank_a.cmp(rank_b) {
                        Ordering::Less => 1,
                        Ordering::Greater => -1,
                        Ordering::Equal => 0,
                    };
                }
            }
            margins.insert((a, b), margin);
        }
    }
    (candidates, margins)
}

/// Tideman's Ranked Pairs over head-to-head `margins` (keyed a < b) of `candidates` (sorted).
fn ranked_pairs(candidates: Vec<i64>, margins: &BTreeMap<(i64, i64), i64>) -> Vec<i64> {
    // (margin, winner, loser) for every pair; a zero margin is locked lower id first.
    let mut majorities: Vec<(i64, i64, i64)> = margins
        .iter()
        .map(|(&(a, b), &margin)| {
            if margin >= 0 {
                (margin, a, b)
            } else {
                (-margin, b, a)
            }
        })
        .collect();
    majorities.sort_by(|left, right| {
        right
            .0
            .cmp(&left.0)
            .then(left.1.cmp(&right.1))
            .then(left.2.cmp(&right.2))
    });

    let mut locked: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (_, winner, loser) in majorities {
        if !reaches(&locked, loser, winner) {
            locked.entry(winner).or_default().push(loser);
        }
    }

    // The locked graph is acyclic and orders every pair (directly or through a path): take the
    // candidate nothing beats, repeatedly; the smallest id first should the graph ever allow two.
    let mut remaining = candidates;
    let mut ranking = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let beaten: BTreeSet<i64> = remaining
            .iter()
            .flat_map(|winner| locked.get(winner).into_iter().flatten().copied())
            .collect();
        let index = remaining
            .iter()
            .position(|candidate| !beaten.contains(candidate))
            .unwrap_or(0);
        ranking.push(remaining.remove(index));
    }
    ranking
}

/// Whether `to` can be reached from `from` along locked edges.
fn reaches(locked: &BTreeMap<i64, Vec<i64>>, from: i64, to: i64) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from];
    while let Some(node) = stack.pop() {
        if node == to {
            return true;
        }
        if seen.insert(node) {
            stack.extend(locked.get(&node).into_iter().flatten().copied());
        }
    }
    false
}

/// Item → annotator → the annotator's (latest) usable judgment.
fn judgments_by_item(judgments: &[RankedJudgment]) -> BTreeMap<i64, BTreeMap<i64, &Judgment>> {
    let mut items: BTreeMap<i64, BTreeMap<i64, &Judgment>> = BTreeMap::new();
    for ranked in judgments {
        if is_usable(&ranked.judgment) {
            items
                .entry(ranked.item)
                .or_default()
                .insert(ranked.annotator, &ranked.judgment);
        }
    }
    items
}

/// Ranked, with one strength per adjacent pair and no repeated id.
fn is_usable(judgment: &Judgment) -> bool {
    let distinct: BTreeSet<i64> = judgment.ranking.iter().copied().collect();
    !judgment.not_rankable
        && !judgment.ranking.is_empty()
        && judgment.strengths.len() + 1 == judgment.ranking.len()
        && distinct.len() == judgment.ranking.len()
}

/// {(a, b) with a < b} → the signed strength of a over b.
fn signed_values(judgment: &Judgment) -> Vec<((i64, i64), i32)> {
    let mut values = Vec::new();
    for (higher, &above) in judgment.ranking.iter().enumerate() {
        for (lower, &below) in judgment.ranking.iter().enumerate().skip(higher + 1) {
            let magnitude = judgment.strength_between(higher, lower).magnitude();
            if above < below {
                values.push(((above, below), magnitude));
            } else {
                values.push(((below, above), -magnitude));
            }
        }
    }
    values
}

/// Candidate id → rank (0 for the best), candidates joined by tie steps sharing one.
fn tie_ranks(judgment: &Judgment) -> BTreeMap<i64, usize> {
    let mut rank = 0;
    let mut ranks = BTreeMap::new();
    for (position, &candidate) in judgment.ranking.iter().enumerate() {
        if position > 0 && judgment.strengths[position - 1].magnitude() > 0 {
            rank += 1;
        }
        ranks.insert(candidate, rank);
    }
    ranks
}

/// Kendall's τ-b between two rankings of an item, over the candidates both rank; `None` when either
/// ranks them all equal.
fn kendall_tau_b_between(first: &Judgment, second: &Judgment) -> Option<f64> {
    let first = tie_ranks(first);
    let second = tie_ranks(second);
    let (first, second): (Vec<usize>, Vec<usize>) = first
        .iter()
        .filter_map(|(candidate, &rank)| second.get(candidate).map(|&other| (rank, other)))
        .unzip();
    kendall_tau_b(&first, &second)
}

/// τ-b = (concordant − discordant) / √((n₀ − n₁)(n₀ − n₂)), n₀ the pairs, n₁ / n₂ those tied in
/// `first` / `second` (Kendall 1945).
fn kendall_tau_b(first: &[usize], second: &[usize]) -> Option<f64> {
    let (mut concordant, mut discordant) = (0_usize, 0_usize);
    let (mut pairs, mut tied_first, mut tied_second) = (0_usize, 0_usize, 0_usize);
    for i in 0..first.len() {
        for j in i + 1..first.len() {
            pairs += 1;
            let order_first = first[i].cmp(&first[j]);
            let order_second = second[i].cmp(&second[j]);
            tied_first += usize::from(order_first == Ordering::Equal);
            tied_second += usize::from(order_second == Ordering::Equal);
            if order_first != Ordering::Equal && order_second != Ordering::Equal {
                if order_first == order_second {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
        }
    }
    let untied_first = pairs - tied_first;
    let untied_second = pairs - tied_second;
    if untied_first == 0 || untied_second == 0 {
        return None;
    }
    let difference = concordant as f64 - discordant as f64;
    Some(difference / (untied_first as f64 * untied_second as f64).sqrt())
}

/// The δ² metric of Krippendorff's α.
#[derive(Debug, Clone, Copy)]
enum Metric {
    /// `δ²(c, k) = (Σ_{g=c}^{k} n_g − (n_c + n_k)/2)²`: distances between ranks, by how many
    /// values lie between.
    Ordinal,
    /// `δ²(c, k) = (c − k)²`.
    Interval,
}

/// Krippendorff's α over units of values (Krippendorff 2011, §C):
/// `α = 1 − (n − 1) Σ o_ck δ²_ck / Σ n_c n_k δ²_ck`, with `o` the coincidence matrix (each unit
/// of m values adds 1/(m − 1) per ordered pair of its values), `n_c` its marginals, `n = Σ n_c`.
/// Units with fewer than two values are dropped; `None` when no unit is left or every value is
/// the same (no expected disagreement).
fn krippendorff_alpha(units: &[Vec<i32>], metric: Metric) -> Option<f64> {
    let pairable: Vec<&Vec<i32>> = units.iter().filter(|unit| unit.len() >= 2).collect();
    let domain: Vec<i32> = pairable
        .iter()
        .flat_map(|unit| unit.iter().copied())
        .collect::<BTreeSet<i32>>()
        .into_iter()
        .collect();
    let index_of: BTreeMap<i32, usize> = domain
        .iter()
        .enumerate()
        .map(|(index, &value)| (value, index))
        .collect();
    // coincidences[c][k]: shape (V, V), V the distinct values.
    let mut coincidences = vec![vec![0.0_f64; domain.len()]; domain.len()];
    for unit in &pairable {
        let weight = 1.0 / (unit.len() - 1) as f64;
        let indices: Vec<usize> = unit
            .iter()
            .filter_map(|value| index_of.get(value).copied())
            .collect();
        for (i, &c) in indices.iter().enumerate() {
            for (j, &k) in indices.iter().enumerate() {
                if i != j {
                    coincidences[c][k] += weight;
                }
            }
        }
    }
    let marginals: Vec<f64> = coincidences.iter().map(|row| row.iter().sum()).collect();
    let total: f64 = marginals.iter().sum();
    let distance = |c: usize, k: usize| -> f64 {
        match metric {
            Metric::Interval => f64::from(domain[c] - domain[k]).powi(2),
            Metric::Ordinal => {
                let (low, high) = if c <= k { (c, k) } else { (k, c) };
                let between: f64 = marginals[low..=high].iter().sum();
                (between - f64::midpoint(marginals[c], marginals[k])).powi(2)
            }
        }
    };
    let (mut observed, mut expected) = (0.0, 0.0);
    for c in 0..domain.len() {
        for k in 0..domain.len() {
            let delta = distance(c, k);
            observed += coincidences[c][k] * delta;
            expected += marginals[c] * marginals[k] * delta;
        }
    }
    if expected <= 0.0 {
        return None;
    }
    Some(1.0 - (total - 1.0) * observed / expected)
}

fn per_annotator(
    items: &BTreeMap<i64, BTreeMap<i64, &Judgment>>,
    units: &BTreeMap<(i64, i64, i64), BTreeMap<i64, i32>>,
) -> Vec<AnnotatorAgreement> {
    // Item → (a, b) → the consensus's sign for a over b, for items two or more annotators judged:
    // the order of the ranked-pairs ranking, or 0 (a tie) where the head-to-head margin is 0 and
    // the ranking's order between the two is only the id tie-break.
    let consensus: BTreeMap<i64, BTreeMap<(i64, i64), i32>> = items
        .iter()
        .filter(|(_, by_annotator)| by_annotator.len() >= 2)
        .map(|(&item, by_annotator)| {
            let judgments: Vec<&Judgment> = by_annotator.values().copied().collect();
            let (candidates, margins) = head_to_head(&judgments);
            let positions: BTreeMap<i64, usize> = ranked_pairs(candidates, &margins)
                .into_iter()
                .enumerate()
                .map(|(position, candidate)| (candidate, position))
                .collect();
            let signs = margins
                .iter()
                .filter_map(|(&(a, b), &margin)| {
                    let sign = match (margin, positions.get(&a)?.cmp(positions.get(&b)?)) {
                        (0, _) => 0,
                        (_, Ordering::Less) => 1,
                        (_, _) => -1,
                    };
                    Some(((a, b), sign))
                })
                .collect();
            (item, signs)
        })
        .collect();
    // Annotator → (judged units, units compared with the consensus, agreeing ones).
    let mut counts: BTreeMap<i64, (usize, usize, usize)> = BTreeMap::new();
    for by_annotator in items.values() {
        for &annotator in by_annotator.keys() {
            counts.entry(annotator).or_default();
        }
    }
    for (&(item, a, b), values) in units {
        let consensus_sign = consensus
            .get(&item)
            .and_then(|signs| signs.get(&(a, b)).copied());
        for (&annotator, &value) in values {
            let entry = counts.entry(annotator).or_default();
            entry.0 += 1;
            if let Some(sign) = consensus_sign {
                entry.1 += 1;
                entry.2 += usize::from(value.signum() == sign);
            }
        }
    }
    counts
        .into_iter()
        .map(
            |(annotator, (judged_units, compared, agreeing))| AnnotatorAgreement {
                annotator,
                judged_units,
                agreement_with_consensus: ratio(agreeing, compared),
            },
        )
        .collect()
}

fn ratio(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use datasets::records::Strength;

    use super::*;
    use crate::judgment::PairStrength::{self, Level, Tie};

    fn judgment(ranking: &[i64], strengths: &[PairStrength]) -> Judgment {
        Judgment {
            ranking: ranking.to_vec(),
            strengths: strengths.to_vec(),
            all_bad: false,
            not_rankable: false,
            edited: None,
        }
    }

    /// A plain ranking: every step `better`.
    fn ranked(ranking: &[i64]) -> Judgment {
        judgment(
            ranking,
            &vec![Level(Strength::Better); ranking.len().saturating_sub(1)],
        )
    }

    fn consensus(rankings: &[Judgment]) -> Vec<i64> {
        consensus_ranking(&rankings.iter().collect::<Vec<_>>())
    }

    /// Three voters in a Condorcet cycle, plus two who rank 1 > 2 > 3:
    /// 1 > 2 > 3, 1 > 2 > 3, 1 > 2 > 3, 2 > 3 > 1, 3 > 1 > 2 (five voters).
    /// Head to head: 1 vs 2: 4–1 (margin 3); 2 vs 3: 4–1 (margin 3); 3 vs 1: 2–3, so 1 beats 3
    /// 3–2 (margin 1). Lock 1 > 2 (3, winner id 1 first), then 2 > 3 (3), then 1 > 3 (1, no cycle):
    /// 1, 2, 3.
    ///
    /// A pure cycle, 1 > 2 > 3, 2 > 3 > 1, 3 > 1 > 2: every margin is 1 (1 beats 2, 2 beats 3,
    /// 3 beats 1). In (winner, loser) order lock 1 > 2, 2 > 3; 3 > 1 would close the cycle and is
    /// skipped: 1, 2, 3. Relabel so the cycle runs the other way — 1 > 3 > 2, 3 > 2 > 1,
    /// 2 > 1 > 3: 1 beats 3, 3 beats 2, 2 beats 1, each by 1; locked in order (1,3), (2,1), then
    /// (3,2) closes 3 > 2 > 1 > 3 and is skipped: 2 > 1 > 3.
    #[test]
    fn ranked_pairs_resolves_condorcet_cycles() {
        assert_eq!(
            consensus(&[
                ranked(&[1, 2, 3]),
                ranked(&[1, 2, 3]),
                ranked(&[1, 2, 3]),
                ranked(&[2, 3, 1]),
                ranked(&[3, 1, 2]),
            ]),
            [1, 2, 3]
        );
        assert_eq!(
            consensus(&[ranked(&[1, 2, 3]), ranked(&[2, 3, 1]), ranked(&[3, 1, 2])]),
            [1, 2, 3]
        );
        assert_eq!(
            consensus(&[ranked(&[1, 3, 2]), ranked(&[3, 2, 1]), ranked(&[2, 1, 3])]),
            [2, 1, 3]
        );
    }

    /// The strongest majority wins over a weaker cycle: 7 voters, 4 candidates.
    /// 3 × (4 > 1 > 2 > 3), 2 × (2 > 3 > 4 > 1), 2 × (3 > 4 > 1 > 2). Margins: 4 beats 1 7–0
    /// (7); 1 beats 2 5–2 (3); 2 beats 3 5–2 (3); 3 beats 4 4–3 (1); 4 beats 2 5–2 (3);
    /// 3 beats 1 4–3 (1). Lock 4 > 1 (7), then the 3s in (winner, loser) order: 1 > 2, 2 > 3,
    /// 4 > 2; then 3 > 1 closes 1 > 2 > 3 > 1 and 3 > 4 closes 4 > 1 > 2 > 3 > 4: both skipped.
    /// Result 4, 1, 2, 3.
    #[test]
    fn ranked_pairs_locks_the_largest_margins_first() {
        let mut votes = vec![ranked(&[4, 1, 2, 3]); 3];
        votes.extend(vec![ranked(&[2, 3, 4, 1]); 2]);
        votes.extend(vec![ranked(&[3, 4, 1, 2]); 2]);
        assert_eq!(consensus(&votes), [4, 1, 2, 3]);
    }

    /// Ties vote for neither side; a pair nobody separates goes lower id first. One voter says
    /// 9 = 5 > 7, another 7 > 9 = 5: 9 vs 5 margin 0, 5 vs 7 and 9 vs 7 margin 0 too → 5, 7, 9.
    /// Add a third who says 9 > 5 = 7: 9 beats 5 and 7 by 1 → 9 first, then 5 before 7.
    #[test]
    fn ties_and_deterministic_order() {
        let first = judgment(&[9, 5, 7], &[Tie, Level(Strength::Better)]);
        let second = judgment(&[7, 9, 5], &[Level(Strength::Better), Tie]);
        assert_eq!(consensus(&[first.clone(), second.clone()]), [5, 7, 9]);
        let third = judgment(&[9, 5, 7], &[Level(Strength::SlightlyBetter), Tie]);
        assert_eq!(consensus(&[first, second, third]), [9, 5, 7]);
        assert!(consensus(&[]).is_empty());
    }

    /// Krippendorff (2011), §C's example: 4 observers, 12 units, values 1–5, missing data;
    /// the paper gives α = 0.815 (ordinal) and 0.849 (interval).
    #[test]
    fn krippendorff_2011_example() {
        let units = vec![
            vec![1, 1, 1],
            vec![2, 2, 3, 2],
            vec![3, 3, 3, 3],
            vec![3, 3, 3, 3],
            vec![2, 2, 2, 2],
            vec![1, 2, 3, 4],
            vec![4, 4, 4, 4],
            vec![1, 1, 2, 1],
            vec![2, 2, 2, 2],
            vec![5, 5, 5],
            vec![1, 1],
            vec![3],
        ];
        let ordinal = krippendorff_alpha(&units, Metric::Ordinal).unwrap();
        let interval = krippendorff_alpha(&units, Metric::Interval).unwrap();
        assert!((ordinal - 0.815).abs() < 5e-4, "{ordinal}");
        assert!((interval - 0.849).abs() < 5e-4, "{interval}");
        assert_eq!(
            krippendorff_alpha(&[vec![2, 2], vec![2, 2, 2]], Metric::Ordinal),
            None
        );
        assert_eq!(krippendorff_alpha(&[vec![2]], Metric::Interval), None);
    }

    /// Two annotators, one item, candidates 1, 2, 3.
    /// A: 1 ≫ 2 > 3 → values (1,2) +4, (1,3) +4, (2,3) +3.
    /// B: 2 > 1 = 3 → values (1,2) −3, (1,3) 0, (2,3) +3.
    /// Signs agree on (2,3) only: pairwise 1/3. τ-b: ranks A (0,1,2), B (1,0,1): pairs (1,2)
    /// discordant, (1,3) tied in B, (2,3) concordant → (1 − 1)/√(3·2) = 0.
    /// Consensus: 1 vs 2 margin 0 → 1 > 2 by id; 2 vs 3 margin 2; 1 vs 3 margin 1:
    /// lock 2 > 3, 1 > 3, 1 > 2 → 1, 2, 3, compared as 1 = 2 (margin 0), 1 > 3, 2 > 3.
    /// A agrees on (1,3) and (2,3); B on (2,3) only.
    #[test]
    fn a_report_by_hand() {
        let judgments = vec![
            RankedJudgment {
                item: 1,
                annotator: 10,
                judgment: judgment(
                    &[1, 2, 3],
                    &[
                        Level(Strength::SignificantlyBetter),
                        Level(Strength::Better),
                    ],
                ),
            },
            RankedJudgment {
                item: 1,
                annotator: 20,
                judgment: judgment(&[2, 1, 3], &[Level(Strength::Better), Tie]),
            },
            RankedJudgment {
                item: 2,
                annotator: 20,
                judgment: Judgment {
                    ranking: Vec::new(),
                    strengths: Vec::new(),
                    all_bad: false,
                    not_rankable: true,
                    edited: None,
                },
            },
        ];
        let report = agreement_report(&judgments);
        assert_eq!(report.pairwise_comparisons, 3);
        assert_eq!(report.pairwise_agreement, Some(1.0 / 3.0));
        assert_eq!(report.pairable_units, 3);
        assert_eq!(report.kendall_pairs, 1);
        assert_eq!(report.kendall_tau, Some(0.0));
        assert_eq!(
            report.per_annotator,
            [
                AnnotatorAgreement {
                    annotator: 10,
                    judged_units: 3,
                    agreement_with_consensus: Some(2.0 / 3.0),
                },
                AnnotatorAgreement {
                    annotator: 20,
                    judged_units: 3,
                    agreement_with_consensus: Some(1.0 / 3.0),
                },
            ]
        );
        // Interval α by hand: values per unit {4, −3}, {4, 0}, {3, 3}; each unit adds 1 to
        // o[c][k] and o[k][c]. n = 6, marginals: 4 → 2, −3 → 1, 0 → 1, 3 → 2.
        // Σ o δ² = 2·49 + 2·16 + 0 = 130. Σ n_c n_k δ² over ordered pairs:
        // (4,−3) 2·1·49, (4,0) 2·1·16, (4,3) 2·2·1, (−3,0) 1·1·9, (−3,3) 1·2·36, (0,3) 1·2·9,
        // each twice: 2·(98 + 32 + 4 + 9 + 72 + 18) = 466. α = 1 − 5·130/466.
        let interval = report.krippendorff_alpha_interval.unwrap();
        assert!(
            (interval - (1.0 - 5.0 * 130.0 / 466.0)).abs() < 1e-12,
            "{interval}"
        );
    }

    /// Two annotators who both say 1 = 2 > 3 agree with the consensus everywhere, the tie
    /// included, though the consensus ranking lists 1 before 2.
    #[test]
    fn identical_ties_agree_with_the_consensus() {
        let tied = judgment(&[2, 1, 3], &[Tie, Level(Strength::Better)]);
        let judgments: Vec<RankedJudgment> = [1, 2]
            .into_iter()
            .map(|annotator| RankedJudgment {
                item: 4,
                annotator,
                judgment: tied.clone(),
            })
            .collect();
        assert_eq!(consensus(&[tied.clone(), tied]), [1, 2, 3]);
        let report = agreement_report(&judgments);
        assert_eq!(report.pairwise_agreement, Some(1.0));
        for annotator in &report.per_annotator {
            assert_eq!(annotator.agreement_with_consensus, Some(1.0));
        }
    }

    #[test]
    fn nothing_to_compare() {
        let report = agreement_report(&[RankedJudgment {
            item: 1,
            annotator: 1,
            judgment: ranked(&[3, 1, 2]),
        }]);
        assert_eq!(report.pairwise_agreement, None);
        assert_eq!(report.pairwise_comparisons, 0);
        assert_eq!(report.krippendorff_alpha_ordinal, None);
        assert_eq!(report.krippendorff_alpha_interval, None);
        assert_eq!(report.kendall_tau, None);
        assert_eq!(
            report.per_annotator,
            [AnnotatorAgreement {
                annotator: 1,
                judged_units: 3,
                agreement_with_consensus: None,
            }]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["kendall_tau"].is_null());
    }
}
