//! The journal: open, lock, migrate; runs, items and attempts. Knows no HTTP.
//!
//! Two engines, one design. A file path is a SQLite journal (the embedded default); a
//! `postgres://` URL is a journal in PostgreSQL, which several hosts may share. Both are reached
//! through sqlx's `Any` driver, so every statement below is written once and runs on both:
//! placeholders are `$1`, `$2`, ... (SQLite reads them too), integers are cast where a value
//! comes out of JSON, and counts of rows meeting a condition are `count(*) FILTER (WHERE ...)`.
//! The few SQLite functions the statements use (`json_each` over an array, `json_extract`) are
//! defined by PostgreSQL's first migration with the same meaning. What cannot be shared is
//! the schema's history: SQLite's migrations are `migrations/*.sql` (unchanged since journals
//! exist), PostgreSQL's are `migrations/postgres/*.sql`, starting from today's schema; a new
//! migration needs its twin there. The rest that differs (locking, `PRAGMA`s, `VACUUM`) is
//! behind [`Engine`].
//!
//! SQLite: one process writes a journal at a time (a lock file beside it), through one
//! connection, in WAL mode with `synchronous = FULL`: a committed `in_flight` mark is on disk
//! before the request it announces is sent. PostgreSQL: many processes may open the journal;
//! a committed mark is durable once the commit returns.

mod approvals;
mod campaign;
mod csrs;
mod dcv;
mod deployments;
mod items;
mod lease;
mod prune;
mod requests;
mod rotation;
mod runs;
pub mod state;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};

pub use approvals::{ApprovalItem, ApprovalState};
pub use campaign::{Collectable, Collection, OrderFacts};
pub use dcv::{DcvWaiting, NameStatus};
pub use deployments::Deployable;
pub use items::{Change, ItemRow, Outcome, UnknownOutcome, WorkItem};
pub use lease::{LeaseAttempt, LeaseHolder, holder_identity};
pub use prune::{PruneOutcome, PruneSelection, PrunedRun, Spared};
pub use requests::SentRequest;
pub use rotation::Rotation;
pub use runs::{Counts, MemoPlan, NewRun, Planner, RunRow};
pub use state::ItemState;

/// `PRAGMA application_id` of a reissuer journal ("RSSR").
const APPLICATION_ID: i64 = 0x5253_5352;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// PostgreSQL's schema; its first migration is SQLite's schema as it stood when PostgreSQL came.
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database holds the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// A file, one writing process at a time.
    Sqlite,
    /// A PostgreSQL database, shared by processes on several hosts.
    Postgres,
}

impl Engine {
    /// PostgreSQL for a `postgres://` or `postgresql://` URL, SQLite for anything else.
    pub fn of(location: &Path) -> Self {
        let text = location.to_string_lossy();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Engine::Postgres
        } else {
            Engine::Sqlite
        }
    }
}

/// Everything that can go wrong with the journal file.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process holds the journal's lock.
    #[error("journal {path} is locked by another reissuer process (lock file {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
    /// The file exists but is not a SQLite database written by reissuer.
    #[error("{path} is not a reissuer journal; refusing to use or overwrite it")]
    NotAJournal { path: PathBuf },
    /// The journal was written by a newer reissuer.
    #[error(
        "journal {path} has schema version {found}, newer than this reissuer knows ({known}); upgrade reissuer"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// SQLite reports damage.
    #[error("journal {path} is corrupt ({detail}); it was not changed")]
    Corrupt { path: PathBuf, detail: String },
    /// A read-only command was pointed at a journal that does not exist.
    #[error("no journal at {path} (set --journal or REISSUER_JOURNAL)")]
    Missing { path: PathBuf },
    /// The named run is not in the journal.
    #[error("run {run_id} is not in journal {path}")]
    NoSuchRun { path: PathBuf, run_id: i64 },
    /// The journal holds no run yet.
    #[error("no runs in journal {path}")]
    NoRuns { path: PathBuf },
    /// An update found the item in another state than the one it expected.
    #[error("item {item_id} was not {expected} when it was to become {next}")]
    StateConflict {
        item_id: i64,
        expected: ItemState,
        next: ItemState,
    },
    /// The code asked for a transition the state machine forbids.
    #[error("item {item_id} cannot go from {from} to {to}")]
    ForbiddenTransition {
        item_id: i64,
        from: ItemState,
        to: ItemState,
    },
    /// Reading or creating the file or its lock failed.
    #[error("cannot open journal {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the account's lease (`--no-wait`).
    #[error(
        "account {account} is being sent by {host} (pid {pid}) since {since}; this process stands by only without --no-wait"
    )]
    LeaseHeld {
        account: String,
        host: String,
        pid: i64,
        since: String,
    },
    /// This process's lease was taken by another after it ran out (frozen, cut off).
    #[error(
        "the lease on account {account} was taken by another process; nothing more was sent from here"
    )]
    LeaseLost { account: String },
    /// Applying the schema failed.
    #[error("cannot migrate journal {path}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("journal query failed")]
    Sql(#[from] sqlx::Error),
}

