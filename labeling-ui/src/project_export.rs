//! A project's annotations as TRL conversational preference JSONL — shared by
//! `herd label export` and the admin page's download. Annotations are read a page at a time in
//! id order, each item's prompt and candidates once, and each line is handed to a sink as soon
//! as it is made.

use std::collections::HashMap;

use datasets::dialogue::Dialogue;
use datasets::message::join_problems;

use crate::db::Database;
use crate::error::StoreError;
use crate::export::{ExportFilter, ExportItem, preference_records};

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExportSummary {
    /// Annotations read.
    pub annotations: usize,
    /// Preference records written.
    pub records: usize,
    /// Over-quota annotations left out.
    pub over_quota_skipped: usize,
}

/// An item's import id, prompt and `(candidate id, content)` list, read once per export.
type CachedItem = (String, Dialogue, Vec<(i64, String)>);

/// Writes every record of the project through `sink` (one JSON object per call, no newline).
pub async fn export_project(
    db: &Database,
    project_id: i64,
    filter: &ExportFilter,
    include_over_quota: bool,
    mut sink: impl FnMut(String) -> Result<(), StoreError>,
) -> Result<ExportSummary, StoreError> {
    db.project(project_id).await?;
    let mut summary = ExportSummary::default();
    let mut items: HashMap<i64, CachedItem> = HashMap::new();
    let mut after = 0;
    loop {
        let page = db.annotations_page(project_id, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for annotation in page {
            summary.annotations += 1;
            if annotation.over_quota && !include_over_quota {
                summary.over_quota_skipped += 1;
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(entry) =
                items.entry(annotation.item_id)
            {
                let item = db.item(annotation.item_id).await?;
                let prompt = Dialogue::from_json(&item.prompt, "prompt").map_err(|problems| {
                    StoreError::Invalid(format!(
                        "item {}: stored prompt: {}",
                        item.external_id,
                        join_problems(&problems)
                    ))
                })?;
                entry.insert((item.external_id, prompt, item.candidates));
            }
            let Some((external_id, prompt, candidates)) = items.get(&annotation.item_id) else {
                continue;
            };
            let item = ExportItem {
                item_id: external_id,
                prompt,
                candidates,
            };
            for record in
                preference_records(&item, &annotation.judgment, &annotation.annotator, filter)
            {
                sink(record.to_json().to_string())?;
                summary.records += 1;
            }
        }
    }
    Ok(summary)
}
