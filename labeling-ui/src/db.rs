//! The database handle: Postgres (the system of record) or SQLite (the zero-setup default), one
//! `sqlx::Any` pool over either, with the schema's migrations embedded in the binary and applied at
//! start. Query texts are shared; where the back-ends differ (row locking) the query asks
//! [`Database::backend`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use crate::error::StoreError;

/// Which server is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://…`: many connections; claims lock one slot row with `FOR UPDATE SKIP LOCKED`.
    Postgres,
    /// `sqlite://…`: one connection, so every transaction runs alone (SQLite has one writer anyway,
    /// and a single connection never meets "database is locked").
    Sqlite,
}

/// The pool and its back-end.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    project_counts: Arc<Mutex<HashMap<i64, CachedCounts>>>,
}

/// A project's slot counts as read at `at_ms`: `(at_ms, submitted, required)`.
type CachedCounts = (i64, i64, i64);

/// How long the progress line's project-wide counts are reused. Counting a project's slots costs
/// a scan (≈15 ms at 60k slots); doing it on every claim and submit was 7× the rest of the work
/// in `benches/load.rs`. A progress line up to a second old is fine.
const PROJECT_COUNTS_TTL_MS: i64 = 1000;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The embedded SQLite file used when no database is configured: `$HERD_DATA_DIR`, else
/// `$XDG_DATA_HOME/herd`, else `~/.local/share/herd`, then `labeling.sqlite`.
#[must_use]
pub fn default_sqlite_path() -> PathBuf {
    let directory = std::env::var_os("HERD_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_DATA_HOME").map(|home| PathBuf::from(home).join("herd")))
        .or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share/herd"))
        })
        .unwrap_or_else(|| PathBuf::from(".herd"));
    directory.join("labeling.sqlite")
}

/// `sqlite://PATH?mode=rwc` for a file path.
#[must_use]
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Database {
    /// Connects to `url` (`postgres://…` or `sqlite://…`) and applies the migrations.
    pub async fn connect(url: &str) -> Result<Database, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Invalid(format!(
                "database url {:?}: expected postgres://… or sqlite://…",
                redact(url)
            )));
        };
        if backend == Backend::Sqlite {
            create_sqlite_directory(url)?;
        }
        let options = AnyConnectOptions::from_str(url).map_err(|error| {
            StoreError::Invalid(format!("database url {:?}: {error}", redact(url)))
        })?;
        let pool_options = match backend {
            Backend::Postgres => AnyPoolOptions::new().max_connections(16),
            Backend::Sqlite => AnyPoolOptions::new().max_connections(1),
        };
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .map_err(|error| StoreError::Unavailable(format!("{}: {error}", redact(url))))?;
        let migrator = match backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|error| StoreError::Unavailable(format!("migrations: {error}")))?;
        Ok(Database {
            pool,
            backend,
            project_counts: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The back-end.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `FOR UPDATE SKIP LOCKED` on Postgres; nothing on SQLite, whose single connection already
    /// runs each transaction alone.
    #[must_use]
    pub fn skip_locked(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }

    /// `FOR UPDATE` on Postgres; nothing on SQLite.
    #[must_use]
    pub fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// The project's `(submitted, required)` slot counts if read less than a second before `now_ms`.
    #[must_use]
    pub fn cached_project_counts(&self, project_id: i64, now_ms: i64) -> Option<(i64, i64)> {
        let cache = self
            .project_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(&project_id)
            .filter(|(at_ms, _, _)| (0..PROJECT_COUNTS_TTL_MS).contains(&(now_ms - at_ms)))
            .map(|(_, submitted, required)| (*submitted, *required))
    }

    /// Remembers the project's slot counts read at `now_ms`.
    pub fn remember_project_counts(&self, project_id: i64, now_ms: i64, counts: (i64, i64)) {
        self.project_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(project_id, (now_ms, counts.0, counts.1));
    }

    /// Counts one more submitted slot in the cached counts (this process's own submissions keep
    /// the cache exact; other processes' show within a second).
    pub fn count_submitted_slot(&self, project_id: i64) {
        if let Some(entry) = self
            .project_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(&project_id)
        {
            entry.1 += 1;
        }
    }

    /// Drops the cached counts (after an import adds slots).
    pub fn forget_project_counts(&self, project_id: i64) {
        self.project_counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&project_id);
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn create_sqlite_directory(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|error| {
            StoreError::Unavailable(format!("creating {}: {error}", parent.display()))
        })?;
    }
    Ok(())
}

/// The url without its password, for messages.
#[must_use]
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
