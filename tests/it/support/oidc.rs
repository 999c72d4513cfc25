//! An OpenID Connect provider on loopback: discovery, JWKS, an authorization endpoint that
//! approves at once, and ES256 tokens signed with a key it generates.

use std::collections::HashMap;

use axum::extract::Query;
use axum::response::IntoResponse as _;
use axum::routing::get;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::service::now;

/// An OpenID Connect provider on loopback: discovery, JWKS, and tokens it signs.
pub struct Issuer {
    pub url: String,
    pub key: std::sync::Arc<EcdsaKeyPair>,
    /// While set, every request to the provider answers 503 (an outage).
    pub down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Issuer {
    pub async fn start() -> Issuer {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = std::sync::Arc::new(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap(),
        );
        let point = key.public_key().as_ref().to_vec();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let jwk = json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "test-key", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]});
        let discovery = json!({
            "issuer": url, "jwks_uri": format!("{url}/jwks"),
            "authorization_endpoint": format!("{url}/authorize"), "token_endpoint": format!("{url}/token"),
        });
        // The authorization endpoint approves at once; codes remember the nonce and challenge.
        let codes: std::sync::Arc<std::sync::Mutex<HashMap<String, (String, String)>>> = Default::default();
        let issued = codes.clone();
        let authorize = move |Query(query): Query<HashMap<String, String>>| {
            let codes = issued.clone();
            async move {
                let code = format!("code{}", codes.lock().unwrap().len());
                codes
                    .lock()
                    .unwrap()
                    .insert(code.clone(), (query["nonce"].clone(), query["code_challenge"].clone()));
                let back = format!("{}?code={code}&state={}", query["redirect_uri"], query["state"]);
                axum::response::Redirect::to(&back)
            }
        };
        let (signing, issuer) = (key.clone(), url.clone());
        let token = move |axum::extract::Form(form): axum::extract::Form<HashMap<String, String>>| {
            let (codes, key, issuer) = (codes.clone(), signing.clone(), issuer.clone());
            async move {
                let Some((nonce, challenge)) = codes.lock().unwrap().remove(&form["code"]) else {
                    return Err(axum::http::StatusCode::BAD_REQUEST);
                };
                let verified =
                    URL_SAFE_NO_PAD.encode(Sha256::digest(form["code_verifier"].as_bytes())) == challenge;
                if !verified {
                    return Err(axum::http::StatusCode::BAD_REQUEST);
                }
                let now = now();
                let claims = json!({"iss": issuer, "sub": "browser-user", "aud": form["client_id"], "exp": now + 300, "nonce": nonce});
                Ok(Json(json!({"id_token": Issuer::sign_with(&key, claims), "token_type": "Bearer"})))
            }
        };
        let router = axum::Router::new()
            .route("/.well-known/openid-configuration", get(move || async move { Json(discovery) }))
            .route("/jwks", get(move || async move { Json(jwk) }))
            .route("/authorize", get(authorize))
            .route("/token", axum::routing::post(token));
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outage = down.clone();
        let router = router.layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let outage = outage.clone();
                async move {
                    if outage.load(std::sync::atomic::Ordering::Relaxed) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    next.run(request).await
                }
            },
        ));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Issuer { url, key, down }
    }

    /// A compact ES256 JWT with these claims, signed by `key`.
    pub fn sign_with(key: &EcdsaKeyPair, claims: serde_json::Value) -> String {
        let header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "typ": "JWT", "kid": "test-key"}).to_string());
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{payload}");
        let signature = key.sign(&ring::rand::SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    pub fn token(&self, subject: &str, audience: &str, expires_in: i64) -> String {
        let now = now();
        Issuer::sign_with(
            &self.key,
            json!({"iss": self.url, "sub": subject, "aud": audience, "iat": now, "exp": now + expires_in}),
        )
    }
}
