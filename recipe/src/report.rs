//! A round's report: `report.md` (every stage's time, held-out accuracy and own metrics, links to
//! the loss plots, the comparison with the previous round), `accuracy.svg` (accuracy after each
//! stage) and `report.json` (the same, for the next round's comparison and for scripts).

use std::fmt::Write as _;
use std::path::Path;

use crate::error::RecipeError;
use crate::evaluate::Accuracy;
use crate::round::RoundSummary;

/// Writes `report.md`, `accuracy.svg` and `report.json` into `directory`.
pub fn write(
    summary: &RoundSummary,
    previous: Option<&RoundSummary>,
    directory: &Path,
) -> Result<(), RecipeError> {
    let json_path = directory.join("report.json");
    let json = serde_json::to_string_pretty(summary)
        .map_err(|error| RecipeError::Config(error.to_string()))?;
    std::fs::write(&json_path, json).map_err(RecipeError::io(&json_path))?;
    let accuracies: Vec<(String, Accuracy)> = summary
        .policy_accuracy
        .iter()
        .map(|accuracy| ("starting policy".to_owned(), *accuracy))
        .chain(summary.stages.iter().filter_map(|stage| {
            stage
                .accuracy
                .map(|accuracy| (stage.name.clone(), accuracy))
        }))
        .collect();
    if !accuracies.is_empty() {
        let svg_path = directory.join("accuracy.svg");
        std::fs::write(&svg_path, accuracy_svg(&accuracies)).map_err(RecipeError::io(&svg_path))?;
    }
    let markdown_path = directory.join("report.md");
    std::fs::write(&markdown_path, markdown(summary, previous, directory))
        .map_err(RecipeError::io(&markdown_path))
}

fn percent(accuracy: Option<Accuracy>) -> String {
    accuracy.map_or_else(
        || "—".to_owned(),
        |accuracy| {
            format!(
                "{:.1}% ({}/{})",
                100.0 * accuracy.fraction(),
                accuracy.correct,
                accuracy.total
            )
        },
    )
}

/// The report's markdown.
#[must_use]
pub fn markdown(
    summary: &RoundSummary,
    previous: Option<&RoundSummary>,
    directory: &Path,
) -> String {
    let mut text = String::from("# Round report\n\n");
    let relative = |path: &Path| {
        path.strip_prefix(directory)
            .unwrap_or(path)
            .display()
            .to_string()
    };
    let _ = writeln!(
        text,
        "Starting policy held-out accuracy: {}\n",
        percent(summary.policy_accuracy)
    );
    text.push_str("| stage | seconds | held-out accuracy | output | loss plot |\n| --- | --- | --- | --- | --- |\n");
    for stage in &summary.stages {
        let _ = writeln!(
            text,
            "| {} | {:.0} | {} | {} | {} |",
            stage.name,
            stage.seconds,
            percent(stage.accuracy),
            stage
                .model
                .as_deref()
                .map_or_else(|| "—".to_owned(), |model| format!("`{}`", relative(model))),
            stage
                .loss_plot
                .as_deref()
                .filter(|plot| plot.is_file())
                .map_or_else(|| "—".to_owned(), |plot| format!("![]({})", relative(plot))),
        );
    }
    if directory.join("accuracy.svg").is_file() {
        text.push_str("\n![held-out accuracy after each stage](accuracy.svg)\n");
    }
    if let Some(previous) = previous {
        text.push_str("\n## Compared with the previous round\n\n| stage | previous | this round |\n| --- | --- | --- |\n");
        let _ = writeln!(
            text,
            "| starting policy | {} | {} |",
            percent(previous.policy_accuracy),
            percent(summary.policy_accuracy)
        );
        for stage in &summary.stages {
            let before = previous
                .stages
                .iter()
                .find(|earlier| earlier.name == stage.name)
                .and_then(|earlier| earlier.accuracy);
            if before.is_some() || stage.accuracy.is_some() {
                let _ = writeln!(
                    text,
                    "| {} | {} | {} |",
                    stage.name,
                    percent(before),
                    percent(stage.accuracy)
                );
            }
        }
    }
    text.push_str("\n## Each stage's own summary\n\n");
    for stage in &summary.stages {
        let _ = writeln!(
            text,
            "### {}\n\n```json\n{}\n```\n",
            stage.name,
            serde_json::to_string_pretty(&stage.summary).unwrap_or_default()
        );
    }
    text
}

/// A bar chart of held-out accuracy after each stage.
#[must_use]
pub fn accuracy_svg(accuracies: &[(String, Accuracy)]) -> String {
    const BAR: f64 = 60.0;
    const HEIGHT: f64 = 200.0;
    let width = 40.0 + BAR * 1.5 * accuracies.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"10\">\n",
        HEIGHT + 80.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"10\" y=\"14\" font-size=\"12\">held-out accuracy after each stage</text>"
    );
    for (index, (name, accuracy)) in accuracies.iter().enumerate() {
        let x = 30.0 + index as f64 * BAR * 1.5;
        let height = HEIGHT * accuracy.fraction();
        let top = 30.0 + HEIGHT - height;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{top}\" width=\"{BAR}\" height=\"{height}\" fill=\"#4878a8\"/>\n\
             <text x=\"{x}\" y=\"{}\">{:.1}%</text>\n\
             <text x=\"{x}\" y=\"{}\" transform=\"rotate(20 {x} {})\">{}</text>",
            top - 3.0,
            100.0 * accuracy.fraction(),
            HEIGHT + 45.0,
            HEIGHT + 45.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
