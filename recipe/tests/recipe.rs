//! The round's config files parse, and the report and the demo's table say what happened.

use std::path::PathBuf;

use recipe::demo::{StageRow, table};
use recipe::evaluate::{Accuracy, PromptStyle};
use recipe::round::{RoundSummary, StageOutcome};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn every_round_config_parses() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repository().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("round-")
            && path
                .extension()
                .is_some_and(|extension| extension == "toml")
        {
            let (config, _): (recipe::RoundConfig, String) =
                training::config::load_config(&path, &[])
                    .unwrap_or_else(|error| panic!("{name}: {error}"));
            config.reward.training.validate().unwrap();
            config.sft.training.validate().unwrap();
            config.dpo.training.validate().unwrap();
            checked += 1;
        }
    }
    assert!(checked >= 1, "no configs/round-*.toml");
}

#[test]
fn an_unknown_round_key_is_named() {
    let path = repository().join("configs/round-tiny.toml");
    let error = training::config::load_config::<recipe::RoundConfig>(
        &path,
        &["rejection_sampling.sampels=4".to_owned()],
    )
    .unwrap_err();
    assert!(error.to_string().contains("sampels"), "{error}");
}

fn accuracy(correct: usize, total: usize) -> Accuracy {
    Accuracy { correct, total }
}

/// 30/100 → 45/100 is +15.0 points; the standard error of 45% on 100 questions is
/// √(0.45·0.55/100) = 4.97%. An average at 40% of runs whose mean is 37.5% is +2.5 points.
#[test]
fn the_table_shows_each_change_and_its_standard_error() {
    let row = |stage: &str, correct| StageRow {
        stage: stage.to_owned(),
        model: PathBuf::from("m"),
        style: PromptStyle::Chat,
        accuracy: accuracy(correct, 100),
        seconds: 1.0,
        baseline: None,
    };
    let mut average = row("average", 40);
    average.baseline = Some(("the DPO runs' mean".to_owned(), 0.375));
    let text = table(&[row("SFT", 30), row("DPO", 45), average]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[2].contains("30.0% (30/100)") && lines[2].contains("| — |"));
    assert!(lines[3].contains("45.0% (45/100)") && lines[3].contains("+15.0 pts"));
    assert!(lines[3].contains("| 5.0 |"), "{}", lines[3]);
    assert!(
        lines[4].contains("+2.5 pts vs the DPO runs' mean"),
        "{}",
        lines[4]
    );
}

#[test]
fn the_report_compares_with_the_previous_round() {
    let directory = tempfile::tempdir().unwrap();
    let stage = |correct| StageOutcome {
        name: "DPO (seed 0)".to_owned(),
        model: Some(directory.path().join("dpo-seed0/final")),
        seconds: 2.0,
        summary: serde_json::json!({"steps": 3}),
        accuracy: Some(accuracy(correct, 10)),
        loss_plot: None,
    };
    let summary = |correct| RoundSummary {
        policy_accuracy: Some(accuracy(1, 10)),
        stages: vec![stage(correct)],
        export: directory.path().join("export"),
        report: directory.path().join("report.md"),
    };
    let previous = summary(2);
    recipe::report::write(&summary(4), Some(&previous), directory.path()).unwrap();
    let text = std::fs::read_to_string(directory.path().join("report.md")).unwrap();
    assert!(
        text.contains("| DPO (seed 0) | 2 | 40.0% (4/10) | `dpo-seed0/final` | — |"),
        "{text}"
    );
    assert!(
        text.contains("| DPO (seed 0) | 20.0% (2/10) | 40.0% (4/10) |"),
        "{text}"
    );
    assert!(text.contains("accuracy.svg"));
    let svg = std::fs::read_to_string(directory.path().join("accuracy.svg")).unwrap();
    assert!(svg.contains("40.0%") && svg.contains("10.0%"));
    let reread = recipe::round::read_summary(&directory.path().join("report.json")).unwrap();
    assert_eq!(reread.stages[0].accuracy, Some(accuracy(4, 10)));
}
