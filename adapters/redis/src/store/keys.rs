//! Key names and the encodings of values stored under them.
//!
//! Every key starts with the hash tag `{<prefix>:<shard as 2 hex>}`, so all keys of one shard map to one
//! Redis Cluster slot (Redis hashes only the text between the first `{` and the next `}`).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::connection::ConfigError;
use sidekey_domain::{SecretRef, SessionId, Subject, TokenDigest};

/// How many shards the key space has: one per value of the digest's first byte.
pub(crate) const SHARDS: usize = 256;

/// Builds every key name under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct KeySpace {
    prefix: String,
}

impl KeySpace {
    /// A key space under `prefix`, refused when the prefix is empty or holds a brace (a brace would
    /// change which part of every key Redis Cluster hashes, and so which slot it lands in).
    pub(crate) fn new(prefix: &str) -> Result<Self, ConfigError> {
        if prefix.is_empty() || prefix.contains(['{', '}']) || prefix.chars().any(char::is_whitespace) {
            return Err(ConfigError::InvalidPrefix);
        }
        Ok(Self { prefix: prefix.to_owned() })
    }

    /// The prefix itself (the usage ledger builds its own hash tags under it).
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{<prefix>:<shard>}`: the hash tag shared by every key of one shard.
    pub(crate) fn tag(&self, shard: u8) -> String {
        format!("{{{}:{shard:02x}}}", self.prefix)
    }

    /// The session hash: `<tag>:s:<digest hex>`.
    pub(crate) fn session(&self, digest: &TokenDigest) -> String {
        format!("{}:s:{}", self.tag(digest.shard()), digest.to_hex())
    }

    /// The sealed real key: `<tag>:k:<digest hex>`.
    pub(crate) fn sealed(&self, digest: &TokenDigest) -> String {
        format!("{}:k:{}", self.tag(digest.shard()), digest.to_hex())
    }

    /// The id index entry: `<tag of the id's shard>:id:<uuid>` → digest hex.
    pub(crate) fn id(&self, id: SessionId) -> String {
        format!("{}:id:{}", self.tag(id.shard()), id.as_uuid().hyphenated())
    }

    /// Every session of a shard, scored by expiry: `<tag>:all`.
    pub(crate) fn all(&self, shard: u8) -> String {
        format!("{}:all", self.tag(shard))
    }

    /// The sessions of a shard bound to one `secret_key_id`: `<tag>:ref:<secret_key_id>`.
    pub(crate) fn by_secret_ref(&self, shard: u8, secret_ref: &SecretRef) -> String {
        format!("{}:ref:{}", self.tag(shard), secret_ref.as_str())
    }

    /// The sessions of a shard belonging to one subject: `<tag>:sub:<subject>`.
    pub(crate) fn by_subject(&self, shard: u8, subject: &Subject) -> String {
        format!("{}:sub:{}", self.tag(shard), subject.as_str())
    }

    /// The pub/sub channel on which writes announce the digests whose answer they changed:
    /// `<prefix>:invalidations` (a channel, not a key: it holds nothing and needs no hash tag).
    pub(crate) fn invalidations(&self) -> String {
        format!("{}:invalidations", self.prefix)
    }
}

/// A digest as an index member: 64 lowercase hex digits.
pub(crate) fn member(digest: &TokenDigest) -> String {
    digest.to_hex()
}

/// The digest an index member or id entry names.
pub(crate) fn parse_member(text: &[u8]) -> Option<TokenDigest> {
    if text.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        let high = hex_value(pair[0])?;
        let low = hex_value(pair[1])?;
        *byte = (high << 4) | low;
    }
    Some(TokenDigest::from_bytes(bytes))
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// Nanoseconds since the Unix epoch: exact for every `SystemTime` a session can hold until the year 2554
/// (0 before the epoch, saturated after).
pub(crate) fn nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

/// The instant `nanos` nanoseconds after the epoch.
pub(crate) fn from_nanos(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// A duration in nanoseconds, saturated.
pub(crate) fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// An instant as the fixed-width (20 digit) decimal the session hash stores. Fixed width makes Lua's
/// string comparison a numeric one, exact to the nanosecond: Lua's numbers are doubles, which cannot hold
/// today's epoch nanoseconds exactly, and the store must give back exactly the instants it was given.
pub(crate) fn instant_text(nanos: u64) -> String {
    let mut text = String::with_capacity(20);
    let _ = write!(text, "{nanos:020}");
    text
}

/// Milliseconds for Redis's own clocks (sorted-set scores, `PEXPIREAT`), rounded up, so a deadline in
/// Redis is never earlier than the session's.
pub(crate) fn millis_ceil(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000)
}

/// Milliseconds rounded down (for "now": an index entry whose rounded-up deadline is at or before this
/// has certainly ended).
pub(crate) fn millis_floor(nanos: u64) -> u64 {
    nanos / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_session_carries_its_shards_hash_tag() {
        let space = KeySpace::new("sidekey").unwrap();
        let digest = TokenDigest::from_bytes([0xab; 32]);
        let id = SessionId::new_random_in_shard(0xab);
        let tag = "{sidekey:ab}";
        for key in [
            space.session(&digest),
            space.sealed(&digest),
            space.id(id),
            space.all(0xab),
            space.by_secret_ref(0xab, &SecretRef::parse("openai").unwrap()),
            space.by_subject(0xab, &Subject::parse("a{b}c").unwrap()),
        ] {
            assert!(key.starts_with(tag), "{key}");
        }
        assert_eq!(space.session(&digest), format!("{tag}:s:{}", "ab".repeat(32)));
        assert_eq!(space.tag(7), "{sidekey:07}");
        assert_eq!(space.invalidations(), "sidekey:invalidations");
    }

    #[test]
    fn a_prefix_with_braces_whitespace_or_nothing_is_refused() {
        for prefix in ["", "a{b", "a}b", "a b"] {
            assert!(KeySpace::new(prefix).is_err(), "{prefix:?}");
        }
        assert!(KeySpace::new("sidekey-test:1").is_ok());
    }

    #[test]
    fn members_round_trip_and_junk_is_refused() {
        let digest = TokenDigest::from_bytes(std::array::from_fn(|i| i as u8 * 7));
        assert_eq!(parse_member(member(&digest).as_bytes()), Some(digest));
        assert_eq!(parse_member(b"xyz"), None);
        assert_eq!(parse_member("G".repeat(64).as_bytes()), None);
        assert_eq!(parse_member("AB".repeat(32).as_bytes()), None, "only lowercase is written");
    }

    #[test]
    fn instants_round_trip_to_the_nanosecond_and_sort_as_text() {
        let now = SystemTime::now();
        assert_eq!(from_nanos(nanos(now)), now);
        let (a, b) = (instant_text(999_999_999), instant_text(1_000_000_000));
        assert_eq!(a.len(), 20);
        assert!(a < b);
        assert_eq!(millis_ceil(1_000_001), 2);
        assert_eq!(millis_floor(1_999_999), 1);
        assert_eq!(millis_ceil(2_000_000), 2);
    }
}
