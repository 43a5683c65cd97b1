//! Who a key belongs to: the key check that admits a request names its caller, and
//! `GET /user/me` and `GET /account` describe that caller in CertCentral's shapes
//! (reference/certcentral-notes.md, "Who the key is").

use serde_json::{Value, json};

use super::{DEFAULT_ACCOUNT_ID, Role, Scenario};

/// The first user id; the main key's user. Each of `other_keys` is the next.
const FIRST_USER_ID: u64 = 1_001;
/// The account's top container (the listed orders sit in it or below it).
pub(crate) const TOP_CONTAINER: (u64, &str) = (201, "Main");

/// The user behind an accepted key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    pub account_id: u64,
    pub user_id: u64,
    pub role: Role,
}

/// The caller for a key that was sent, or `None` when the server does not know the key.
/// `other_keys` are looked at first, so a test can give a second key its own account even
/// when the main key is "any key".
pub(crate) fn caller(scenario: &Scenario, sent: &[u8]) -> Option<Caller> {
    let offset = |i: usize| u64::try_from(i).unwrap_or(u64::MAX - FIRST_USER_ID);
    if let Some((i, other)) = scenario
        .other_keys
        .iter()
        .enumerate()
        .find(|(_, other)| other.key.as_bytes() == sent)
    {
        return Some(Caller {
            account_id: other.account_id,
            user_id: FIRST_USER_ID + 1 + offset(i),
            role: other.role,
        });
    }
    if let Some(i) = scenario
        .user_keys
        .iter()
        .position(|key| key.as_bytes() == sent)
    {
        return Some(Caller {
            account_id: scenario.account_id.unwrap_or(DEFAULT_ACCOUNT_ID),
            user_id: FIRST_USER_ID + 1 + offset(scenario.other_keys.len() + i),
            role: Role::StandardUser,
        });
    }
    match &scenario.api_key {
        Some(expected) if expected.as_bytes() != sent => None,
        _ => Some(Caller {
            account_id: scenario.account_id.unwrap_or(DEFAULT_ACCOUNT_ID),
            user_id: FIRST_USER_ID,
            role: Role::Administrator,
        }),
    }
}

/// `GET /user/me`.
pub(crate) fn user_me(caller: &Caller) -> Value {
    let username = format!("user{}", caller.user_id);
    json!({
        "id": caller.user_id,
        "username": username,
        "account_id": caller.account_id,
        "first_name": "Simulated",
        "last_name": format!("User {}", caller.user_id),
        "email": format!("{username}@account-{}.example", caller.account_id),
        "status": "active",
        "container": {
            "id": TOP_CONTAINER.0,
            "parent_id": null,
            "name": TOP_CONTAINER.1,
            "is_active": true,
        },
        "access_roles": [{"id": caller.role.id(), "name": caller.role.name()}],
        "type": "standard",
        "has_container_assignments": false,
    })
}

/// `GET /account`.
pub(crate) fn account(caller: &Caller) -> Value {
    json!({
        "id": caller.account_id,
        "make_renewal_calls": false,
        "express_install_enabled": false,
        "cert_central_type": "enterprise",
        "admin_email": format!("admin@account-{}.example", caller.account_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::KeyAccount;

    #[test]
    fn other_keys_have_their_own_account_and_role_and_unknown_keys_none() {
        let scenario = Scenario {
            api_key: Some("main".into()),
            account_id: Some(11),
            other_keys: vec![KeyAccount {
                key: "second".into(),
                account_id: 22,
                role: Role::StandardUser,
            }],
            ..Scenario::default()
        };
        let main = caller(&scenario, b"main").expect("main key");
        assert_eq!((main.account_id, main.role), (11, Role::Administrator));
        let second = caller(&scenario, b"second").expect("second key");
        assert_eq!((second.account_id, second.role), (22, Role::StandardUser));
        assert_ne!(main.user_id, second.user_id);
        assert_eq!(caller(&scenario, b"neither"), None);
        let any = Scenario::default();
        assert_eq!(
            caller(&any, b"whatever").map(|c| c.account_id),
            Some(DEFAULT_ACCOUNT_ID)
        );
    }
}
