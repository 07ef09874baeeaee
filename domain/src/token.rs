//! Session tokens: what a client holds instead of the real key.
//!
//! Format: `skt_` + 43 base62 characters (a 256-bit random number, fixed width) + 6 base62 characters of
//! CRC-32 over the body. The recognisable prefix lets secret scanners find leaked tokens; the checksum lets
//! the service refuse a mangled token without touching the store. The same shape as GitHub's tokens.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "skt_";
/// Random bytes in a token: 256 bits, the contract's minimum.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// Base62 digits needed for 256 bits: ceil(256 / log2(62)) = ceil(43.0) = 43 (62^43 > 2^256).
const BODY_LEN: usize = 43;
/// Base62 digits needed for a CRC-32: ceil(32 / log2(62)) = 6 (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;
/// Length of every token, in bytes (all ASCII).
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + BODY_LEN + CHECKSUM_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A session token. `Debug` is redacted, there is no `Display`, and the text is zeroed on drop.
#[derive(PartialEq, Eq)]
pub struct Token(String);

/// Why a text is not a session token. Checked in this order, without any I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    /// It does not start with `skt_`.
    #[error("the token does not start with {TOKEN_PREFIX}")]
    WrongPrefix,
    /// It is not exactly [`TOKEN_LEN`] bytes long.
    #[error("the token has the wrong length")]
    WrongLength,
    /// It holds a character outside base62.
    #[error("the token contains a character outside base62")]
    InvalidCharacter,
    /// Its checksum does not match its body: it was mistyped, truncated or forged.
    #[error("the token checksum does not match")]
    ChecksumMismatch,
}

/// The operating system could not provide randomness.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct EntropyError(String);

impl EntropyError {
    pub(crate) fn new(cause: String) -> Self {
        Self(cause)
    }
}

impl Token {
    /// A fresh token from 256 bits of the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`EntropyError`] when the OS has no randomness to give (never seen on a running Linux).
    pub fn generate() -> Result<Self, EntropyError> {
        let mut random = [0u8; TOKEN_RANDOM_BYTES];
        getrandom::fill(&mut random).map_err(|error| EntropyError(error.to_string()))?;
        let token = Self::from_random_bytes(&random);
        random.zeroize();
        Ok(token)
    }

    /// The token whose body encodes `random`. Deterministic, so tests and benchmarks can fix it; real
    /// tokens come from [`Token::generate`].
    pub fn from_random_bytes(random: &[u8; TOKEN_RANDOM_BYTES]) -> Self {
        let mut text = String::with_capacity(TOKEN_LEN);
        text.push_str(TOKEN_PREFIX);
        let mut body = [0u8; BODY_LEN];
        encode_base62(random, &mut body);
        let mut checksum = [0u8; CHECKSUM_LEN];
        encode_base62(&crc32fast::hash(&body).to_be_bytes(), &mut checksum);
        text.extend(body.iter().chain(checksum.iter()).map(|&b| char::from(b)));
        body.zeroize();
        Self(text)
    }

    /// Checks the format of a presented token: prefix, length, alphabet, checksum.
    ///
    /// # Errors
    /// [`TokenParseError`] names the first rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, TokenParseError> {
        let bytes = text.as_bytes();
        if !bytes.starts_with(TOKEN_PREFIX.as_bytes()) {
            return Err(TokenParseError::WrongPrefix);
        }
        if bytes.len() != TOKEN_LEN {
            return Err(TokenParseError::WrongLength);
        }
        let rest = &bytes[TOKEN_PREFIX.len()..];
        if !rest.iter().all(u8::is_ascii_alphanumeric) {
            return Err(TokenParseError::InvalidCharacter);
        }
        let (body, checksum) = rest.split_at(BODY_LEN);
        let mut expected = [0u8; CHECKSUM_LEN];
        encode_base62(&crc32fast::hash(body).to_be_bytes(), &mut expected);
        if checksum != expected {
            return Err(TokenParseError::ChecksumMismatch);
        }
        Ok(Self(text.to_owned()))
    }

    /// The token's text, for the one place that hands it to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 digest that stores key sessions by, so no store ever holds a token in clear.
    pub fn digest(&self) -> TokenDigest {
        TokenDigest(Sha256::digest(self.0.as_bytes()).into())
    }

    /// What a store may learn of this token: the digest it keys the session by, and the key that seals
    /// the real key at rest. Neither reveals the token, nor the one the other.
    pub fn keys(&self) -> TokenKeys {
        let mut sealing = Sha256::new();
        sealing.update(SEALING_KEY_LABEL);
        sealing.update(self.0.as_bytes());
        TokenKeys { digest: self.digest(), sealing: SealingKey(sealing.finalize().into()) }
    }
}

