//! One sender per account on a shared (PostgreSQL) journal: a lease row per account with its
//! holder (hostname, pid), an expiry and a fencing number.
//!
//! Taking the lease raises the fencing number; every batch this process then writes checks, in
//! its own transaction and holding the lease row's lock, that the number is still its own (and,
//! for a batch that marks items `in_flight`, that the lease has not run out). So a process that
//! was frozen or cut off and finds its lease taken writes nothing more: no mark, hence no send.
//! The row lock orders marks and takeovers: a taker sees every mark committed before it.
//! Expiry is judged by the database's clock, so the hosts' clocks need not agree.
//!
//! A SQLite journal has one writing process anyway (its lock file) and no leases.

use super::{Engine, Journal, JournalError, now_text};

/// Who holds an account's lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseHolder {
    pub account: String,
    pub host: String,
    pub pid: i64,
    /// When the holder took the lease (RFC 3339, the holder's clock).
    pub since: String,
    /// When the lease runs out unless renewed (RFC 3339 in UTC, the database's clock); when it
    /// was given up, for a released lease.
    pub expires_at: String,
    /// Whether the lease is still running (not expired, not released).
    pub live: bool,
}

/// What a try to take the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAttempt {
    /// The lease is this process's now.
    Taken {
        /// A holder that neither released the lease nor renewed it (killed, frozen, cut off),
        /// and how long its last requests may still be under way (its request timeout after
        /// its lease ran out), in milliseconds.
        from: Option<(LeaseHolder, u64)>,
    },
    /// Another process holds it.
    Held(LeaseHolder),
}

/// The lease this process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fence {
    pub account: String,
    pub number: i64,
    /// Half the lease: how long a batch may sit idle in its transaction, holding the lease
    /// row's lock, before PostgreSQL ends its session (a frozen process must not block the
    /// takeover).
    pub idle_limit_ms: i64,
}

type LeaseRow = (String, i64, i64, String, String, bool, bool, i64);

