//! The bridge protocol, version 1: the messages on the bus, how they are authenticated, and how a real
//! key is sealed to the one instance that asked for it. `docs/bridge-protocol.md` is the specification
//! for implementers in other languages; its test vectors are checked against this module.
//!
//! # In short
//! - Every party holds the *bridge secret* (shared, from configuration). From it, HKDF-SHA256 derives
//!   the *authentication key*.
//! - A **request** names a `secret_key_id`, the requester's inbox and a fresh X25519 public key, and is
//!   authenticated by HMAC-SHA256 under the authentication key: a bridge answers no one else, so a rogue
//!   subscriber cannot ask for keys sealed to itself.
//! - A **reply** carries the bridge's own fresh X25519 public key and an XChaCha20-Poly1305 ciphertext
//!   of the answer (the key, "not found" or a failure) under a key derived from the X25519 shared secret
//!   *and* the authentication key: only the requester can open it, and only a holder of the bridge
//!   secret can have made it. The request's id and `secret_key_id` are bound as associated data, so a
//!   reply cannot be replayed to another request.
//! - An **announcement** says that a `secret_key_id` was rotated or withdrawn; it is authenticated by
//!   HMAC-SHA256 like a request and carries its time, so an old one replayed later is ignored.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sidekey_domain::{SecretRef, SecretValue};
use uuid::Uuid;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// The protocol version carried in every message as `v`.
pub const PROTOCOL_VERSION: u8 = 1;
/// The shortest bridge secret accepted, in bytes: 128 bits if it is random.
pub const MIN_BRIDGE_SECRET_LEN: usize = 16;
/// The longest inbox address accepted in a request.
const MAX_INBOX_LEN: usize = 200;
/// The longest failure text a bridge may send (it is logged, so it is cut).
const MAX_FAILURE_LEN: usize = 200;

const HKDF_SALT: &[u8] = b"sidekey-bridge/v1";
const AUTH_KEY_INFO: &[u8] = b"sidekey-bridge/v1/auth";
const REQUEST_CONTEXT: &str = "sidekey-bridge/v1/request";
const REPLY_CONTEXT: &str = "sidekey-bridge/v1/reply";
const ANNOUNCEMENT_CONTEXT: &str = "sidekey-bridge/v1/announcement";

/// The message types (`type`).
const REQUEST_TYPE: &str = "secret.request";
const REPLY_TYPE: &str = "secret.reply";
const ANNOUNCEMENT_TYPE: &str = "secret.rotated";

/// Why a message was refused. The texts name what is wrong, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The bridge secret is too short.
    #[error("the bridge secret must be at least {MIN_BRIDGE_SECRET_LEN} bytes")]
    WeakSecret,
    /// Not JSON of the expected shape, or a field out of its domain.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// Another protocol version.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// The MAC does not match: the sender does not hold the bridge secret, or the message was altered.
    #[error("the message is not authenticated by the bridge secret")]
    Unauthenticated,
    /// The reply cannot be opened: forged, altered, or sealed to another request.
    #[error("the reply cannot be opened")]
    Unsealable,
}

/// The shared bridge secret, reduced to the authentication key derived from it. `Debug` is redacted
/// and the key is zeroed on drop.
#[derive(Clone)]
pub struct BridgeSecret {
    auth_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for BridgeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BridgeSecret(<redacted>)")
    }
}

impl BridgeSecret {
    /// Derives the authentication key: HKDF-SHA256(salt = "sidekey-bridge/v1", ikm = secret,
    /// info = "sidekey-bridge/v1/auth"), 32 bytes.
    ///
    /// # Errors
    /// [`ProtocolError::WeakSecret`] below [`MIN_BRIDGE_SECRET_LEN`] bytes.
    pub fn new(secret: &str) -> Result<Self, ProtocolError> {
        if secret.len() < MIN_BRIDGE_SECRET_LEN {
            return Err(ProtocolError::WeakSecret);
        }
        let mut auth_key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(HKDF_SALT), secret.as_bytes())
            .expand(AUTH_KEY_INFO, auth_key.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Ok(Self { auth_key })
    }

