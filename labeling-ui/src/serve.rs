//! Starting the server: resolve the database (flag, `DATABASE_URL`, or the embedded SQLite
//! file), insist on a real secret outside dev mode, bind, and serve until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::db::{Database, default_sqlite_path, sqlite_url};
use crate::error::StoreError;
use crate::web::{AppState, WebConfig, app};

/// The smallest secret accepted (bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// Where the database is: `--database-url`, else `DATABASE_URL`, else the embedded SQLite file.
#[must_use]
pub fn resolve_database_url(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| {
            std::env::var("DATABASE_URL")
                .ok()
                .filter(|url| !url.is_empty())
        })
        .unwrap_or_else(|| sqlite_url(&default_sqlite_path()))
}

/// How the server gets its secret.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// `HERD_LABEL_SECRET` or the contents of `--secret-file`.
    Given(Vec<u8>),
    /// Dev mode: a random secret for this process (sessions end at restart).
    DevRandom,
    /// Nothing given outside dev mode: refuse to start.
    Missing,
}

/// Reads the secret from `--secret-file`, else `HERD_LABEL_SECRET`; `dev` allows none.
pub fn secret_source(secret_file: Option<&PathBuf>, dev: bool) -> Result<SecretSource, StoreError> {
    let given = match secret_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|error| StoreError::Invalid(format!("{}: {error}", path.display())))?
                .trim_ascii()
                .to_vec(),
        ),
        None => std::env::var("HERD_LABEL_SECRET")
            .ok()
            .map(|text| text.trim().as_bytes().to_vec())
            .filter(|bytes| !bytes.is_empty()),
    };
    Ok(match given {
        Some(bytes) => SecretSource::Given(bytes),
        None if dev => SecretSource::DevRandom,
        None => SecretSource::Missing,
    })
}

/// The secret to run with, or why not.
pub fn secret_bytes(source: SecretSource) -> Result<Vec<u8>, StoreError> {
    match source {
        SecretSource::Given(bytes) if bytes.len() >= MIN_SECRET_BYTES => {
            let distinct = bytes.iter().collect::<std::collections::HashSet<_>>().len();
            if distinct < 8 {
                return Err(StoreError::Invalid(
                    "the secret is not random enough (fewer than 8 distinct bytes); generate one with `openssl rand -hex 32`".into(),
                ));
            }
            Ok(bytes)
        }
        SecretSource::Given(bytes) => Err(StoreError::Invalid(format!(
            "the secret has {} bytes; at least {MIN_SECRET_BYTES} are needed (`openssl rand -hex 32`)",
            bytes.len()
        ))),
        SecretSource::DevRandom => {
            let mut bytes = vec![0_u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|error| StoreError::Unavailable(format!("random source: {error}")))?;
            Ok(bytes)
        }
        SecretSource::Missing => Err(StoreError::Invalid(
            "no secret: set HERD_LABEL_SECRET or pass --secret-file (32+ random bytes, e.g. \
             `openssl rand -hex 32`), or run with --dev on a machine of your own"
                .into(),
        )),
    }
}

/// Serves the app on `bind` until Ctrl-C; `ready` is told the bound address (port 0 picks one).
pub async fn serve(
    database: Database,
    config: WebConfig,
    bind: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), StoreError> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|error| StoreError::Invalid(format!("--bind {bind}: {error}")))?;
    let address = listener
        .local_addr()
        .map_err(|error| StoreError::Invalid(format!("--bind {bind}: {error}")))?;
    ready(address);
    let router = app(AppState::new(database, config));
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|error| StoreError::Unavailable(format!("server: {error}")))
}
