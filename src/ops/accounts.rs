//! Accounts: local sign-up and password checks, bearer tokens, and the user's policy.

use super::presence::Touched;
use super::{Core, Error, Result};
use crate::clock::unix_now;
use crate::domain::{AccountId, Policy};
use crate::secrets::{digest, new_secret};

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
    let (account, hash) = match found {
        Some(found) => (Some(found.account), found.password_hash),
        None => (None, crate::secrets::decoy_hash().to_owned()),
    };
    let _turn = core.hashing.acquire().await.map_err(|_| Error::Unavailable("password hashing stopped"))?;
    let matches = tokio::task::spawn_blocking(move || crate::secrets::verify_password(&password, &hash))
        .await
        .map_err(|_| Error::Unavailable("password hashing stopped"))?;
    Ok(account.filter(|_| matches))
}

/// The local account of an email, if any.
pub async fn local_account(core: &Core, email: &str) -> Result<Option<AccountId>> {
    let Some(email) = normalize_email(email) else { return Ok(None) };
    Ok(core.store.local_credentials(&email).await?.map(|found| found.account))
}

/// A new bearer token for the account, and when it expires (Unix seconds).
pub async fn issue_token(core: &Core, account: AccountId) -> Result<(String, i64)> {
    let token = new_secret(TOKEN_PREFIX);
    let now = unix_now();
    let expires_at = now.saturating_add(core.config.token_ttl.as_secs() as i64);
    core.store.create_token(&digest(&token), account, now, expires_at).await?;
    Ok((token, expires_at))
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
