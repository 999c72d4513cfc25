//! OpenID Connect bearer tokens (Firefox Accounts is an OIDC provider). A JWT is accepted when
//! its signature verifies against the issuer's published keys (discovery, then JWKS), and its
//! issuer, audience and expiry are right. Discovery happens on first use, not at start, so a
//! node starts even while the provider is down; keys are fetched again when a token names a key
//! we do not have (at most every 30 s) and once they are `oidc_keys_refresh` old. A failed fetch
//! never discards keys: cached keys keep verifying tokens while the provider is down, and the
//! fetch is tried again after a backoff (5 s, doubling up to 5 minutes). One fetch runs at a
//! time, without holding the keys' lock, so requests go on with the cached keys meanwhile.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::RwLock;
use tokio::time::Instant;

const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const MISS_COOLDOWN: Duration = Duration::from_secs(30);
const MAX_DOCUMENT: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the token is not a valid JWT")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token is signed with an unknown key")]
    UnknownKey,
    #[error("the token was refused: {0:?}")]
    Invalid(jsonwebtoken::errors::ErrorKind),
    #[error("cannot reach the identity provider")]
    Provider(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The parts of the provider's discovery document we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Subject {
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub nonce: Option<String>,
}

struct Keys {
    discovery: Option<Discovery>,
    set: JwkSet,
    fetched: Option<Instant>,
    /// After failed fetches: not before this, and the wait after the next failure.
    retry_at: Option<Instant>,
    backoff: Duration,
}

pub struct OidcVerifier {
    issuer: String,
    audience: String,
    http: reqwest::Client,
    refresh_after: Duration,
    keys: RwLock<Keys>,
    /// Held by the one fetch in flight.
    fetching: tokio::sync::Mutex<()>,
}

impl OidcVerifier {
    /// Keys are fetched again once `refresh_after` old (`oidc_keys_refresh`).
    pub fn new(issuer: &str, audience: &str, refresh_after: Duration) -> OidcVerifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client with static settings builds");
        OidcVerifier {
            issuer: issuer.trim_end_matches('/').to_owned(),
            audience: audience.to_owned(),
            http,
            refresh_after,
            keys: RwLock::new(Keys {
                discovery: None,
                set: JwkSet { keys: Vec::new() },
                fetched: None,
                retry_at: None,
                backoff: FIRST_BACKOFF,
            }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Checks the token and returns its issuer and subject.
    pub async fn verify(&self, token: &str) -> Result<Subject, OidcError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Malformed)?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(OidcError::Algorithm);
        }
        let key = match self.key(header.kid.as_deref()).await? {
            Some(key) => key,
            None => {
                self.refresh(true).await?;
                self.key(header.kid.as_deref()).await?.ok_or(OidcError::UnknownKey)?
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let data = jsonwebtoken::decode::<Subject>(token, &key, &validation)
            .map_err(|e| OidcError::Invalid(e.into_kind()))?;
        Ok(data.claims)
    }

    /// Checks an ID token from the authorization-code flow: a valid JWT carrying our nonce.
    pub async fn verify_id_token(&self, token: &str, nonce: &str) -> Result<Subject, OidcError> {
        let subject = self.verify(token).await?;
        match &subject.nonce {
            Some(found) if crate::secrets::constant_time_eq(found, nonce) => Ok(subject),
            _ => Err(OidcError::Invalid(jsonwebtoken::errors::ErrorKind::InvalidToken)),
        }
    }

    /// The discovery document (fetched on first use).
    pub async fn discovery(&self) -> Result<Discovery, OidcError> {
        if let Some(discovery) = self.keys.read().await.discovery.clone() {
            return Ok(discovery);
        }
        self.refresh(false).await?;
        self.keys.read().await.discovery.clone().ok_or(OidcError::UnknownKey)
    }

    async fn key(&self, kid: Option<&str>) -> Result<Option<DecodingKey>, OidcError> {
        let (stale, cached) = {
            let keys = self.keys.read().await;
            (keys.fetched.is_none_or(|at| at.elapsed() > self.refresh_after), keys.fetched.is_some())
        };
        if stale {
            match self.refresh(false).await {
                Ok(()) => {}
                // Logged by `refresh`; the cached keys still verify tokens.
                Err(_) if cached => {}
                Err(error) => return Err(error),
            }
        }
        let keys = self.keys.read().await;
        let jwk = match kid {
            Some(kid) => keys.set.find(kid),
            None if keys.set.keys.len() == 1 => keys.set.keys.first(),
            None => None,
        };
        Ok(jwk.and_then(|jwk| DecodingKey::from_jwk(jwk).ok()))
    }

    /// Fetches discovery and keys, one fetch at a time; with `on_miss`, not more often than
    /// every 30 s. With keys cached, a refresh already in flight is not waited for. After a
    /// failure, no fetch is tried before the backoff has passed.
    async fn refresh(&self, on_miss: bool) -> Result<(), OidcError> {
        let cached = self.keys.read().await.fetched.is_some();
        let _turn = if cached && !on_miss {
            match self.fetching.try_lock() {
                Ok(turn) => turn,
                Err(_) => return Ok(()),
            }
        } else {
            self.fetching.lock().await
        };
        {
            let keys = self.keys.read().await;
            if let Some(at) = keys.fetched {
                if at.elapsed() < if on_miss { MISS_COOLDOWN } else { self.refresh_after } {
                    return Ok(());
                }
            }
            if keys.retry_at.is_some_and(|at| Instant::now() < at) {
                return Err(OidcError::Provider(
                    "the identity provider failed recently; retrying later".into(),
                ));
            }
        }
        let fetched = self.fetch().await;
        let mut keys = self.keys.write().await;
        match fetched {
            Ok((discovery, set)) => {
                if keys.retry_at.is_some() {
                    tracing::info!(issuer = %self.issuer, "the identity provider's keys are fetched again");
                }
                *keys = Keys {
                    discovery: Some(discovery),
                    set,
                    fetched: Some(Instant::now()),
                    retry_at: None,
                    backoff: FIRST_BACKOFF,
                };
                Ok(())
            }
            Err(error) => {
                if keys.retry_at.is_none() {
                    tracing::warn!(
                        issuer = %self.issuer,
                        error = %crate::error::chain(&error),
                        cached = keys.fetched.is_some(),
                        "cannot fetch the identity provider's keys; cached keys stay in use, retrying with backoff"
                    );
                }
                keys.retry_at = Some(Instant::now() + keys.backoff);
                keys.backoff = (keys.backoff * 2).min(MAX_BACKOFF);
                Err(error)
            }
        }
    }

    async fn fetch(&self) -> Result<(Discovery, JwkSet), OidcError> {
        let discovery: Discovery =
            self.fetch_json(&format!("{}/.well-known/openid-configuration", self.issuer)).await?;
        if discovery.issuer.trim_end_matches('/') != self.issuer {
            return Err(OidcError::Provider(
                format!("discovery names issuer {:?}, not {:?}", discovery.issuer, self.issuer).into(),
            ));
        }
        let set: JwkSet = self.fetch_json(&discovery.jwks_uri).await?;
        Ok((discovery, set))
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let provider = |e: Box<dyn std::error::Error + Send + Sync>| OidcError::Provider(e);
        let mut response = self.http.get(url).send().await.map_err(|e| provider(e.into()))?;
        if !response.status().is_success() {
            return Err(provider(format!("{url} answered {}", response.status()).into()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| provider(e.into()))? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                return Err(provider(format!("{url} sent more than {MAX_DOCUMENT} bytes").into()));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| provider(e.into()))
    }
}