/// Domain separation for [`SealingKey`]: SHA-256 over this label and the token, so the sealing key and the
/// digest (SHA-256 over the token alone) are independent values, and the key cannot be computed from
/// anything a store keeps. The token's 256 random bits make a plain hash a sound key derivation.
const SEALING_KEY_LABEL: &[u8] = b"sidekey/v1/sealing-key\0";

/// What a session store may know of a token: its digest and its sealing key.
#[derive(Debug)]
pub struct TokenKeys {
    digest: TokenDigest,
    sealing: SealingKey,
}

impl TokenKeys {
    /// The digest the session is stored under.
    pub fn digest(&self) -> &TokenDigest {
        &self.digest
    }

    /// The key that seals the session's real key at rest: only a holder of the token can derive it, so a
    /// copy of the store decrypts nothing.
    pub fn sealing_key(&self) -> &SealingKey {
        &self.sealing
    }
}

/// A 256-bit key derived from a token, for encrypting the real key at rest. Redacted, zeroed on drop.
pub struct SealingKey([u8; 32]);

impl SealingKey {
    /// The key's bytes, for the cipher.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for SealingKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(skt_<redacted>)")
    }
}

/// Writes `bytes`, read as one big-endian number, as exactly `out.len()` base62 digits (leading zeros kept).
///
/// Long division over 32-bit limbs by 62^5, five digits per pass: nine passes of eight divisions for a
/// token body. Dividing byte by byte by 62 (1,376 dependent divisions) took 2.6 µs, an eighth of an
/// issue's CPU time (perf, docs/BENCHMARKS.md).
pub(crate) fn encode_base62(bytes: &[u8], out: &mut [u8]) {
    /// 62^5 < 2^30, so a remainder shifted left by 32 bits plus a limb fits in a u64.
    const CHUNK: u64 = 62u64.pow(5);
    let count = bytes.len().div_ceil(4);
    let mut limbs = [0u32; TOKEN_RANDOM_BYTES / 4];
    for (index, byte) in bytes.iter().rev().enumerate() {
        limbs[count - 1 - index / 4] |= u32::from(*byte) << (8 * (index % 4));
    }
    let mut digits = out.iter_mut().rev();
    'passes: loop {
        let mut remainder = 0u64;
        for limb in &mut limbs[..count] {
            let accumulator = (remainder << 32) | u64::from(*limb);
            *limb = (accumulator / CHUNK) as u32;
            remainder = accumulator % CHUNK;
        }
        for _ in 0..5 {
            let Some(digit) = digits.next() else { break 'passes };
            *digit = BASE62[(remainder % 62) as usize];
            remainder /= 62;
        }
    }
    limbs.zeroize();
}

/// SHA-256 of a token: the key under which stores keep a session.
///
/// Not a secret in the way the token is (it cannot be turned back into one), but `Debug` still prints only
/// the [`TokenFingerprint`], because nothing in a log needs more.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// Rebuilds a digest that a store kept.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The partition a store keyed by digest puts this session in: the digest's first byte, uniformly
    /// distributed because SHA-256 is. Session ids carry it ([`crate::SessionId::new_random_in_shard`]).
    pub fn shard(&self) -> u8 {
        self.0[0]
    }

    /// The digest as 64 lowercase hex digits (what a text-keyed store uses).
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// A short, stable label for audit logs: the first 6 bytes of the digest in hex.
    pub fn fingerprint(&self) -> TokenFingerprint {
        let mut prefix = [0u8; 6];
        prefix.copy_from_slice(&self.0[..6]);
        TokenFingerprint(prefix)
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({}…)", self.fingerprint())
    }
}

