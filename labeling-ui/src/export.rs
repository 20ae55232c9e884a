//! Stored judgments → TRL conversational preference records (`datasets::records::PreferenceRecord`),
//! the lines of `export.jsonl` that the reward-model and DPO trainers read as they are.
//!
//! One judgment ranks n candidates; it becomes one record per ranked pair (position i above
//! position j, i < j), in the order (0,1), (0,2), …, (0,n−1), (1,2), …, as `InstructGPT` expands a
//! ranking of K responses into K(K−1)/2 comparisons (Ouyang et al. 2022, §3.5). The pair's level is
//! [`Judgment::strength_between`] (the strongest adjacent step between the two, Llama 3 §4.2.1),
//! its `margin` the level's default margin. A pair joined only by tie steps carries no preference
//! and is skipped, as is a pair of candidates with identical text (it teaches nothing, and the
//! record parser refuses it).
//!
//! The edit of the best candidate (Llama 3's edited > chosen > rejected) is attached to exactly one
//! record: the first emitted one whose chosen is the edited candidate — the (ranking[0],
//! ranking[1]) record unless that pair is a tie or filtered out. A trainer that expands each record
//! into edited > chosen > rejected then sees "edited > chosen" once per judgment, not once per
//! rejected candidate; "edited > every candidate" still follows from the rest of the ranking. An
//! edit identical to the text it started from is no edit and is dropped (the parser refuses it
//! too). When no record with the edited candidate as chosen survives, the edit is not exported.
//!
//! Judgments marked `not_rankable` give nothing. `all_bad` ones give nothing unless the filter asks
//! for them or they carry an edit: the edit is better than every candidate, so the ranking under it
//! is still worth learning from.

use datasets::dialogue::Dialogue;
use datasets::message::{Message, Role};
use datasets::records::{PreferenceRecord, Strength};
use serde_json::json;

use crate::judgment::{Judgment, PairStrength};

/// One item as the export sees it.
#[derive(Debug, Clone, Copy)]
pub struct ExportItem<'a> {
    /// The item's external id (becomes `item_id`).
    pub item_id: &'a str,
    /// The dialogue the candidates answer; ends with a user or tool-result message.
    pub prompt: &'a Dialogue,
    /// `(candidate id, assistant content)` for every candidate of the item.
    pub candidates: &'a [(i64, String)],
}

/// Which pairs leave in the export (the query of `GET /admin/projects/{id}/export.jsonl`).
#[derive(Debug, Clone, Default)]
pub struct ExportFilter {
    /// Keep only pairs with one of these levels; `None` keeps all four.
    pub strengths: Option<Vec<Strength>>,
    /// Keep judgments whose candidates are all bad even when they carry no edit.
    pub include_all_bad: bool,
}

impl ExportFilter {
    /// A filter from strength spellings (each may be comma-separated; none = all four levels).
    pub fn from_strengths<'a>(
        texts: impl IntoIterator<Item = &'a str>,
        include_all_bad: bool,
    ) -> Result<ExportFilter, String> {
        let mut levels = Vec::new();
        for text in texts.into_iter().flat_map(|value| value.split(',')) {
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            levels.push(Strength::parse(text).ok_or_else(|| {
                format!(
                    "strength: unknown level {text:?} (significantly_better, better, \
                     slightly_better, marginally_better)"
                )
            })?);
        }
        Ok(ExportFilter {
            strengths: (!levels.is_empty()).then_some(levels),
            include_all_bad,
        })
    }

    fn keeps(&self, level: Strength) -> bool {
        self.strengths
            .as_ref()
            .is_none_or(|levels| levels.contains(&level))
    }
}