    fn mac(&self, canonical: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.auth_key.as_ref())
            .expect("HMAC takes a key of any length");
        mac.update(canonical.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn verify_mac(&self, canonical: &str, presented: &str) -> Result<(), ProtocolError> {
        let presented = decode_fixed::<32>(presented).map_err(|_| ProtocolError::Unauthenticated)?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.auth_key.as_ref())
            .expect("HMAC takes a key of any length");
        mac.update(canonical.as_bytes());
        // Constant time, so the MAC cannot be guessed byte by byte.
        mac.verify_slice(&presented).map_err(|_| ProtocolError::Unauthenticated)
    }
}

/// An X25519 key pair made for one request or one reply, and never reused.
pub struct EphemeralKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EphemeralKey")
            .field("public", &encode(self.public.as_bytes()))
            .finish_non_exhaustive()
    }
}

impl EphemeralKey {
    /// A fresh key pair from the operating system's randomness.
    ///
    /// # Errors
    /// The operating system had no randomness to give.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut())?;
        Ok(Self::from_secret_bytes(*bytes))
    }

    /// The key pair of a given private key (the test vectors).
    pub fn from_secret_bytes(mut bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        bytes.zeroize();
        let public = PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The public half, base64url.
    pub fn public_base64(&self) -> String {
        encode(self.public.as_bytes())
    }
}

/// A request for the real key named `secret_key_id`, as it travels (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRequest {
    /// [`PROTOCOL_VERSION`].
    pub v: u8,
    /// `"secret.request"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The correlation id (a UUID), echoed by the reply.
    pub id: String,
    /// The name of the real key.
    pub secret_key_id: String,
    /// The inbox the reply goes to.
    pub reply_to: String,
    /// The requester's ephemeral X25519 public key, base64url (32 bytes).
    pub public_key: String,
    /// When the requester stops waiting, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// HMAC-SHA256 of the canonical form under the authentication key, base64url.
    pub mac: String,
}

/// A request whose MAC and fields were checked.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    /// The correlation id.
    pub id: Uuid,
    /// The name of the real key.
    pub secret_ref: SecretRef,
    /// The inbox the reply goes to.
    pub reply_to: String,
    /// When the requester stops waiting (ms since the epoch).
    pub expires_at_ms: u64,
    requester: PublicKey,
}

impl SecretRequest {
    /// A request, authenticated with `secret`, for `secret_ref`, answered at `reply_to` and sealed to
    /// `key`.
    pub fn new(
        secret: &BridgeSecret,
        id: Uuid,
        secret_ref: &SecretRef,
        reply_to: &str,
        key: &EphemeralKey,
        expires_at_ms: u64,
    ) -> Self {
        let mut request = Self {
            v: PROTOCOL_VERSION,
            kind: REQUEST_TYPE.to_owned(),
            id: id.hyphenated().to_string(),
            secret_key_id: secret_ref.as_str().to_owned(),
            reply_to: reply_to.to_owned(),
            public_key: key.public_base64(),
            expires_at_ms,
            mac: String::new(),
        };
        request.mac = encode(&secret.mac(&request.canonical()));
        request
    }

    /// `"sidekey-bridge/v1/request\n{id}\n{secret_key_id}\n{reply_to}\n{public_key}\n{expires_at_ms}"`.
    /// No field can hold a newline (each is checked), so the fields cannot be shifted between each
    /// other.
    fn canonical(&self) -> String {
        format!(
            "{REQUEST_CONTEXT}\n{}\n{}\n{}\n{}\n{}",
            self.id, self.secret_key_id, self.reply_to, self.public_key, self.expires_at_ms
        )
    }

