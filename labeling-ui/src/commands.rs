//! What `herd label create-admin | import | export` do, over the same database settings as
//! `herd label serve`. The binary only parses arguments and prints.

use std::io::Write;
use std::path::Path;

use crate::db::Database;
use crate::error::StoreError;
use crate::export::ExportFilter;
use crate::import::parse_file;
use crate::project_export::{ExportSummary, export_project};
use crate::store::items::ImportSummary;
use crate::store::projects::NewProject;
use crate::store::users::{Role, User, hash_password, validate_password};
use crate::web::Clock;

/// Creates an admin account (the first one, or another).
pub async fn create_admin(
    db: &Database,
    username: &str,
    password: &str,
) -> Result<User, StoreError> {
    validate_password(password)?;
    let hash = hash_password(password)?;
    db.create_user(
        username,
        &hash,
        Role::Admin,
        None,
        Clock::default().now_ms(),
    )
    .await
}

/// Creates a user with a role.
pub async fn create_user(
    db: &Database,
    username: &str,
    password: &str,
    role: Role,
) -> Result<User, StoreError> {
    validate_password(password)?;
    let hash = hash_password(password)?;
    db.create_user(username, &hash, role, None, Clock::default().now_ms())
        .await
}

/// Settings for a project that an import creates.
#[derive(Debug, Clone, Copy)]
pub struct ProjectDefaults {
    /// Annotations per item.
    pub overlap: i64,
    /// Lease length.
    pub lease_seconds: i64,
}

/// Imports a JSONL file into the project named `project`, creating it if needed.
pub async fn import_file(
    db: &Database,
    project: &str,
    path: &Path,
    defaults: ProjectDefaults,
) -> Result<(i64, ImportSummary), StoreError> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| StoreError::Invalid(format!("{}: {error}", path.display())))?;
    let items = parse_file(&text, &path.display().to_string()).map_err(StoreError::Invalid)?;
    let now = Clock::default().now_ms();
    let project_id = match db.project_by_name(project).await? {
        Some(existing) => existing.id,
        None => {
            db.create_project(
                &NewProject {
                    name: project,
                    overlap: defaults.overlap,
                    lease_seconds: defaults.lease_seconds,
                    guidelines: "",
                },
                None,
                now,
            )
            .await?
            .id
        }
    };
    let summary = db
        .import_items(project_id, &items, None, &path.display().to_string(), now)
        .await?;
    Ok((project_id, summary))
}

/// Writes the project's preference records to `out` (`-` = standard output), atomically for a
/// file: a temporary file renamed into place once complete.
pub async fn export_file(
    db: &Database,
    project: &str,
    out: &Path,
    filter: &ExportFilter,
    include_over_quota: bool,
) -> Result<ExportSummary, StoreError> {
    let project = db
        .project_by_name(project)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("project {project:?}")))?;
    let io_error =
        |error: std::io::Error| StoreError::Invalid(format!("{}: {error}", out.display()));
    if out == Path::new("-") {
        let stdout = std::io::stdout();
        let mut writer = std::io::BufWriter::new(stdout.lock());
        let summary = export_project(db, project.id, filter, include_over_quota, |line| {
            writeln!(writer, "{line}").map_err(io_error)
        })
        .await?;
        writer.flush().map_err(io_error)?;
        return Ok(summary);
    }
    let temporary = out.with_extension("jsonl.partial");
    let file = std::fs::File::create(&temporary).map_err(io_error)?;
    let mut writer = std::io::BufWriter::new(file);
    let summary = export_project(db, project.id, filter, include_over_quota, |line| {
        writeln!(writer, "{line}").map_err(io_error)
    })
    .await?;
    writer.flush().map_err(io_error)?;
    drop(writer);
    std::fs::rename(&temporary, out).map_err(io_error)?;
    Ok(summary)
}
