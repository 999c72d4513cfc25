//! Accounts: local sign-up and password checks, bearer tokens, and the user's policy.

use super::presence::Touched;
use super::{Core, Error, Result};
use crate::clock::unix_now;
use crate::domain::{AccountId, Policy};
use crate::secrets::{digest, new_secret};
use crate::store::{SessionRecord, TokenKind};

/// Prefix of bearer tokens handed out by `issue_token` (`POST /v1/tokens`, browser sessions).
pub const TOKEN_PREFIX: &str = "pt_";

/// Fewest characters in a password.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Normalises an email for lookup and storage.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then_some(email)
}

/// A password's argon2 hash, computed on a blocking thread, at most `password_hashes_at_once`
/// at a time.
pub async fn hash_password(core: &Core, password: String) -> Result<String> {
    let _turn = core.hashing.acquire().await.map_err(|_| Error::Unavailable("password hashing stopped"))?;
    tokio::task::spawn_blocking(move || crate::secrets::hash_password(&password))
        .await
        .map_err(|_| Error::Unavailable("password hashing stopped"))
}

/// Someone creates their own account (the sign-up page), when the operator allows it.
pub async fn register(core: &Core, email: &str, password: String) -> Result<AccountId> {
    if core.config.signup == crate::config::Signup::Closed {
        return Err(Error::Forbidden {
            code: "signup_closed",
            detail: "sign-up is closed here; ask the operator for an account".into(),
        });
    }
    normalize_email(email).ok_or_else(|| Error::invalid("invalid_email", "that is not an email address"))?;
    check_new_password(&password)?;
    let hash = hash_password(core, password).await?;
    sign_up(core, email, &hash).await
}

/// Creates a local account from an email and a password hash; `Conflict` if the email is taken.
pub async fn sign_up(core: &Core, email: &str, password_hash: &str) -> Result<AccountId> {
    let email = normalize_email(email)
        .ok_or_else(|| Error::invalid("invalid_email", "that is not an email address"))?;
    core.store.create_local_account(&email, password_hash, unix_now()).await?.ok_or_else(|| Error::Conflict {
        code: "email_taken",
        detail: format!("an account for {email} already exists"),
    })
}

