//! The real key at rest: XChaCha20-Poly1305 under the token's sealing key.
//!
//! Sealed value: `0x01` (format version) ‖ 24-byte random nonce ‖ ciphertext ‖ 16-byte tag. The associated
//! data binds the value to its session: a label, the token digest and the session id. So a sealed value
//! opens only with the sealing key of the token it was sealed for (which Redis never sees: it is derived
//! from the token), and only under that token's digest and session id: copied to another session's key,
//! it fails authentication even for someone who holds that other session's token.
//!
//! Why XChaCha20: its 192-bit nonces can be drawn at random for every seal with no risk of reuse, and it
//! needs no hardware support to be fast. The key is already unique per token, so a nonce collision
//! would need the same token to seal twice anyway.

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sidekey_domain::{SealingKey, SecretValue, SessionId, TokenDigest};

/// The first byte of every sealed value: the format above. A later format gets another byte, so values
/// written by an older instance stay readable during a rolling upgrade.
const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// Domain separation for the associated data.
const AAD_LABEL: &[u8] = b"sidekey/v1/sealed-real-key\0";

/// Why a sealed value could not be made or opened. The texts name no secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SealError {
    /// The operating system had no randomness for a nonce.
    #[error("no randomness for a nonce")]
    Entropy,
    /// The cipher refused the input (only for absurd lengths).
    #[error("the real key could not be sealed")]
    Seal,
    /// Not a sealed value of a known format.
    #[error("the sealed real key is malformed")]
    Malformed,
    /// Authentication failed: another token's key, another session, or a tampered value.
    #[error("the sealed real key failed authentication")]
    Authentication,
    /// It opened, but what it held is not a valid real key.
    #[error("the sealed real key does not hold a valid secret")]
    Invalid,
}

fn cipher(key: &SealingKey) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&Key::from(*key.expose()))
}

fn associated_data(digest: &TokenDigest, id: SessionId) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 32 + 16);
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(digest.as_bytes());
    aad.extend_from_slice(id.as_uuid().as_bytes());
    aad
}

/// Seals `secret` for the session `id` under `digest`, with the token's sealing key.
pub(crate) fn seal(
    key: &SealingKey,
    digest: &TokenDigest,
    id: SessionId,
    secret: &SecretValue,
) -> Result<Vec<u8>, SealError> {
    let nonce = XNonce::try_generate().map_err(|_| SealError::Entropy)?;
    let aad = associated_data(digest, id);
    // `encrypt` copies the plaintext into the buffer it returns and encrypts it there: no clear copy is
    // left behind in memory this function owns.
    let sealed = cipher(key)
        .encrypt(&nonce, Payload { msg: secret.expose().as_bytes(), aad: &aad })
        .map_err(|_| SealError::Seal)?;
    let mut value = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    value.push(FORMAT_V1);
    value.extend_from_slice(&nonce);
    value.extend_from_slice(&sealed);
    Ok(value)
}

/// Opens a value sealed by [`seal`] for the session `id` under `digest`.
pub(crate) fn open(
    key: &SealingKey,
    digest: &TokenDigest,
    id: SessionId,
    value: &[u8],
) -> Result<SecretValue, SealError> {
    let Some((&FORMAT_V1, rest)) = value.split_first() else {
        return Err(SealError::Malformed);
    };
    if rest.len() < NONCE_LEN + TAG_LEN {
        return Err(SealError::Malformed);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| SealError::Malformed)?;
    let aad = associated_data(digest, id);
    let plaintext = cipher(key)
        .decrypt(&nonce, Payload { msg: ciphertext, aad: &aad })
        .map_err(|_| SealError::Authentication)?;
    // The buffer moves into the String and the String into `SecretValue::new`, which zeroes it: the
    // only clear copy left is the one inside the returned value.
    match String::from_utf8(plaintext) {
        Ok(text) => SecretValue::new(text).map_err(|_| SealError::Invalid),
        Err(error) => {
            wipe(error.into_bytes());
            Err(SealError::Invalid)
        }
    }
}

/// Overwrites a buffer that held clear text before freeing it. `black_box` keeps the compiler from
/// dropping the writes as dead stores (this crate forbids the `unsafe` a volatile write would need).
fn wipe(mut bytes: Vec<u8>) {
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

#[cfg(test)]
mod tests {
    use sidekey_domain::Token;

    use super::*;

    fn secret(text: &str) -> SecretValue {
        SecretValue::new(text.to_owned()).unwrap()
    }

    #[test]
    fn a_sealed_key_opens_with_its_tokens_key_digest_and_session() {
        let token = Token::generate().unwrap();
        let keys = token.keys();
        let id = SessionId::new_random();
        let sealed = seal(keys.sealing_key(), keys.digest(), id, &secret("sk-live-123")).unwrap();
        assert_eq!(sealed[0], FORMAT_V1);
        assert_eq!(sealed.len(), 1 + NONCE_LEN + "sk-live-123".len() + TAG_LEN);
        assert!(!sealed.windows(11).any(|window| window == b"sk-live-123"));
        let opened = open(keys.sealing_key(), keys.digest(), id, &sealed).unwrap();
        assert_eq!(opened.expose(), "sk-live-123");
    }

    #[test]
    fn two_seals_of_one_key_differ() {
        let keys = Token::generate().unwrap().keys();
        let id = SessionId::new_random();
        let a = seal(keys.sealing_key(), keys.digest(), id, &secret("sk-same")).unwrap();
        let b = seal(keys.sealing_key(), keys.digest(), id, &secret("sk-same")).unwrap();
        assert_ne!(a, b, "a fresh nonce each time");
    }

    #[test]
    fn another_tokens_key_another_digest_or_another_session_cannot_open_it() {
        let keys = Token::generate().unwrap().keys();
        let other = Token::generate().unwrap().keys();
        let id = SessionId::new_random();
        let sealed = seal(keys.sealing_key(), keys.digest(), id, &secret("sk-live-9")).unwrap();
        let refused = |result: Result<SecretValue, SealError>| {
            assert_eq!(result.unwrap_err(), SealError::Authentication);
        };
        refused(open(other.sealing_key(), keys.digest(), id, &sealed));
        refused(open(keys.sealing_key(), other.digest(), id, &sealed));
        refused(open(keys.sealing_key(), keys.digest(), SessionId::new_random(), &sealed));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        refused(open(keys.sealing_key(), keys.digest(), id, &tampered));
    }

    #[test]
    fn malformed_values_are_refused_without_panicking() {
        let keys = Token::generate().unwrap().keys();
        let id = SessionId::new_random();
        for value in [&[][..], &[2u8; 64][..], &[1u8; 20][..]] {
            assert_eq!(open(keys.sealing_key(), keys.digest(), id, value).unwrap_err(), SealError::Malformed);
        }
    }
}
