//! Parity of `labeling::agreement` with reference implementations: the fixture
//! (`tests/fixtures/agreement.json`, written by `dev/agreement_fixtures.py`) holds judgments and
//! the figures the `PyPI` package `krippendorff` (α, ordinal and interval) and
//! `scipy.stats.kendalltau` (τ-b) give for them; the pairwise agreement is counted there directly.

use labeling::agreement::{RankedJudgment, agreement_report};
use serde::Deserialize;

const TOLERANCE: f64 = 1e-9;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    judgments: Vec<RankedJudgment>,
    expected: Expected,
}

#[derive(Deserialize)]
struct Expected {
    pairwise_agreement: Option<f64>,
    pairwise_comparisons: usize,
    krippendorff_alpha_ordinal: Option<f64>,
    krippendorff_alpha_interval: Option<f64>,
    pairable_units: usize,
    kendall_tau: Option<f64>,
    kendall_pairs: usize,
}

fn assert_close(case: &str, figure: &str, actual: Option<f64>, expected: Option<f64>) {
    match (actual, expected) {
        (Some(actual), Some(expected)) => assert!(
            (actual - expected).abs() < TOLERANCE,
            "{case}: {figure} is {actual}, the reference says {expected}"
        ),
        (None, None) => {}
        _ => panic!("{case}: {figure} is {actual:?}, the reference says {expected:?}"),
    }
}

#[test]
fn agreement_matches_krippendorff_and_scipy() {
    let text = include_str!("fixtures/agreement.json");
    let fixture: Fixture = serde_json::from_str(text).expect("the fixture parses");
    assert!(fixture.cases.len() >= 4, "the fixture lost its cases");
    for case in &fixture.cases {
        let name = case.name.as_str();
        let expected = &case.expected;
        let report = agreement_report(&case.judgments);
        assert_eq!(
            report.pairwise_comparisons, expected.pairwise_comparisons,
            "{name}: comparisons"
        );
        assert_eq!(
            report.pairable_units, expected.pairable_units,
            "{name}: pairable units"
        );
        assert_eq!(
            report.kendall_pairs, expected.kendall_pairs,
            "{name}: τ pairs"
        );
        assert_close(
            name,
            "pairwise agreement",
            report.pairwise_agreement,
            expected.pairwise_agreement,
        );
        assert_close(
            name,
            "α ordinal",
            report.krippendorff_alpha_ordinal,
            expected.krippendorff_alpha_ordinal,
        );
        assert_close(
            name,
            "α interval",
            report.krippendorff_alpha_interval,
            expected.krippendorff_alpha_interval,
        );
        assert_close(name, "τ-b", report.kendall_tau, expected.kendall_tau);
        if name == "perfect" {
            for annotator in &report.per_annotator {
                assert_eq!(
                    annotator.agreement_with_consensus,
                    Some(1.0),
                    "{name}: annotator {} disagrees with the consensus of identical judgments",
                    annotator.annotator
                );
            }
        }
        // The report is what the admin page serializes.
        let json = serde_json::to_value(&report).expect("the report serializes");
        assert_eq!(
            json["pairwise_comparisons"].as_u64(),
            Some(expected.pairwise_comparisons as u64)
        );
    }
}