/// Checks a password's length before it is hashed.
pub fn check_new_password(password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(Error::invalid(
            "weak_password",
            format!("a password has at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Counts a password attempt or a sign-up from this client address: guessing (and creating
/// accounts) is slowed per address, whichever emails it tries. An IPv6 client counts by its /64.
pub fn limit_address(core: &Core, address: std::net::IpAddr) -> Result<()> {
    let key = match address {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(ip) => ip.to_string(),
            None => {
                let s = ip.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    };
    core.address_limit.take(&key).map_err(|wait| Error::RateLimited {
        code: "too_many_attempts",
        detail: format!("too many attempts from this address; try again in {} s", wait.as_secs().max(1)),
        retry_after: wait,
    })
}

/// Checks an email and password against local accounts (argon2 on a blocking thread; unknown
/// emails cost the same as wrong passwords).
pub async fn check_password(core: &Core, email: &str, password: String) -> Result<Option<AccountId>> {
    // Guessing is slowed per email, whether or not the account exists.
    if let Err(wait) = core.login_limit.take(&email.trim().to_lowercase()) {
        return Err(Error::RateLimited {
            code: "too_many_attempts",
            detail: format!(
                "too many password attempts for this email; try again in {} s",
                wait.as_secs().max(1)
            ),
            retry_after: wait,
        });
    }
    let found = match normalize_email(email) {
        Some(email) => core.store.local_credentials(&email).await?,
        None => None,
    };
    let disabled = found.as_ref().is_some_and(|found| found.disabled);
    let (account, hash) = match found {
        Some(found) => (Some(found.account), found.password_hash),
        None => (None, crate::secrets::decoy_hash().to_owned()),
    };
    let _turn = core.hashing.acquire().await.map_err(|_| Error::Unavailable("password hashing stopped"))?;
    let matches = tokio::task::spawn_blocking(move || crate::secrets::verify_password(&password, &hash))
        .await
        .map_err(|_| Error::Unavailable("password hashing stopped"))?;
    // Only someone who knows the password learns that the account is disabled.
    if matches && disabled {
        return Err(account_disabled());
    }
    Ok(account.filter(|_| matches))
}

fn account_disabled() -> Error {
    Error::Forbidden { code: "account_disabled", detail: "this account is disabled; ask the operator".into() }
}

/// The local account of an email, if any.
pub async fn local_account(core: &Core, email: &str) -> Result<Option<AccountId>> {
    let Some(email) = normalize_email(email) else { return Ok(None) };
    Ok(core.store.local_credentials(&email).await?.map(|found| found.account))
}

/// A new bearer token for the account, and when it expires (Unix seconds).
pub async fn issue_token(core: &Core, account: AccountId) -> Result<(String, i64)> {
    issue(core, account, TokenKind::Api).await
}

/// A browser's session for the account (the token its cookie carries), unless an operator
/// disabled the account.
pub async fn start_session(core: &Core, account: AccountId) -> Result<(String, i64)> {
    let summary = core.store.account(account).await?.ok_or(Error::NotFound("no such account"))?;
    if summary.disabled {
        return Err(account_disabled());
    }
    issue(core, account, TokenKind::Browser).await
}

async fn issue(core: &Core, account: AccountId, kind: TokenKind) -> Result<(String, i64)> {
    let token = new_secret(TOKEN_PREFIX);
    let now = unix_now();
    let expires_at = now.saturating_add(core.config.token_ttl.as_secs() as i64);
    core.store.create_token(&digest(&token), account, kind, now, expires_at).await?;
    Ok((token, expires_at))
}

/// The account of an OpenID Connect subject (created on first use), unless disabled.
pub async fn oidc_account(core: &Core, issuer: &str, subject: &str) -> Result<AccountId> {
    let account = core.store.oidc_account(issuer, subject, unix_now()).await?;
    match core.store.account(account).await? {
        Some(summary) if !summary.disabled => Ok(account),
        _ => Err(account_disabled()),
    }
}

/// Ends a token issued by `issue_token`.
pub async fn revoke_token(core: &Core, token: &str) -> Result<()> {
    core.store.revoke_token(&digest(token)).await?;
    Ok(())
}

/// The account of an unexpired local token.
pub async fn token_account(core: &Core, token: &str) -> Result<Option<AccountId>> {
    Ok(core.store.token_account(&digest(token), unix_now()).await?)
}

/// Validates and saves a policy, announcing the change of visible status it causes.
pub async fn set_policy(core: &Core, account: AccountId, policy: &Policy) -> Result<()> {
    policy.validate().map_err(|error| Error::invalid("invalid_policy", error.to_string()))?;
    let write = core.store.set_policy(account, policy, unix_now());
    let change = core.presence.write(|_| Touched::account(account), write).await?;
    core.presence.announce(change);
    Ok(())
}

/// A signed-in session or token as its owner sees it: an id to revoke it by (derived from the
/// stored digest, so neither the token nor its digest is shown), and whether it is the one
/// asking.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: String,
    pub kind: TokenKind,
    pub created_at: i64,
    pub expires_at: i64,
    pub current: bool,
}

fn session_id(record: &SessionRecord) -> String {
    format!("s_{}", &digest(&format!("session:{}", record.hash))[..16])
}

/// The account's signed-in sessions and tokens; `current` is the token of the caller, if local.
pub async fn sessions(core: &Core, account: AccountId, current: Option<&str>) -> Result<Vec<Session>> {
    let current = current.map(digest);
    Ok(core
        .store
        .sessions(account, unix_now())
        .await?
        .into_iter()
        .map(|record| Session {
            id: session_id(&record),
            kind: record.kind,
            created_at: record.created_at,
            expires_at: record.expires_at,
            current: current.as_deref() == Some(record.hash.as_str()),
        })
        .collect())
}

/// Ends one of the account's sessions or tokens, by the id `sessions` shows.
pub async fn revoke_session(core: &Core, account: AccountId, id: &str) -> Result<()> {
    let records = core.store.sessions(account, unix_now()).await?;
    let record =
        records.iter().find(|record| session_id(record) == id).ok_or(Error::NotFound("no such session"))?;
    if !core.store.revoke_account_token(account, &record.hash).await? {
        return Err(Error::NotFound("no such session"));
    }
    Ok(())
}

/// Changes a local account's password after checking the current one; every other session and
/// token is signed out (`keep` is the caller's own token, which stays). Returns how many ended.
pub async fn change_password(
    core: &Core,
    account: AccountId,
    current: String,
    new: String,
    keep: Option<&str>,
) -> Result<u64> {
    let summary = core.store.account(account).await?.ok_or(Error::NotFound("no such account"))?;
    let Some(email) = summary.email.filter(|_| summary.issuer.is_none()) else {
        return Err(Error::Conflict {
            code: "no_password",
            detail: "this account signs in with its identity provider; change the password there".into(),
        });
    };
    check_new_password(&new)?;
    if check_password(core, &email, current).await? != Some(account) {
        return Err(Error::Unauthorized {
            code: "invalid_credentials",
            detail: "the current password is wrong".into(),
        });
    }
    let hash = hash_password(core, new).await?;
    let revoked = core.store.set_password(account, &hash, keep.map(digest).as_deref()).await?;
    tracing::info!(account = account.0, revoked, "password changed");
    Ok(revoked)
}
