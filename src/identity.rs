//! Who the API key belongs to. Every command that talks to CertCentral asks once, before it
//! plans, writes or sends anything (`GET /user/me`; `GET /account` only when the user record
//! names no account): the account id scopes the journal ("already succeeded", reconciliation,
//! the limiter's history, takeover), a key that cannot be identified stops the command as
//! refused credentials (exit 4), and a command that needs a role can check for it.

use std::fmt;

use crate::api::{ApiError, Client};
use crate::limiter::Limiter;
use crate::reads::{self, Attempt, ReadError};

/// CertCentral's id of the Administrator access role.
pub const ADMINISTRATOR: u64 = 1;
/// CertCentral's id of the Manager access role.
pub const MANAGER: u64 = 4;

/// The account, user and roles behind an API key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Identity {
    pub account_id: u64,
    pub user_id: Option<u64>,
    pub username: Option<String>,
    /// The user's access roles, as `/user/me` lists them.
    pub roles: Vec<Role>,
    /// The container the user belongs to.
    pub container_id: Option<u64>,
}

/// One access role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Role {
    pub id: Option<u64>,
    pub name: String,
}

impl Identity {
    /// The account id as the journal stores it.
    pub fn journal_account(&self) -> i64 {
        i64::try_from(self.account_id).unwrap_or(i64::MAX)
    }

    pub fn has_role(&self, role_id: u64) -> bool {
        self.roles.iter().any(|role| role.id == Some(role_id))
    }

    pub fn is_administrator(&self) -> bool {
        self.has_role(ADMINISTRATOR)
    }

    /// Administrators and managers may approve requests (reference/certcentral-notes.md,
    /// "Approvals").
    pub fn may_approve(&self) -> bool {
        self.has_role(ADMINISTRATOR) || self.has_role(MANAGER)
    }

    /// `Administrator, Manager`, or `no role listed`.
    pub fn roles_text(&self) -> String {
        if self.roles.is_empty() {
            return "no role listed".to_owned();
        }
        self.roles
            .iter()
            .map(|role| role.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `account 1234567 (user jdoe; Administrator)`.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "account {} (", self.account_id)?;
        match (&self.username, self.user_id) {
            (Some(name), _) => write!(f, "user {name}; ")?,
            (None, Some(id)) => write!(f, "user {id}; ")?,
            (None, None) => {}
        }
        write!(f, "{})", self.roles_text())
    }
}

/// Why the key could not be identified, or is the wrong one.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// CertCentral refused the key (401/403).
    #[error("CertCentral refused the API key; nothing was planned, written or sent")]
    Refused(#[source] ApiError),
    /// The key belongs to another account than the run it was to work on.
    #[error(
        "run {run_id} was started against account {run_account}, but this API key belongs to account {key_account}; use that account's key"
    )]
    OtherAccount {
        run_id: i64,
        run_account: i64,
        key_account: u64,
    },
    /// Neither `/user/me` nor `/account` said which account the key belongs to.
    #[error(
        "CertCentral did not say which account the API key belongs to (GET /user/me and GET /account named none)"
    )]
    NoAccount,
    /// Another refusal, most likely a wrong base URL (a 404 `not_found|route`).
    #[error("GET {url} was refused: check the base URL (it ends in /services/v2)")]
    Rejected {
        url: String,
        #[source]
        source: ApiError,
    },
    /// No usable answer.
    #[error("cannot ask CertCentral who the API key belongs to")]
    Unreachable(#[source] ReadError),
}

/// Asks CertCentral who the key belongs to, trying again through an outage for up to
/// `give_up_after`; every request it made is pushed onto `attempts`.
pub async fn identify(
    client: &Client,
    limiter: &Limiter,
    give_up_after: std::time::Duration,
    attempts: &mut Vec<Attempt>,
) -> Result<Identity, IdentityError> {
    let url = |path: &str| format!("{}{path}", client.base_url());
    let me = reads::read(limiter, give_up_after, attempts, || client.user_me())
        .await
        .map_err(|err| refusal(err, url("/user/me")))?;
    let account_id = match me.account_id {
        Some(id) => id,
        None => reads::read(limiter, give_up_after, attempts, || client.account())
            .await
            .map_err(|err| refusal(err, url("/account")))?
            .id
            .ok_or(IdentityError::NoAccount)?,
    };
    Ok(Identity {
        account_id,
        user_id: me.id,
        username: me.username,
        roles: me
            .access_roles
            .into_iter()
            .map(|role| Role {
                id: role.id,
                name: role
                    .name
                    .unwrap_or_else(|| format!("role {}", role.id.unwrap_or(0))),
            })
            .collect(),
        container_id: me.container.and_then(|container| container.id),
    })
}

fn refusal(err: ReadError, url: String) -> IdentityError {
    match err {
        ReadError::Credentials(source) => IdentityError::Refused(source),
        ReadError::Rejected(source) => IdentityError::Rejected { url, source },
        // Untrusted carries the server's certificate: the command stops with exit 6 and names it.
        failed @ (ReadError::GaveUp { .. } | ReadError::Untrusted(_)) => {
            IdentityError::Unreachable(failed)
        }
    }
}

/// A run may be continued only with a key of the account it was started against; a run
/// recorded before accounts were identified (`None`) takes the key's account.
pub fn check_run_account(
    run_id: i64,
    run_account: Option<i64>,
    identity: &Identity,
) -> Result<(), IdentityError> {
    match run_account {
        Some(account) if account != identity.journal_account() => {
            Err(IdentityError::OtherAccount {
                run_id,
                run_account: account,
                key_account: identity.account_id,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(roles: &[(u64, &str)]) -> Identity {
        Identity {
            account_id: 42,
            user_id: Some(7),
            username: Some("jdoe".into()),
            roles: roles
                .iter()
                .map(|(id, name)| Role {
                    id: Some(*id),
                    name: (*name).to_owned(),
                })
                .collect(),
            container_id: None,
        }
    }

    #[test]
    fn roles_say_who_may_approve() {
        let admin = identity(&[(1, "Administrator")]);
        assert!(admin.is_administrator() && admin.may_approve());
        let manager = identity(&[(4, "Manager")]);
        assert!(!manager.is_administrator() && manager.may_approve());
        let standard = identity(&[(5, "Standard User")]);
        assert!(!standard.may_approve());
        assert_eq!(admin.to_string(), "account 42 (user jdoe; Administrator)");
        assert_eq!(identity(&[]).roles_text(), "no role listed");
    }

    #[test]
    fn a_run_continues_only_with_its_own_account() {
        let key = identity(&[]);
        assert!(check_run_account(3, Some(42), &key).is_ok());
        assert!(check_run_account(3, None, &key).is_ok(), "an old run");
        let err = check_run_account(3, Some(41), &key).expect_err("another account");
        assert_eq!(
            err.to_string(),
            "run 3 was started against account 41, but this API key belongs to account 42; use that account's key"
        );
    }
}