/// The preference records of one annotator's judgment of `item`, in ranking order (see the module
/// header for the rules). A ranked id that is not among `item.candidates` (the judgment was
/// validated against them, so only a corrupt database gives one) contributes no pair.
#[must_use]
pub fn preference_records(
    item: &ExportItem<'_>,
    judgment: &Judgment,
    annotator_id: &str,
    filter: &ExportFilter,
) -> Vec<PreferenceRecord> {
    if judgment.not_rankable {
        return Vec::new();
    }
    let content_of = |id: i64| {
        item.candidates
            .iter()
            .find(|(candidate, _)| *candidate == id)
            .map(|(_, content)| content.as_str())
    };
    let edit = judgment
        .edited
        .as_ref()
        .filter(|edit| content_of(edit.candidate_id) != Some(edit.content.as_str()));
    if judgment.all_bad && !filter.include_all_bad && edit.is_none() {
        return Vec::new();
    }
    let mut edit = edit;
    let mut records = Vec::new();
    let ranking = &judgment.ranking;
    for (higher, &chosen_id) in ranking.iter().enumerate() {
        for (lower, &rejected_id) in ranking.iter().enumerate().skip(higher + 1) {
            // A strength list shorter than the ranking (never valid) reads as ties, not a panic.
            let step = if lower < judgment.strengths.len() + 1 {
                judgment.strength_between(higher, lower)
            } else {
                PairStrength::Tie
            };
            let PairStrength::Level(level) = step else {
                continue;
            };
            let (Some(chosen), Some(rejected)) = (content_of(chosen_id), content_of(rejected_id))
            else {
                continue;
            };
            if chosen == rejected || !filter.keeps(level) {
                continue;
            }
            let edited = edit
                .take_if(|edit| edit.candidate_id == chosen_id)
                .map(|edit| vec![Message::new(Role::Assistant, edit.content.clone())]);
            records.push(PreferenceRecord {
                id: None,
                prompt: item.prompt.clone(),
                chosen: vec![Message::new(Role::Assistant, chosen)],
                rejected: vec![Message::new(Role::Assistant, rejected)],
                edited,
                strength: Some(level),
                margin: Some(level.margin()),
                item_id: Some(item.item_id.to_owned()),
                annotator_id: Some(annotator_id.to_owned()),
                metadata: Some(json!({
                    "chosen_candidate_id": chosen_id,
                    "rejected_candidate_id": rejected_id,
                })),
            });
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use datasets::records::Record;

    use super::*;
    use crate::judgment::Edit;

    use PairStrength::{Level, Tie};
    use Strength::{Better, MarginallyBetter, SignificantlyBetter, SlightlyBetter};

    fn prompt() -> Dialogue {
        Dialogue::new(vec![
            Message::new(Role::System, "Answer briefly."),
            Message::new(Role::User, "What is the capital of France?"),
        ])
        .unwrap()
    }

    fn candidates() -> Vec<(i64, String)> {
        vec![
            (10, "Paris.".to_owned()),
            (11, "Lyon.".to_owned()),
            (12, "It is Paris, on the Seine.".to_owned()),
            (13, "France.".to_owned()),
        ]
    }

    fn judgment(ranking: &[i64], strengths: &[PairStrength]) -> Judgment {
        Judgment {
            ranking: ranking.to_vec(),
            strengths: strengths.to_vec(),
            all_bad: false,
            not_rankable: false,
            edited: None,
        }
    }

    fn export(judgment: &Judgment, filter: &ExportFilter) -> Vec<PreferenceRecord> {
        let prompt = prompt();
        let candidates = candidates();
        let item = ExportItem {
            item_id: "item-7",
            prompt: &prompt,
            candidates: &candidates,
        };
        let records = preference_records(&item, judgment, "annotator-3", filter);
        for record in &records {
            let json = record.to_json();
            let parsed = Record::from_json(&json).unwrap_or_else(|problems| {
                panic!("the trainers' parser refuses {json}: {problems:?}")
            });
            assert_eq!(parsed, Record::Preference(record.clone()));
        }
        records
    }

    /// (chosen id, rejected id, level, has an edit) of each record.
    fn summary(records: &[PreferenceRecord]) -> Vec<(i64, i64, Strength, bool)> {
        records
            .iter()
            .map(|record| {
                let metadata = record.metadata.as_ref().unwrap();
                (
                    metadata["chosen_candidate_id"].as_i64().unwrap(),
                    metadata["rejected_candidate_id"].as_i64().unwrap(),
                    record.strength.unwrap(),
                    record.edited.is_some(),
                )
            })
            .collect()
    }

    /// Ranking 12 > 10 > 11 with steps [`better`, `slightly_better`]: (12,10) better; (12,11) the
    /// strongest step between them, better; (10,11) `slightly_better`.
    #[test]
    fn every_ranked_pair_with_its_strongest_step() {
        let records = export(
            &judgment(&[12, 10, 11], &[Level(Better), Level(SlightlyBetter)]),
            &ExportFilter::default(),
        );
        assert_eq!(
            summary(&records),
            [
                (12, 10, Better, false),
                (12, 11, Better, false),
                (10, 11, SlightlyBetter, false),
            ]
        );
        let first = &records[0];
        assert_eq!(
            first.chosen,
            [Message::new(Role::Assistant, "It is Paris, on the Seine.")]
        );
        assert_eq!(first.rejected, [Message::new(Role::Assistant, "Paris.")]);
        assert_eq!(first.margin, Some(2.0 / 3.0));
        assert_eq!(first.item_id.as_deref(), Some("item-7"));
        assert_eq!(first.annotator_id.as_deref(), Some("annotator-3"));
        assert_eq!(first.prompt, prompt());
        assert_eq!(records[2].margin, Some(1.0 / 3.0));
    }

    /// 12 = 10 ≫ 11 = 13: the two tie pairs go; (12,11), (12,13), (10,11), (10,13) stay, each
    /// significantly better (the ≫ step lies between every such pair).
    #[test]
    fn tie_pairs_are_skipped() {
        let records = export(
            &judgment(&[12, 10, 11, 13], &[Tie, Level(SignificantlyBetter), Tie]),
            &ExportFilter::default(),
        );
        assert_eq!(
            summary(&records),
            [
                (12, 11, SignificantlyBetter, false),
                (12, 13, SignificantlyBetter, false),
                (10, 11, SignificantlyBetter, false),
                (10, 13, SignificantlyBetter, false),
            ]
        );
        assert_eq!(records[0].margin, Some(1.0));
    }

    /// 10 > 11 ≫ 12 > 13 with steps [marginally, significantly, slightly]: pairs (10,11) marginal,
    /// (10,12) sig, (10,13) sig, (11,12) sig, (11,13) sig, (12,13) slightly. Keeping only
    /// `significantly_better` and `slightly_better` drops the marginal one.
    #[test]
    fn the_filter_keeps_the_chosen_levels() {
        let ranked = judgment(
            &[10, 11, 12, 13],
            &[
                Level(MarginallyBetter),
                Level(SignificantlyBetter),
                Level(SlightlyBetter),
            ],
        );
        assert_eq!(export(&ranked, &ExportFilter::default()).len(), 6);
        let filter = ExportFilter {
            strengths: Some(vec![SignificantlyBetter, SlightlyBetter]),
            include_all_bad: false,
        };
        assert_eq!(
            summary(&export(&ranked, &filter)),
            [
                (10, 12, SignificantlyBetter, false),
                (10, 13, SignificantlyBetter, false),
                (11, 12, SignificantlyBetter, false),
                (11, 13, SignificantlyBetter, false),
                (12, 13, SlightlyBetter, false),
            ]
        );
    }

    #[test]
    fn all_bad_needs_the_filter_or_an_edit() {
        let mut bad = judgment(&[10, 13], &[Level(Better)]);
        bad.all_bad = true;
        assert!(export(&bad, &ExportFilter::default()).is_empty());
        let with_all_bad = ExportFilter {
            strengths: None,
            include_all_bad: true,
        };
        assert_eq!(
            summary(&export(&bad, &with_all_bad)),
            [(10, 13, Better, false)]
        );
        bad.edited = Some(Edit {
            candidate_id: 10,
            content: "Paris is the capital of France.".to_owned(),
        });
        let records = export(&bad, &ExportFilter::default());
        assert_eq!(summary(&records), [(10, 13, Better, true)]);
        assert_eq!(
            records[0].edited,
            Some(vec![Message::new(
                Role::Assistant,
                "Paris is the capital of France."
            )])
        );
        // An "edit" that changes nothing is no edit.
        bad.edited = Some(Edit {
            candidate_id: 10,
            content: "Paris.".to_owned(),
        });
        assert!(export(&bad, &ExportFilter::default()).is_empty());
    }

    #[test]
    fn not_rankable_gives_nothing() {
        let skipped = Judgment {
            ranking: Vec::new(),
            strengths: Vec::new(),
            all_bad: false,
            not_rankable: true,
            edited: None,
        };
        let filter = ExportFilter {
            strengths: None,
            include_all_bad: true,
        };
        assert!(export(&skipped, &filter).is_empty());
    }

    /// The edit rides on (ranking[0], ranking[1]) only; when that pair is a tie it rides on the
    /// first record whose chosen is ranking[0].
    #[test]
    fn the_edit_is_attached_once() {
        let edit = Edit {
            candidate_id: 12,
            content: "Paris, on the Seine.".to_owned(),
        };
        let mut ranked = judgment(&[12, 10, 11], &[Level(Better), Level(SlightlyBetter)]);
        ranked.edited = Some(edit.clone());
        assert_eq!(
            summary(&export(&ranked, &ExportFilter::default())),
            [
                (12, 10, Better, true),
                (12, 11, Better, false),
                (10, 11, SlightlyBetter, false),
            ]
        );
        let mut tied = judgment(&[12, 10, 11], &[Tie, Level(SlightlyBetter)]);
        tied.edited = Some(edit);
        assert_eq!(
            summary(&export(&tied, &ExportFilter::default())),
            [
                (12, 11, SlightlyBetter, true),
                (10, 11, SlightlyBetter, false),
            ]
        );
    }

    #[test]
    fn identical_texts_and_unknown_ids_give_no_pair() {
        let prompt = prompt();
        let candidates = vec![
            (1, "Paris.".to_owned()),
            (2, "Paris.".to_owned()),
            (3, "Lyon.".to_owned()),
        ];
        let item = ExportItem {
            item_id: "item-8",
            prompt: &prompt,
            candidates: &candidates,
        };
        let ranked = judgment(
            &[1, 2, 3, 99],
            &[Level(Better), Level(Better), Level(Better)],
        );
        let records = preference_records(&item, &ranked, "a", &ExportFilter::default());
        assert_eq!(
            summary(&records),
            [(1, 3, Better, false), (2, 3, Better, false)]
        );
    }
}