    /// Parses and checks a request as it arrives at a bridge.
    ///
    /// # Errors
    /// [`ProtocolError`]: malformed, another version, or not authenticated.
    pub fn verify(bytes: &[u8], secret: &BridgeSecret) -> Result<VerifiedRequest, ProtocolError> {
        let request: Self =
            serde_json::from_slice(bytes).map_err(|_| ProtocolError::Malformed("not a request"))?;
        if request.v != PROTOCOL_VERSION {
            return Err(ProtocolError::Version(request.v));
        }
        if request.kind != REQUEST_TYPE {
            return Err(ProtocolError::Malformed("type is not secret.request"));
        }
        let id = parse_id(&request.id)?;
        let secret_ref = SecretRef::parse(&request.secret_key_id)
            .map_err(|_| ProtocolError::Malformed("secret_key_id"))?;
        if !is_inbox_address(&request.reply_to) {
            return Err(ProtocolError::Malformed("reply_to"));
        }
        let requester = PublicKey::from(
            decode_fixed::<32>(&request.public_key).map_err(|_| ProtocolError::Malformed("public_key"))?,
        );
        secret.verify_mac(&request.canonical(), &request.mac)?;
        Ok(VerifiedRequest {
            id,
            secret_ref,
            reply_to: request.reply_to,
            expires_at_ms: request.expires_at_ms,
            requester,
        })
    }

    /// The JSON form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a request serialises")
    }
}

/// What a bridge answers.
#[derive(Debug)]
pub enum Answer {
    /// The real key.
    Found(SecretValue),
    /// The bridge's source has no key of that name.
    NotFound,
    /// The bridge's source failed; the text is for the requester's log.
    Failed(String),
}

/// The sealed plaintext: `{"status":"found","secret":"…"}`, `{"status":"not_found"}` or
/// `{"status":"failed","message":"…"}`.
#[derive(Serialize, Deserialize)]
struct SealedAnswer<'a> {
    // Borrowed when it can be, owned when the writer escaped a character.
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    secret: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// A reply, as it travels (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretReply {
    /// [`PROTOCOL_VERSION`].
    pub v: u8,
    /// `"secret.reply"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The request's id.
    pub id: String,
    /// The bridge's ephemeral X25519 public key, base64url.
    pub public_key: String,
    /// The XChaCha20-Poly1305 nonce, base64url (24 bytes).
    pub nonce: String,
    /// The sealed answer with its 16-byte tag, base64url.
    pub sealed: String,
}

