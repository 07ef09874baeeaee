//! One-time tickets: what a browser's `EventSource` or `WebSocket` (which cannot send `Authorization`)
//! presents in the query instead of its session token.
//!
//! A ticket is `skq_` + 43 base62 characters (256 bits from the OS CSPRNG) + a 6-character checksum, the
//! token's layout under another prefix so scanners tell them apart. A store keeps a ticket only by its
//! [`TicketDigest`], next to the session token [sealed](Ticket::seal) under a key derived from the ticket:
//! a copy of the store holds neither the ticket nor the token. Each key seals exactly one token (a ticket
//! is fresh and used once), so the cipher's nonce may be fixed.

use std::fmt;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::token::{EntropyError, Token, encode_base62};

/// The prefix of every ticket.
pub const TICKET_PREFIX: &str = "skq_";
/// How long a ticket may wait for its one use: 30 s, long enough for a page to open its stream right
/// after asking, short enough that a ticket seen in a URL is useless moments later (the contract's value).
pub const TICKET_LIFETIME: Duration = Duration::from_secs(30);

const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
const TICKET_LEN: usize = TICKET_PREFIX.len() + BODY_LEN + CHECKSUM_LEN;
/// Domain separation between the ticket's digest and its sealing key.
const DIGEST_LABEL: &[u8] = b"sidekey/v1/ticket-digest\0";
const SEALING_LABEL: &[u8] = b"sidekey/v1/ticket-sealing-key\0";

/// A one-time ticket. `Debug` is redacted, there is no `Display`, and the text is zeroed on drop.
pub struct Ticket(String);

/// Why a text is not a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ticket is malformed")]
pub struct TicketParseError;

/// What a store keys a ticket by: SHA-256 over a label and the ticket. `Debug` prints a short prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TicketDigest([u8; 32]);

impl TicketDigest {
    /// Rebuilds a digest a store kept.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hex digits (what a text-keyed store uses).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }
}

impl fmt::Debug for TicketDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TicketDigest({}…)", &self.to_hex()[..12])
    }
}

impl Ticket {
    /// A fresh ticket from 256 bits of the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`EntropyError`] when the OS has no randomness to give.
    pub fn generate() -> Result<Self, EntropyError> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|error| EntropyError::new(error.to_string()))?;
        let mut text = String::with_capacity(TICKET_LEN);
        text.push_str(TICKET_PREFIX);
        let mut body = [0u8; BODY_LEN];
        encode_base62(&random, &mut body);
        let mut checksum = [0u8; CHECKSUM_LEN];
        encode_base62(&crc32fast::hash(&body).to_be_bytes(), &mut checksum);
        text.extend(body.iter().chain(checksum.iter()).map(|&b| char::from(b)));
        body.zeroize();
        random.zeroize();
        Ok(Self(text))
    }

    /// Checks a presented ticket's prefix, length, alphabet and checksum, without any I/O.
    ///
    /// # Errors
    /// [`TicketParseError`].
    pub fn parse(text: &str) -> Result<Self, TicketParseError> {
        let bytes = text.as_bytes();
        if !bytes.starts_with(TICKET_PREFIX.as_bytes()) || bytes.len() != TICKET_LEN {
            return Err(TicketParseError);
        }
        let rest = &bytes[TICKET_PREFIX.len()..];
        if !rest.iter().all(u8::is_ascii_alphanumeric) {
            return Err(TicketParseError);
        }
        let (body, checksum) = rest.split_at(BODY_LEN);
        let mut expected = [0u8; CHECKSUM_LEN];
        encode_base62(&crc32fast::hash(body).to_be_bytes(), &mut expected);
        if checksum != expected {
            return Err(TicketParseError);
        }
        Ok(Self(text.to_owned()))
    }

    /// The ticket's text, for the one answer that hands it to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest a store keys this ticket by.
    pub fn digest(&self) -> TicketDigest {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_LABEL);
        hasher.update(self.0.as_bytes());
        TicketDigest(hasher.finalize().into())
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        let mut hasher = Sha256::new();
        hasher.update(SEALING_LABEL);
        hasher.update(self.0.as_bytes());
        let mut key: [u8; 32] = hasher.finalize().into();
        let cipher = ChaCha20Poly1305::new(&Key::from(key));
        key.zeroize();
        cipher
    }

    /// `token` sealed under this ticket's key: what a store keeps beside the digest.
    pub fn seal(&self, token: &Token) -> Vec<u8> {
        self.cipher()
            .encrypt(&Nonce::default(), token.expose().as_bytes())
            .expect("ChaCha20-Poly1305 seals any message this short")
    }

    /// The token sealed by [`Ticket::seal`] under this ticket; `None` when `sealed` was not (altered, or
    /// another ticket's).
    pub fn open(&self, sealed: &[u8]) -> Option<Token> {
        let mut clear = self.cipher().decrypt(&Nonce::default(), sealed).ok()?;
        let token = std::str::from_utf8(&clear).ok().and_then(|text| Token::parse(text).ok());
        clear.zeroize();
        token
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket(<redacted>)")
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ticket_parses_and_a_mangled_one_does_not() {
        let ticket = Ticket::generate().unwrap();
        assert!(ticket.expose().starts_with(TICKET_PREFIX));
        assert_eq!(ticket.expose().len(), TICKET_LEN);
        assert!(Ticket::parse(ticket.expose()).is_ok());
        let mut mangled = ticket.expose().to_owned();
        let last = mangled.pop().unwrap();
        mangled.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(Ticket::parse(&mangled).unwrap_err(), TicketParseError);
        assert!(Ticket::parse(&ticket.expose().replace("skq_", "skt_")).is_err());
        assert!(Ticket::parse("skq_").is_err());
    }

    #[test]
    fn a_sealed_token_opens_only_with_its_own_ticket() {
        let token = Token::generate().unwrap();
        let ticket = Ticket::generate().unwrap();
        let sealed = ticket.seal(&token);
        assert!(!sealed.windows(8).any(|window| token.expose().as_bytes().windows(8).any(|t| t == window)));
        assert_eq!(ticket.open(&sealed), Some(token));
        assert_eq!(Ticket::generate().unwrap().open(&sealed), None);
        let mut altered = sealed.clone();
        altered[0] ^= 1;
        assert_eq!(ticket.open(&altered), None);
        assert_ne!(ticket.digest(), Ticket::generate().unwrap().digest());
        assert!(!format!("{ticket:?}").contains(ticket.expose()));
    }
}
