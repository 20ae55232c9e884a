//! `herd label …`: argument parsing and printing for the labeling app (the work is in
//! `labeling-ui/`).

use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use labeling::commands::{self, ProjectDefaults};
use labeling::db::{Database, redact};
use labeling::export::ExportFilter;
use labeling::serve::{SecretSource, resolve_database_url, secret_bytes, secret_source, serve};
use labeling::store::users::Role;
use labeling::web::WebConfig;

#[derive(Debug, Args)]
pub struct DatabaseArgs {
    /// postgres://… or sqlite://…; default: $DATABASE_URL, else the embedded SQLite file in
    /// herd's data directory ($HERD_DATA_DIR, else ~/.local/share/herd).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LabelCommand {
    /// Serve the labeling app.
    Serve {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
        /// File holding the server secret (32+ random bytes); default $HERD_LABEL_SECRET.
        #[arg(long)]
        secret_file: Option<PathBuf>,
        /// Dev mode: allow running without a secret (a random one per process).
        #[arg(long)]
        dev: bool,
        /// Mark cookies Secure (set this when serving behind HTTPS).
        #[arg(long)]
        https: bool,
    },
    /// Create an admin account; the password is read from standard input.
    CreateAdmin {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Login name.
        #[arg(long)]
        username: String,
    },
    /// Create an annotator (or admin) account; the password is read from standard input.
    CreateUser {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Login name.
        #[arg(long)]
        username: String,
        /// annotator or admin.
        #[arg(long, default_value = "annotator")]
        role: String,
    },
    /// Import items ({"prompt", "responses"} JSONL) into a project, creating it if needed.
    Import {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Project name.
        #[arg(long)]
        project: String,
        /// Annotations wanted per item (for a new project).
        #[arg(long, default_value_t = 3)]
        overlap: i64,
        /// Lease length in seconds (for a new project).
        #[arg(long, default_value_t = 900)]
        lease_seconds: i64,
        /// The JSONL file.
        file: PathBuf,
    },
    /// Export the project's preferences as TRL conversational preference JSONL.
    Export {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Project name.
        #[arg(long)]
        project: String,
        /// Output file (`-` for standard output).
        #[arg(long)]
        out: PathBuf,
        /// Keep only pairs of these strengths (comma-separated; default all four), e.g.
        /// significantly_better,better as Llama 3 trains on.
        #[arg(long, value_delimiter = ',')]
        strength: Vec<String>,
        /// Include judgments flagged all-bad (those with an edit are always included).
        #[arg(long)]
        include_all_bad: bool,
        /// Include annotations submitted beyond k (late, after someone else took the slot).
        #[arg(long)]
        include_over_quota: bool,
    },
}

pub fn run_label(command: LabelCommand) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run(command))
}

async fn connect(database: &DatabaseArgs) -> Result<Database> {
    let url = resolve_database_url(database.database_url.as_deref());
    Database::connect(&url)
        .await
        .with_context(|| format!("opening the database {}", redact(&url)))
}

fn read_password() -> Result<String> {
    let mut line = String::new();
    io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!(
            "no password on standard input (e.g. `printf '%s\\n' \"$PASSWORD\" | herd label create-admin …`)"
        );
    }
    Ok(password)
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per subcommand, each only parsing and printing"
)]
async fn run(command: LabelCommand) -> Result<ExitCode> {
    match command {
        LabelCommand::Serve {
            database,
            bind,
            secret_file,
            dev,
            https,
        } => {
            let source = secret_source(secret_file.as_ref(), dev)?;
            let dev_secret = matches!(source, SecretSource::DevRandom);
            let secret = secret_bytes(source)?;
            let db = connect(&database).await?;
            if !db.has_admin().await? {
                eprintln!(
                    "no admin yet: create one with `herd label create-admin --username NAME` (same database settings)"
                );
            }
            let mut config = WebConfig::new(secret);
            config.secure_cookies = https;
            serve(db, config, bind, |address| {
                eprintln!(
                    "herd label: serving on http://{address}/{}",
                    if dev_secret {
                        " (dev mode: sessions end when the server stops)"
                    } else {
                        ""
                    }
                );
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        LabelCommand::CreateAdmin { database, username } => {
            let password = read_password()?;
            let db = connect(&database).await?;
            let user = commands::create_admin(&db, &username, &password).await?;
            println!("created admin {:?} (id {})", user.username, user.id);
            Ok(ExitCode::SUCCESS)
        }
        LabelCommand::CreateUser {
            database,
            username,
            role,
        } => {
            let role = Role::parse(&role)?;
            let password = read_password()?;
            let db = connect(&database).await?;
            let user = commands::create_user(&db, &username, &password, role).await?;
            println!(
                "created {} {:?} (id {})",
                role.as_str(),
                user.username,
                user.id
            );
            Ok(ExitCode::SUCCESS)
        }
        LabelCommand::Import {
            database,
            project,
            overlap,
            lease_seconds,
            file,
        } => {
            let db = connect(&database).await?;
            let (project_id, summary) = commands::import_file(
                &db,
                &project,
                &file,
                ProjectDefaults {
                    overlap,
                    lease_seconds,
                },
            )
            .await?;
            println!(
                "{}: {} items added, {} already present (project {project:?}, id {project_id})",
                file.display(),
                summary.added,
                summary.already_present
            );
            Ok(ExitCode::SUCCESS)
        }
        LabelCommand::Export {
            database,
            project,
            out,
            strength,
            include_all_bad,
            include_over_quota,
        } => {
            let filter =
                ExportFilter::from_strengths(strength.iter().map(String::as_str), include_all_bad)
                    .map_err(|message| anyhow::anyhow!("--{message}"))?;
            let db = connect(&database).await?;
            let summary =
                commands::export_file(&db, &project, &out, &filter, include_over_quota).await?;
            eprintln!(
                "{}: {} preference records from {} annotations ({} over-quota left out)",
                out.display(),
                summary.records,
                summary.annotations,
                summary.over_quota_skipped
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
