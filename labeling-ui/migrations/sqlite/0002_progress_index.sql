-- The progress line counts an annotator's own annotations on every claim and submit; without
-- this index that count scans the project's annotations (measured by benches/load.rs).
CREATE INDEX annotations_annotator ON annotations (project_id, annotator_id);