/// An open journal.
pub struct Journal {
    pool: AnyPool,
    engine: Engine,
    /// The file, or the URL without its password.
    path: PathBuf,
    _lock: Option<File>,
    /// The account lease this process holds on a shared journal, once it took one.
    fence: std::sync::OnceLock<lease::Fence>,
    /// When that lease was last confirmed, for the senders.
    tenure: std::sync::OnceLock<crate::tenure::Tenure>,
}

impl Journal {
    /// Opens (creating if needed) a journal for writing: takes the lock, checks the file is
    /// ours and sound, applies the schema. A `postgres://` URL opens a PostgreSQL journal.
    pub async fn open(path: &Path) -> Result<Self, JournalError> {
        let (journal, integrity) = Self::open_checking(path).await?;
        integrity.passed().await?;
        Ok(journal)
    }

    /// [`Journal::open`], except that the integrity check of an existing journal whose schema
    /// is current runs on a connection of its own while the caller reads: on a large journal
    /// it takes a few tenths of a second. The caller must see [`IntegrityCheck::passed`]
    /// before it writes to the journal or sends anything. A journal that needs migrating is
    /// checked before it is migrated, as by `open`.
    pub async fn open_checking(path: &Path) -> Result<(Self, IntegrityCheck), JournalError> {
        if Engine::of(path) == Engine::Postgres {
            let journal = Self::open_postgres(path, true).await?;
            return Ok((journal, IntegrityCheck::done()));
        }
        let lock = take_lock(path)?;
        let existed = check_file(path)?;
        if !existed {
            create_private(path)?;
        }
        restrict_permissions(path);
        let pool = connect(path, false).await?;
        let mut integrity = IntegrityCheck::done();
        if existed {
            let check = IntegrityCheck::start(path);
            let schema = verify_database(&pool, path).await;
            // A damaged file is reported as such, even when reading its schema failed too.
            if schema.is_err() || schema.as_ref().is_ok_and(|s| *s == Schema::Behind) {
                check.passed().await?;
            } else {
                integrity = check;
            }
            schema?;
        }
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| JournalError::Migrate {
                path: path.to_owned(),
                source,
            })?;
        restrict_permissions(path);
        let journal = Self {
            pool,
            engine: Engine::Sqlite,
            path: path.to_owned(),
            _lock: Some(lock),
            fence: std::sync::OnceLock::new(),
            tenure: std::sync::OnceLock::new(),
        };
        Ok((journal, integrity))
    }

    /// Opens an existing journal to read (status, report) while a run may be writing it.
    pub async fn open_read_only(path: &Path) -> Result<Self, JournalError> {
        if Engine::of(path) == Engine::Postgres {
            return Self::open_postgres(path, false).await;
        }
        if !check_file(path)? {
            return Err(JournalError::Missing {
                path: path.to_owned(),
            });
        }
        let pool = connect(path, true).await?;
        quick_check(&pool, path).await?;
        verify_database(&pool, path).await?;
        Ok(Self {
            pool,
            engine: Engine::Sqlite,
            path: path.to_owned(),
            _lock: None,
            fence: std::sync::OnceLock::new(),
            tenure: std::sync::OnceLock::new(),
        })
    }

    /// Connects to a PostgreSQL journal; for writing, applies the schema (sqlx serialises
    /// processes migrating at once with an advisory lock). Nothing is locked: which process
    /// sends for an account is decided by its lease.
    async fn open_postgres(url: &Path, write: bool) -> Result<Self, JournalError> {
        let shown = PathBuf::from(redact_url(&url.to_string_lossy()));
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            // "relation already exists, skipping" and the like are not news for a user.
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET client_min_messages = warning")
                        .await
                        .map(drop)
                })
            })
            .connect(&url.to_string_lossy())
            .await?;
        verify_postgres(&pool, &shown, write).await?;
        if write {
            POSTGRES_MIGRATOR
                .run(&pool)
                .await
                .map_err(|source| JournalError::Migrate {
                    path: shown.clone(),
                    source,
                })?;
        }
        Ok(Self {
            pool,
            engine: Engine::Postgres,
            path: shown,
            _lock: None,
            fence: std::sync::OnceLock::new(),
            tenure: std::sync::OnceLock::new(),
        })
    }

    /// The file, or for PostgreSQL the URL without its password.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which database holds the journal.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Checkpoints the WAL and closes the connection.
    pub async fn close(self) {
        if self._lock.is_some() && self.engine == Engine::Sqlite {
            let _ = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await;
        }
        self.pool.close().await;
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn take_lock(path: &Path) -> Result<File, JournalError> {
    let lock = lock_path(path);
    let io = |source| JournalError::Io {
        path: lock.clone(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock)
        .map_err(io)?;
    // flock-style: released by the kernel when the process dies, even by kill -9.
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: path.to_owned(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
    }
}

/// Returns whether the file exists with content; refuses a non-empty file that is not SQLite.
fn check_file(path: &Path) -> Result<bool, JournalError> {
    let io = |source| JournalError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(io(err)),
    };
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]).map_err(io)? {
            0 => break,
            n => read += n,
        }
    }
    match read {
        0 => Ok(false),
        16 if &header == b"SQLite format 3\0" => Ok(true),
        _ => Err(JournalError::NotAJournal {
            path: path.to_owned(),
        }),
    }
}

