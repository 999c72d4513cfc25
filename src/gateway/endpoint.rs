//! Push endpoint tokens: the opaque last segment of `pushEndpoint` URLs.
//!
//! A token seals `(uaid, channel id)` with ChaCha20-Poly1305 under a server key, so it never
//! shows the UAID in clear and cannot be forged. The nonce is derived from the sealed pair by
//! HMAC (a synthetic IV), which makes the token deterministic: registering the same channel again
//! hands out the very same endpoint. A leading version byte leaves room for key rotation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::domain::{ChannelId, Uaid};

const VERSION: u8 = 1;
const SEALED_LEN: usize = 1 + 12 + 32 + 16;

/// Seals and opens endpoint tokens. Built from the 32-byte server secret.
#[derive(Clone)]
pub struct EndpointKeys {
    cipher: ChaCha20Poly1305,
    nonce_key: [u8; 32],
}

impl EndpointKeys {
    pub fn new(secret: &[u8; 32]) -> EndpointKeys {
        EndpointKeys {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&derive(secret, b"presence endpoint cipher"))),
            nonce_key: derive(secret, b"presence endpoint nonce"),
        }
    }

    pub fn seal(&self, uaid: &Uaid, channel: &ChannelId) -> String {
        let mut plain = [0u8; 32];
        plain[..16].copy_from_slice(uaid.as_bytes());
        plain[16..].copy_from_slice(channel.as_bytes());
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.nonce_key).expect("any key length");
        mac.update(&plain);
        let tag = mac.finalize().into_bytes();
        let nonce = Nonce::from_slice(&tag[..12]);
        let sealed = self
            .cipher
            .encrypt(nonce, Payload { msg: &plain, aad: &[VERSION] })
            .expect("sealing 32 bytes cannot fail");
        let mut token = Vec::with_capacity(SEALED_LEN);
        token.push(VERSION);
        token.extend_from_slice(nonce);
        token.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The pair a token was sealed from, or `None` for anything this server did not issue.
    pub fn open(&self, token: &str) -> Option<(Uaid, ChannelId)> {
        if token.len() > 2 * SEALED_LEN {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() != SEALED_LEN || raw[0] != VERSION {
            return None;
        }
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&raw[1..13]), Payload { msg: &raw[13..], aad: &[VERSION] })
            .ok()?;
        let uaid = Uaid::from_bytes(plain[..16].try_into().ok()?);
        let channel = ChannelId::from_bytes(plain[16..].try_into().ok()?);
        Some((uaid, channel))
    }
}

fn derive(secret: &[u8; 32], label: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
    mac.update(label);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Uaid, ChannelId) {
        (Uaid::random(), ChannelId::parse(&uuid::Uuid::new_v4().to_string()).unwrap())
    }

    #[test]
    fn a_token_opens_to_what_it_sealed_and_hides_the_uaid() {
        let keys = EndpointKeys::new(&[7; 32]);
        let (uaid, chid) = ids();
        let token = keys.seal(&uaid, &chid);
        assert_eq!(keys.open(&token), Some((uaid, chid)));
        assert_eq!(token, keys.seal(&uaid, &chid), "tokens are deterministic");
        assert!(!token.contains(&uaid.to_string()));
    }

    #[test]
    fn tampered_or_foreign_tokens_do_not_open() {
        let keys = EndpointKeys::new(&[7; 32]);
        let (uaid, chid) = ids();
        let token = keys.seal(&uaid, &chid);
        assert_eq!(EndpointKeys::new(&[8; 32]).open(&token), None);
        let mut bytes = token.into_bytes();
        let last = bytes.len() - 5;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(keys.open(std::str::from_utf8(&bytes).unwrap()), None);
        assert_eq!(keys.open(""), None);
        assert_eq!(keys.open("not base64 at all!"), None);
    }
}