impl SecretReply {
    /// The reply to `request`, sealed with a fresh key pair and nonce.
    ///
    /// # Errors
    /// The operating system had no randomness to give.
    pub fn seal(
        secret: &BridgeSecret,
        request: &VerifiedRequest,
        answer: &Answer,
    ) -> Result<Self, getrandom::Error> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce)?;
        Ok(Self::seal_with(secret, request, answer, &EphemeralKey::generate()?, nonce))
    }

    /// The reply to `request` sealed with the given key pair and nonce (deterministic: the test
    /// vectors). Never reuse either.
    pub fn seal_with(
        secret: &BridgeSecret,
        request: &VerifiedRequest,
        answer: &Answer,
        bridge_key: &EphemeralKey,
        nonce: [u8; 24],
    ) -> Self {
        let id = request.id.hyphenated().to_string();
        let requester_public = encode(request.requester.as_bytes());
        let bridge_public = bridge_key.public_base64();
        let shared = bridge_key.secret.diffie_hellman(&request.requester);
        let cipher = reply_cipher(secret, shared.as_bytes(), &requester_public, &bridge_public);
        let plaintext =
            Zeroizing::new(serde_json::to_vec(&sealed_answer(answer)).expect("an answer serialises"));
        let aad = reply_aad(&id, request.secret_ref.as_str());
        let sealed = cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: &plaintext, aad: aad.as_bytes() })
            .expect("XChaCha20-Poly1305 seals any message under 256 GiB");
        Self {
            v: PROTOCOL_VERSION,
            kind: REPLY_TYPE.to_owned(),
            id,
            public_key: bridge_public,
            nonce: encode(&nonce),
            sealed: encode(&sealed),
        }
    }

    /// The JSON form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reply serialises")
    }

    /// The id a reply answers, read without opening it (to find the waiting request).
    ///
    /// # Errors
    /// [`ProtocolError::Malformed`] when the bytes are not a reply.
    pub fn parse(bytes: &[u8]) -> Result<(Uuid, Self), ProtocolError> {
        let reply: Self =
            serde_json::from_slice(bytes).map_err(|_| ProtocolError::Malformed("not a reply"))?;
        if reply.v != PROTOCOL_VERSION {
            return Err(ProtocolError::Version(reply.v));
        }
        if reply.kind != REPLY_TYPE {
            return Err(ProtocolError::Malformed("type is not secret.reply"));
        }
        Ok((parse_id(&reply.id)?, reply))
    }

    /// Opens the reply to the request made with `key` for `secret_ref`.
    ///
    /// # Errors
    /// [`ProtocolError::Unsealable`] when it was not sealed by a holder of the bridge secret for this
    /// very request; [`ProtocolError::Malformed`] for a malformed field.
    pub fn open(
        &self,
        secret: &BridgeSecret,
        key: &EphemeralKey,
        secret_ref: &SecretRef,
    ) -> Result<Answer, ProtocolError> {
        let bridge_public = PublicKey::from(
            decode_fixed::<32>(&self.public_key).map_err(|_| ProtocolError::Malformed("public_key"))?,
        );
        let nonce = decode_fixed::<24>(&self.nonce).map_err(|_| ProtocolError::Malformed("nonce"))?;
        let sealed = URL_SAFE_NO_PAD.decode(&self.sealed).map_err(|_| ProtocolError::Malformed("sealed"))?;
        let shared = key.secret.diffie_hellman(&bridge_public);
        // A low-order public key gives an all-zero shared secret that anyone could compute.
        if !shared.was_contributory() {
            return Err(ProtocolError::Unsealable);
        }
        let cipher = reply_cipher(secret, shared.as_bytes(), &key.public_base64(), &self.public_key);
        let aad = reply_aad(&self.id, secret_ref.as_str());
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(&XNonce::from(nonce), Payload { msg: &sealed, aad: aad.as_bytes() })
                .map_err(|_| ProtocolError::Unsealable)?,
        );
        // From here the reply is authentic: an answer that cannot be read is the bridge's failure (502 at
        // once), not a forgery to wait past.
        let Ok(answer) = serde_json::from_slice::<SealedAnswer<'_>>(&plaintext) else {
            return Ok(Answer::Failed("the bridge sent an unreadable answer".to_owned()));
        };
        match (answer.status.as_ref(), answer.secret) {
            ("found", Some(text)) => Ok(SecretValue::new(text.into_owned()).map_or_else(
                |_| Answer::Failed("the bridge sent an empty key or one with a control character".to_owned()),
                Answer::Found,
            )),
            ("not_found", _) => Ok(Answer::NotFound),
            ("failed", _) => Ok(Answer::Failed(cut(answer.message.unwrap_or_default()))),
            _ => Ok(Answer::Failed("the bridge sent an answer of unknown status".to_owned())),
        }
    }
}

fn sealed_answer(answer: &Answer) -> SealedAnswer<'_> {
    match answer {
        Answer::Found(value) => SealedAnswer {
            status: "found".into(),
            secret: Some(std::borrow::Cow::Borrowed(value.expose())),
            message: None,
        },
        Answer::NotFound => SealedAnswer { status: "not_found".into(), secret: None, message: None },
        Answer::Failed(message) => {
            SealedAnswer { status: "failed".into(), secret: None, message: Some(cut(message.clone())) }
        }
    }
}

/// The reply key: HKDF-SHA256(salt = authentication key, ikm = X25519 shared secret,
/// info = "sidekey-bridge/v1/reply\n{requester public}\n{bridge public}"), 32 bytes. Mixing in the
/// authentication key is what makes a reply authentic: without the bridge secret no one can seal one
/// that opens.
fn reply_cipher(
    secret: &BridgeSecret,
    shared: &[u8; 32],
    requester: &str,
    bridge: &str,
) -> XChaCha20Poly1305 {
    let info = format!("{REPLY_CONTEXT}\n{requester}\n{bridge}");
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(secret.auth_key.as_ref()), shared)
        .expand(info.as_bytes(), key.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    XChaCha20Poly1305::new_from_slice(key.as_ref()).expect("the key is 32 bytes")
}

/// `"sidekey-bridge/v1/reply\n{id}\n{secret_key_id}"`.
fn reply_aad(id: &str, secret_key_id: &str) -> String {
    format!("{REPLY_CONTEXT}\n{id}\n{secret_key_id}")
}