fn create_private(path: &Path) -> Result<(), JournalError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map(drop)
        .map_err(|source| JournalError::Io {
            path: path.to_owned(),
            source,
        })
}

/// The journal holds payloads and account identifiers: keep it and its WAL/SHM owner-only.
/// SQLite creates the WAL and SHM with the database file's mode.
fn restrict_permissions(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::set_permissions(&name, std::fs::Permissions::from_mode(0o600));
    }
}

async fn connect(path: &Path, read_only: bool) -> Result<AnyPool, JournalError> {
    sqlx::any::install_default_drivers();
    let absolute = std::path::absolute(path).map_err(|source| JournalError::Io {
        path: path.to_owned(),
        source,
    })?;
    // SQLite's URL form: the path percent-encoded, the rest as connection pragmas below.
    let file_url = url::Url::from_file_path(&absolute).map_err(|()| JournalError::Io {
        path: path.to_owned(),
        source: std::io::Error::other("not an absolute path"),
    })?;
    let mode = if read_only { "ro" } else { "rw" };
    let url = format!(
        "sqlite://{}?mode={mode}",
        file_url.as_str().trim_start_matches("file://")
    );
    // One connection: one writer, and statements stay prepared on it.
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
                )
                .await
                .map(drop)
            })
        })
        .connect(&url)
        .await
        .map_err(|err| classify_open_error(path, err))?;
    Ok(pool)
}

fn classify_open_error(path: &Path, err: sqlx::Error) -> JournalError {
    let text = err.to_string();
    if text.contains("not a database") || text.contains("malformed") {
        JournalError::Corrupt {
            path: path.to_owned(),
            detail: text,
        }
    } else {
        JournalError::Sql(err)
    }
}

/// Whether an existing journal's schema is this version's, or older (to be migrated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    Current,
    Behind,
}

/// The integrity check of an existing SQLite journal (`PRAGMA quick_check`), running on a
/// read-only connection of its own; nothing to wait for otherwise.
#[must_use = "the journal may be written only once its check has passed"]
pub struct IntegrityCheck(Option<(PathBuf, tokio::task::JoinHandle<Result<(), JournalError>>)>);

impl IntegrityCheck {
    fn done() -> Self {
        Self(None)
    }

    fn start(path: &Path) -> Self {
        let file = path.to_owned();
        let task = tokio::spawn(async move {
            let pool = connect(&file, true).await?;
            let checked = quick_check(&pool, &file).await;
            pool.close().await;
            checked
        });
        Self(Some((path.to_owned(), task)))
    }