/// The first 48 bits of a token's digest, in hex: enough to correlate audit events about one token,
/// useless for finding or forging it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenFingerprint([u8; 6]);

impl fmt::Display for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for TokenFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenFingerprint({self})")
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes
        .iter()
        .flat_map(|&b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]])
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: byte-by-byte long division by 62, one digit per pass.
    fn base62_by_schoolbook_division(bytes: &[u8], out: &mut [u8]) {
        let mut number = bytes.to_vec();
        for digit in out.iter_mut().rev() {
            let mut remainder = 0u32;
            for byte in &mut number {
                let accumulator = (remainder << 8) | u32::from(*byte);
                *byte = (accumulator / 62) as u8;
                remainder = accumulator % 62;
            }
            *digit = BASE62[remainder as usize];
        }
    }

    fn base62(bytes: &[u8], digits: usize) -> String {
        let mut out = vec![0u8; digits];
        encode_base62(bytes, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base62_keeps_leading_zeros_and_spells_the_largest_body() {
        assert_eq!(base62(&[0; 32], BODY_LEN), "0".repeat(BODY_LEN));
        assert_eq!(base62(&[0, 0, 0, 61], CHECKSUM_LEN), "00000z");
        assert_eq!(base62(&[0, 0, 0, 62], CHECKSUM_LEN), "000010");
        // 2^256 - 1 needs all 43 digits: 62^43 is just above 2^256.
        let largest = base62(&[0xff; 32], BODY_LEN);
        assert!(!largest.starts_with('0'), "{largest}");
    }

    proptest! {
        #[test]
        fn base62_by_limbs_matches_the_schoolbook_definition(
            body in proptest::array::uniform32(any::<u8>()),
            checksum in any::<u32>(),
        ) {
            let mut expected = [0u8; BODY_LEN];
            base62_by_schoolbook_division(&body, &mut expected);
            prop_assert_eq!(base62(&body, BODY_LEN), String::from_utf8(expected.to_vec()).unwrap());
            let mut expected = [0u8; CHECKSUM_LEN];
            base62_by_schoolbook_division(&checksum.to_be_bytes(), &mut expected);
            prop_assert_eq!(
                base62(&checksum.to_be_bytes(), CHECKSUM_LEN),
                String::from_utf8(expected.to_vec()).unwrap()
            );
        }
    }

    #[test]
    fn a_generated_token_has_the_documented_shape_and_parses() {
        let token = Token::generate().unwrap();
        let text = token.expose();
        assert_eq!(text.len(), TOKEN_LEN);
        assert_eq!(TOKEN_LEN, 53);
        assert!(text.starts_with("skt_"));
        assert_eq!(Token::parse(text).unwrap(), token);
    }

    #[test]
    fn two_generated_tokens_differ() {
        assert_ne!(Token::generate().unwrap(), Token::generate().unwrap());
    }

    #[test]
    fn the_all_zero_and_all_ones_bodies_encode_at_full_width() {
        let zero = Token::from_random_bytes(&[0; 32]);
        assert_eq!(&zero.expose()[4..47], "0".repeat(43));
        // 2^256 - 1 needs all 43 digits: 62^42 < 2^256, so its leading digit is not zero.
        let max = Token::from_random_bytes(&[0xff; 32]);
        assert_ne!(&max.expose()[4..5], "0", "{}", max.expose());
        assert!(Token::parse(zero.expose()).is_ok() && Token::parse(max.expose()).is_ok());
    }

    #[test]
    fn base62_encodes_known_values() {
        let mut out = [0u8; 3];
        encode_base62(&[0, 61], &mut out);
        assert_eq!(&out, b"00z");
        encode_base62(&[0, 62], &mut out);
        assert_eq!(&out, b"010");
        encode_base62(&[0x0e, 0x0f], &mut out); // 3599 = 58*62 + 3
        assert_eq!(&out, b"0w3");
    }

    #[test]
    fn parse_names_each_broken_rule() {
        let good = Token::generate().unwrap();
        let text = good.expose();
        assert_eq!(Token::parse(&text.replacen("skt_", "skx_", 1)), Err(TokenParseError::WrongPrefix));
        assert_eq!(Token::parse("Bearer"), Err(TokenParseError::WrongPrefix));
        assert_eq!(Token::parse(&text[..TOKEN_LEN - 1]), Err(TokenParseError::WrongLength));
        assert_eq!(Token::parse(&format!("{text}0")), Err(TokenParseError::WrongLength));
        let mut foreign = text.to_owned();
        foreign.replace_range(10..11, "-");
        assert_eq!(Token::parse(&foreign), Err(TokenParseError::InvalidCharacter));
        let mut flipped = text.to_owned();
        let replacement = if &text[10..11] == "a" { "b" } else { "a" };
        flipped.replace_range(10..11, replacement);
        assert_eq!(Token::parse(&flipped), Err(TokenParseError::ChecksumMismatch));
    }

    #[test]
    fn debug_is_redacted_and_the_digest_shows_only_a_fingerprint() {
        let token = Token::generate().unwrap();
        let body = &token.expose()[4..];
        let printed = format!("{token:?} {:?} {}", token.digest(), token.digest().fingerprint());
        assert!(!printed.contains(body), "{printed}");
        assert!(!printed.contains(&token.digest().to_hex()), "{printed}");
        assert_eq!(token.digest().fingerprint().to_string().len(), 12);
    }

    #[test]
    fn the_sealing_key_is_independent_of_the_digest_and_redacted() {
        let token = Token::from_random_bytes(&[9; 32]);
        let keys = token.keys();
        assert_eq!(keys.digest(), &token.digest());
        assert_ne!(keys.sealing_key().expose(), keys.digest().as_bytes());
        let mut expected = Sha256::new();
        expected.update(b"sidekey/v1/sealing-key\0");
        expected.update(token.expose().as_bytes());
        assert_eq!(keys.sealing_key().expose(), &<[u8; 32]>::from(expected.finalize()));
        let other = Token::from_random_bytes(&[10; 32]).keys();
        assert_ne!(keys.sealing_key().expose(), other.sealing_key().expose());
        let printed = format!("{keys:?}");
        assert!(printed.contains("redacted") && !printed.contains(&token.digest().to_hex()), "{printed}");
    }

    #[test]
    fn the_digest_is_sha256_of_the_token_text() {
        let token = Token::from_random_bytes(&[7; 32]);
        let expected: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
        assert_eq!(token.digest().as_bytes(), &expected);
        assert_eq!(token.digest().to_hex().len(), 64);
    }

    proptest! {
        #[test]
        fn every_random_body_round_trips(random in any::<[u8; 32]>()) {
            let token = Token::from_random_bytes(&random);
            prop_assert_eq!(token.expose().len(), TOKEN_LEN);
            let parsed = Token::parse(token.expose()).unwrap();
            prop_assert_eq!(parsed.digest(), token.digest());
        }

        #[test]
        fn distinct_bodies_give_distinct_tokens(a in any::<[u8; 32]>(), b in any::<[u8; 32]>()) {
            prop_assume!(a != b);
            prop_assert_ne!(Token::from_random_bytes(&a), Token::from_random_bytes(&b));
        }

        #[test]
        fn any_single_character_change_is_refused(
            random in any::<[u8; 32]>(),
            position in 4usize..TOKEN_LEN,
            replacement in "[0-9A-Za-z]",
        ) {
            let token = Token::from_random_bytes(&random);
            let mut text = token.expose().to_owned();
            prop_assume!(&text[position..=position] != replacement.as_str());
            text.replace_range(position..=position, &replacement);
            // CRC-32 detects every single-symbol error in the body; a change in the checksum itself is a
            // mismatch by construction.
            prop_assert_eq!(Token::parse(&text), Err(TokenParseError::ChecksumMismatch));
        }

        #[test]
        fn parse_never_panics_and_accepts_only_well_formed_text(text in "\\PC{0,80}") {
            if let Ok(token) = Token::parse(&text) {
                prop_assert_eq!(token.expose(), text.as_str());
                prop_assert!(text.starts_with(TOKEN_PREFIX) && text.len() == TOKEN_LEN);
            }
        }
    }
}
