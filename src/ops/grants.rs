//! Grants: a user's consent for an app (a uid the app knows the user by), the code the consent
//! page hands the app, and how a user pauses, makes coarse or revokes a grant.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::presence::Touched;
use super::{Core, Error, Result};
use crate::clock::unix_now;
use crate::domain::{AccountId, App, AuthCode, GrantInfo};
use crate::secrets::{constant_time_eq, digest, new_secret};
use crate::store::UidStatus;

/// PKCE S256: the challenge is base64url(SHA-256(verifier)).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let valid_verifier = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    valid_verifier
        && constant_time_eq(&URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())), challenge)
}

/// A grant's user and app, for the roster to read back.
fn touched(account: AccountId, app_id: &str) -> Touched {
    Touched { accounts: vec![account], apps: vec![app_id.to_owned()] }
}

/// Issues a consent code for an allowed grant; returns the code to hand to the app.
pub async fn issue_code(
    core: &Core,
    account: AccountId,
    app_id: &str,
    redirect_uri: &str,
    code_challenge: Option<&str>,
) -> Result<String> {
    let code = new_secret("pc_");
    let record = AuthCode {
        app_id: app_id.to_owned(),
        account,
        redirect_uri: redirect_uri.to_owned(),
        code_challenge: code_challenge.map(str::to_owned),
        expires_at: unix_now() + core.config.grant_code_ttl.as_secs() as i64,
    };
    core.store.create_code(&digest(&code), &record).await?;
    Ok(code)
}

/// Grants the app access for the user; a grant that exists keeps its uid.
pub async fn allow(core: &Core, account: AccountId, app_id: &str) -> Result<String> {
    let uid = format!("u_{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()));
    let write = core.store.grant(account, app_id, &uid, unix_now());
    let granted = core.presence.write(|_| touched(account, app_id), write).await?;
    core.presence.announce(granted.events);
    Ok(granted.uid)
}

/// The app trades the code from the consent redirect for the user's uid.
pub async fn exchange_code(
    core: &Core,
    app: &App,
    code: &str,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
) -> Result<String> {
    let invalid = |detail: &str| Error::invalid("invalid_grant", detail);
    let Some(redirect_uri) = redirect_uri else {
        return Err(Error::invalid(
            "invalid_request",
            "redirect_uri is required: the one the consent was asked with",
        ));
    };
    // Taking the code spends it, whatever happens next: a code is tried once.
    let code = core
        .store
        .take_code(&digest(code))
        .await?
        .ok_or_else(|| invalid("the code is unknown, was already used, or expired"))?;
    if code.expires_at <= unix_now() {
        return Err(invalid("the code is unknown, was already used, or expired"));
    }
    if code.app_id != app.app_id {
        return Err(invalid("the code was issued to another app"));
    }
    if redirect_uri != code.redirect_uri {
        return Err(invalid("redirect_uri differs from the one the code was issued for"));
    }
    match (&code.code_challenge, code_verifier) {
        (Some(challenge), verifier) => {
            if !verifier.is_some_and(|verifier| pkce_matches(verifier, challenge)) {
                return Err(invalid("code_verifier does not match the code_challenge"));
            }
        }
        // A verifier for a code asked without a challenge: someone else asked for it.
        (None, Some(_)) => {
            return Err(invalid("code_verifier sent, but the consent was asked without code_challenge"))
        }
        (None, None) => {}
    }
    core.store
        .grant_uid(code.account, &app.app_id)
        .await?
        .ok_or_else(|| invalid("the user revoked this app meanwhile"))
}

pub async fn list(core: &Core, account: AccountId) -> Result<Vec<GrantInfo>> {
    Ok(core.store.grants_of(account).await?)
}

/// Pauses, resumes or sets the coarse mode of a grant.
pub async fn set(
    core: &Core,
    account: AccountId,
    app_id: &str,
    enabled: Option<bool>,
    coarse: Option<bool>,
) -> Result<()> {
    let write = core.store.set_grant(account, app_id, enabled, coarse, unix_now());
    let events = core
        .presence
        .write(|_| touched(account, app_id), write)
        .await?
        .ok_or(Error::NotFound("no grant for that app"))?;
    core.presence.announce(events);
    Ok(())
}

/// Revokes a grant: the app loses the uid for good.
pub async fn revoke(core: &Core, account: AccountId, app_id: &str) -> Result<()> {
    let write = core.store.revoke_grant(account, app_id, unix_now());
    let revoked = core
        .presence
        .write(|_| touched(account, app_id), write)
        .await?
        .ok_or(Error::NotFound("no grant for that app"))?;
    core.presence.announce(revoked.events);
    Ok(())
}

/// The current status of granted users, as the app sees them; uids without an enabled grant
/// are left out. At most 100 uids.
pub async fn presence_of(core: &Core, app_id: &str, uids: &[String]) -> Result<Vec<UidStatus>> {
    if uids.is_empty() || uids.len() > 100 {
        return Err(Error::invalid("invalid_uid", "ask for 1 to 100 uids: ?uid=…&uid=…"));
    }
    Ok(core.store.presence_of(app_id, uids).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_only_its_verifier() {
        // The example of RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX", challenge));
        assert!(!pkce_matches("short", challenge));
    }
}