    /// Waits for the check: `Corrupt` when SQLite found the file damaged.
    pub async fn passed(self) -> Result<(), JournalError> {
        let Some((path, task)) = self.0 else {
            return Ok(());
        };
        match task.await {
            Ok(checked) => checked,
            Err(err) => match err.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(cancelled) => Err(JournalError::Io {
                    path,
                    source: std::io::Error::other(cancelled),
                }),
            },
        }
    }
}

/// `PRAGMA quick_check`: every page of the file read and its b-trees checked.
async fn quick_check(pool: &AnyPool, path: &Path) -> Result<(), JournalError> {
    let check: String = sqlx::query_scalar("PRAGMA quick_check")
        .fetch_one(pool)
        .await
        .map_err(|err| JournalError::Corrupt {
            path: path.to_owned(),
            detail: err.to_string(),
        })?;
    match check.as_str() {
        "ok" => Ok(()),
        _ => Err(JournalError::Corrupt {
            path: path.to_owned(),
            detail: check,
        }),
    }
}

/// Checks an existing file is a reissuer journal of a schema this version knows (that it is
/// sound is [`quick_check`]'s part).
async fn verify_database(pool: &AnyPool, path: &Path) -> Result<Schema, JournalError> {
    let corrupt = |err: sqlx::Error| JournalError::Corrupt {
        path: path.to_owned(),
        detail: err.to_string(),
    };
    let app_id: i64 = sqlx::query_scalar("PRAGMA application_id")
        .fetch_one(pool)
        .await
        .map_err(corrupt)?;
    // The migrator creates its own table before the first migration's transaction: a process
    // killed in between leaves that table alone, and the file is still a journal to be.
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name <> '_sqlx_migrations'",
    )
    .fetch_one(pool)
    .await
    .map_err(corrupt)?;
    if app_id != APPLICATION_ID {
        return if app_id == 0 && tables == 0 {
            Ok(Schema::Behind)
        } else {
            Err(JournalError::NotAJournal {
                path: path.to_owned(),
            })
        };
    }
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let found: Option<i64> = sqlx::query("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .ok()
        .and_then(|row| row.try_get(0).ok());
    match found {
        Some(found) if found > known => Err(JournalError::NewerSchema {
            path: path.to_owned(),
            found,
            known,
        }),
        Some(found) if found == known => Ok(Schema::Current),
        _ => Ok(Schema::Behind),
    }
}

/// Refuses a PostgreSQL database that holds other tables but no reissuer journal, or a journal
/// of a newer schema; a read-only command also needs the journal to exist.
async fn verify_postgres(pool: &AnyPool, path: &Path, write: bool) -> Result<(), JournalError> {
    let (tables, journal): (i64, bool) = sqlx::query_as(
        // Not counting the migrator's own table, created before the first migration's
        // transaction: a process killed in between leaves a journal to be, not another's tables.
        "SELECT count(*) FILTER (WHERE table_name <> '_sqlx_migrations'),
                coalesce(bool_or(table_name = 'runs'), FALSE)
         FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_one(pool)
    .await?;
    if !journal {
        return match (tables, write) {
            (0, true) => Ok(()),
            (0, false) => Err(JournalError::Missing {
                path: path.to_owned(),
            }),
            _ => Err(JournalError::NotAJournal {
                path: path.to_owned(),
            }),
        };
    }
    let known = POSTGRES_MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    let found: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .ok()
        .flatten();
    match found {
        Some(found) if found > known => Err(JournalError::NewerSchema {
            path: path.to_owned(),
            found,
            known,
        }),
        _ => Ok(()),
    }
}

/// The URL as it may be shown: without a password.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "(a PostgreSQL URL that does not parse)".to_owned(),
    }
}

/// The current time as the journal writes it: RFC 3339, UTC, milliseconds.
pub(crate) fn now_text() -> String {
    time_text(time::OffsetDateTime::now_utc())
}

/// A time as the journal writes it: RFC 3339, UTC, truncated to milliseconds.
pub(crate) fn time_text(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let millis = at.millisecond();
    let at = at
        .replace_nanosecond(u32::from(millis) * 1_000_000)
        .unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod account_tests;
#[cfg(test)]
mod tests;
