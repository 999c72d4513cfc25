//! Secrets the server must read back (webhook signing secrets, a secret shown once on the next
//! page), sealed with ChaCha20-Poly1305 under a key derived from the server secret. A random
//! nonce per seal; the output is base64url.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Clone)]
pub struct Vault {
    cipher: ChaCha20Poly1305,
}

impl Vault {
    /// `purpose` separates keys: what one vault sealed, another cannot open.
    pub fn new(secret: &[u8; 32], purpose: &str) -> Vault {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("any key length");
        mac.update(b"presence vault ");
        mac.update(purpose.as_bytes());
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Vault { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)) }
    }

    pub fn seal(&self, plain: &str) -> String {
        let nonce: [u8; 12] = rand::random();
        let sealed =
            self.cipher.encrypt(Nonce::from_slice(&nonce), plain.as_bytes()).expect("sealing cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Option<String> {
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < 12 + 16 {
            return None;
        }
        let plain = self.cipher.decrypt(Nonce::from_slice(&raw[..12]), &raw[12..]).ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_in_their_own_vault() {
        let vault = Vault::new(&[1; 32], "webhook");
        let sealed = vault.seal("whsec_abc");
        assert!(!sealed.contains("whsec"));
        assert_eq!(vault.open(&sealed).as_deref(), Some("whsec_abc"));
        assert_eq!(Vault::new(&[1; 32], "flash").open(&sealed), None);
        assert_eq!(Vault::new(&[2; 32], "webhook").open(&sealed), None);
        assert_eq!(vault.open("garbage"), None);
    }
}