impl Journal {
    /// Tries once to take the lease on `account` for `lease` (this process's request timeout
    /// is recorded with it, so a taker knows how long to wait after it runs out).
    pub async fn try_lease(
        &self,
        account: &str,
        lease: std::time::Duration,
        request_timeout: std::time::Duration,
    ) -> Result<LeaseAttempt, JournalError> {
        if self.engine != Engine::Postgres {
            return Ok(LeaseAttempt::Taken { from: None });
        }
        let (host, pid) = holder_identity();
        let asked = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO leases (account, holder_host, holder_pid, fence, acquired_at, expires_at,
                                 request_timeout_ms, released)
             VALUES ($1, '', 0, 0, '', 'epoch', 0, TRUE) ON CONFLICT (account) DO NOTHING",
        )
        .bind(account)
        .execute(&mut *tx)
        .await?;
        let (old_host, old_pid, fence, since, expires_at, live, released, drain_ms): LeaseRow =
            sqlx::query_as(
                // As RFC 3339 text: the `Any` driver has no time types.
                "SELECT holder_host, holder_pid, fence, acquired_at,
                        to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                        expires_at > clock_timestamp(), released,
                        CAST(GREATEST(0, 1000 * extract(epoch FROM
                            expires_at + request_timeout_ms * interval '1 millisecond'
                            - clock_timestamp())) AS BIGINT)
                 FROM leases WHERE account = $1 FOR UPDATE",
            )
            .bind(account)
            .fetch_one(&mut *tx)
            .await?;
        let old = LeaseHolder {
            account: account.to_owned(),
            host: old_host,
            pid: old_pid,
            since,
            expires_at,
            live: live && !released,
        };
        let mine = old.host == host && old.pid == pid;
        if old.live && !mine {
            tx.rollback().await?;
            return Ok(LeaseAttempt::Held(old));
        }
        let number: i64 = sqlx::query_scalar(
            "UPDATE leases SET holder_host = $2, holder_pid = $3, fence = fence + 1,
                    acquired_at = $4, renewed_at = $4, released = FALSE,
                    expires_at = clock_timestamp() + $5 * interval '1 millisecond',
                    request_timeout_ms = $6
             WHERE account = $1 RETURNING fence",
        )
        .bind(account)
        .bind(&host)
        .bind(pid)
        .bind(now_text())
        .bind(millis(lease))
        .bind(millis(request_timeout))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let _ = self.fence.set(Fence {
            account: account.to_owned(),
            number,
            idle_limit_ms: millis(lease / 2).max(100),
        });
        let _ = self.tenure.set(crate::tenure::Tenure::new(lease, asked));
        let abandoned = fence > 0 && !released && !mine;
        Ok(LeaseAttempt::Taken {
            from: abandoned.then(|| (old, u64::try_from(drain_ms).unwrap_or(0))),
        })
    }

    /// The task that keeps this process's lease: renews it every third of `lease`; says so and
    /// stops when the lease turns out to be another's (every write of this process then fails
    /// its fencing check). `None` when no lease is held.
    pub fn lease_keeper(
        &self,
        lease: std::time::Duration,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let fence = self.fence.get()?.clone();
        let tenure = self.tenure.get()?.clone();
        let pool = self.pool.clone();
        Some(async move {
            let mut every = tokio::time::interval(lease / 3);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            loop {
                every.tick().await;
                let asked = std::time::Instant::now();
                let renewed = sqlx::query(
                    "UPDATE leases SET renewed_at = $3,
                            expires_at = clock_timestamp() + $4 * interval '1 millisecond'
                     WHERE account = $1 AND fence = $2 AND NOT released",
                )
                .bind(&fence.account)
                .bind(fence.number)
                .bind(now_text())
                .bind(millis(lease))
                .execute(&pool)
                .await;
                match renewed {
                    Ok(done) if done.rows_affected() == 1 => tenure.confirm(asked),
                    Ok(_) => {
                        tracing::error!(
                            "the lease on account {} was taken by another process; sending \
                             nothing more from here",
                            fence.account
                        );
                        return;
                    }
                    Err(err) => tracing::warn!(
                        "could not renew the lease on account {}: {err}",
                        fence.account
                    ),
                }
            }
        })
    }

    /// A transaction for a mark committed before an action that must happen once (a deploy
    /// hook, an approval): holding a lease, it first checks, under the lease row's lock, that
    /// the lease is still this process's and has not run out, so a process frozen or cut off
    /// past its lease starts nothing its taker may start too.
    pub(super) async fn begin_fenced(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, JournalError> {
        let mut tx = self.pool.begin().await?;
        if let Some(fence) = self.fence.get() {
            check_fence(&mut tx, fence, true).await?;
        }
        Ok(tx)
    }

    /// When this process's lease was last confirmed; `None` without a lease.
    pub fn tenure(&self) -> Option<crate::tenure::Tenure> {
        self.tenure.get().cloned()
    }

    /// Gives the lease up at once, so a standby need not wait for it to run out.
    pub async fn release_lease(&self) -> Result<(), JournalError> {
        let Some(fence) = self.fence.get() else {
            return Ok(());
        };
        sqlx::query(
            "UPDATE leases SET released = TRUE, expires_at = clock_timestamp()
             WHERE account = $1 AND fence = $2",
        )
        .bind(&fence.account)
        .bind(fence.number)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every account's lease holder, for `status`.
    pub async fn lease_holders(&self) -> Result<Vec<LeaseHolder>, JournalError> {
        if self.engine != Engine::Postgres {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String, i64, String, String, bool)> = sqlx::query_as(
            "SELECT account, holder_host, holder_pid, acquired_at,
                    to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
                    expires_at > clock_timestamp() AND NOT released
             FROM leases WHERE fence > 0 ORDER BY account",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(account, host, pid, since, expires_at, live)| LeaseHolder {
                    account,
                    host,
                    pid,
                    since,
                    expires_at,
                    live,
                },
            )
            .collect())
    }
}

/// Inside a batch's transaction: the lease is still this process's (and, when the batch marks
/// items `in_flight`, has not run out); holds the lease row's lock until the commit.
pub(super) async fn check_fence(
    tx: &mut sqlx::AnyConnection,
    fence: &Fence,
    marks: bool,
) -> Result<(), JournalError> {
    sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
        .bind(fence.idle_limit_ms.to_string())
        .execute(&mut *tx)
        .await?;
    let still: Option<i64> = sqlx::query_scalar(
        "SELECT fence FROM leases
         WHERE account = $1 AND fence = $2 AND NOT released
         AND (NOT $3 OR expires_at > clock_timestamp())
         FOR UPDATE",
    )
    .bind(&fence.account)
    .bind(fence.number)
    .bind(marks)
    .fetch_optional(&mut *tx)
    .await?;
    match still {
        Some(_) => Ok(()),
        None => Err(JournalError::LeaseLost {
            account: fence.account.clone(),
        }),
    }
}

/// After a batch failed: whether another process has taken the lease meanwhile (a batch of a
/// process that was frozen past its lease fails on its ended session, not on the fence).
pub(super) async fn taken_from_us(pool: &sqlx::AnyPool, fence: &Fence) -> bool {
    let ours: Result<i64, _> =
        sqlx::query_scalar("SELECT count(*) FROM leases WHERE account = $1 AND fence = $2")
            .bind(&fence.account)
            .bind(fence.number)
            .fetch_one(pool)
            .await;
    matches!(ours, Ok(0))
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// This host's name and this process's id, as other hosts will see them.
pub fn holder_identity() -> (String, i64) {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL or the end.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let host = if status == 0 {
        let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        "unknown-host".to_owned()
    };
    (host, i64::from(std::process::id()))
}