/// Why a key is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnouncementReason {
    /// The key was replaced by a new one.
    Rotated,
    /// The key was withdrawn.
    Withdrawn,
}

impl AnnouncementReason {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotated => "rotated",
            Self::Withdrawn => "withdrawn",
        }
    }
}

/// An announcement that a key was rotated or withdrawn, as it travels (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretAnnouncement {
    /// [`PROTOCOL_VERSION`].
    pub v: u8,
    /// `"secret.rotated"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A UUID, so that an instance acts once on each announcement.
    pub id: String,
    /// The key concerned.
    pub secret_key_id: String,
    /// Why.
    pub reason: AnnouncementReason,
    /// When the bridge announced it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// HMAC-SHA256 of the canonical form under the authentication key, base64url.
    pub mac: String,
}

/// An announcement whose MAC and fields were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAnnouncement {
    /// Its id.
    pub id: Uuid,
    /// The key concerned.
    pub secret_ref: SecretRef,
    /// Why.
    pub reason: AnnouncementReason,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

impl SecretAnnouncement {
    /// An announcement authenticated with `secret`.
    pub fn new(
        secret: &BridgeSecret,
        id: Uuid,
        secret_ref: &SecretRef,
        reason: AnnouncementReason,
        at_ms: u64,
    ) -> Self {
        let mut announcement = Self {
            v: PROTOCOL_VERSION,
            kind: ANNOUNCEMENT_TYPE.to_owned(),
            id: id.hyphenated().to_string(),
            secret_key_id: secret_ref.as_str().to_owned(),
            reason,
            at_ms,
            mac: String::new(),
        };
        announcement.mac = encode(&secret.mac(&announcement.canonical()));
        announcement
    }

    /// `"sidekey-bridge/v1/announcement\n{id}\n{secret_key_id}\n{reason}\n{at_ms}"`.
    fn canonical(&self) -> String {
        format!(
            "{ANNOUNCEMENT_CONTEXT}\n{}\n{}\n{}\n{}",
            self.id,
            self.secret_key_id,
            self.reason.as_str(),
            self.at_ms
        )
    }

    /// Parses and checks an announcement.
    ///
    /// # Errors
    /// [`ProtocolError`]: malformed, another version, or not authenticated.
    pub fn verify(bytes: &[u8], secret: &BridgeSecret) -> Result<VerifiedAnnouncement, ProtocolError> {
        let announcement: Self =
            serde_json::from_slice(bytes).map_err(|_| ProtocolError::Malformed("not an announcement"))?;
        if announcement.v != PROTOCOL_VERSION {
            return Err(ProtocolError::Version(announcement.v));
        }
        if announcement.kind != ANNOUNCEMENT_TYPE {
            return Err(ProtocolError::Malformed("type is not secret.rotated"));
        }
        let id = parse_id(&announcement.id)?;
        let secret_ref = SecretRef::parse(&announcement.secret_key_id)
            .map_err(|_| ProtocolError::Malformed("secret_key_id"))?;
        secret.verify_mac(&announcement.canonical(), &announcement.mac)?;
        Ok(VerifiedAnnouncement { id, secret_ref, reason: announcement.reason, at_ms: announcement.at_ms })
    }

    /// The JSON form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an announcement serialises")
    }
}

/// Inbox addresses are printable ASCII without spaces (channel names on any bus).
fn is_inbox_address(address: &str) -> bool {
    !address.is_empty()
        && address.len() <= MAX_INBOX_LEN
        && address.bytes().all(|byte| byte.is_ascii_graphic())
}

/// Ids are UUIDs in their hyphenated lower-case form, exactly (the MAC covers the text).
fn parse_id(text: &str) -> Result<Uuid, ProtocolError> {
    Uuid::try_parse(text)
        .ok()
        .filter(|id| id.hyphenated().to_string() == text)
        .ok_or(ProtocolError::Malformed("id"))
}

fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_fixed<const N: usize>(text: &str) -> Result<[u8; N], ()> {
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| ())?;
    bytes.try_into().map_err(|_| ())
}

fn cut(mut text: String) -> String {
    text.retain(|c| !c.is_control());
    if text.len() > MAX_FAILURE_LEN {
        let mut end = MAX_FAILURE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests;
