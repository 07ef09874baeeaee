//! Key names of the ledger's accounts.
//!
//! Each account lives under one hash tag, so that one script may read and update all of its keys, on one
//! server as on Redis Cluster (Redis hashes only the text between the first `{` and the next `}`):
//!
//! | account | hash tag (`<tag>` below) | its keys |
//! |---|---|---|
//! | a session | `{<prefix>:<shard as 2 hex>}`, its session's shard | `<tag>:usage:<session uuid>` (+ the suffixes below), `<tag>:usage:<session uuid>:rate` |
//! | a subject | `{<prefix>:sub:<subject>}` | `<tag>:day:<YYYY-MM-DD>`, `<tag>:month:<YYYY-MM>` (+ the suffixes below), `<tag>:rate` |
//! | a real key | `{<prefix>:key:<secret_key_id>}` | `<tag>:day:<YYYY-MM-DD>`, `<tag>:month:<YYYY-MM>` (+ the suffixes below) |
//!
//! The session's tag is the session store's shard tag, so its counters sit in the same slot as the
//! session itself. Every counter is four keys ([`CounterKeys`]): the totals hash under the name above,
//! and `:held`, `:amounts`, `:settled` after it.
//!
//! A subject may hold braces (any visible ASCII): a `}` inside it ends the hash tag early, which only
//! moves the subject to another slot: every key of the subject still starts with the same text, so they
//! all hash alike. Names stay distinct across subjects, because no suffix written after the closing `}`
//! holds a `}` itself (two subjects' names could only coincide if one suffix contained `}:`).

use sidekey_domain::{Period, SecretRef, SessionId, Subject};

use crate::connection::ConfigError;
use crate::store::keys::KeySpace;

/// The four keys of one counter, all under one account's hash tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CounterKeys {
    /// Hash: `requests`, `input`, `output`, `reserved` (tokens of the live reservations), `keep` (when
    /// the counter may be forgotten, milliseconds by the service's clock).
    pub(crate) totals: String,
    /// Sorted set: the live reservations' ids, scored by when they lapse (milliseconds).
    pub(crate) held: String,
    /// Hash: each live reservation's id → its tokens.
    pub(crate) amounts: String,
    /// Sorted set: the ids of settled reservations, scored by when they may be forgotten (milliseconds):
    /// the tombstones that make a second settle count nothing.
    pub(crate) settled: String,
}

impl CounterKeys {
    fn under(totals: String) -> Self {
        Self {
            held: format!("{totals}:held"),
            amounts: format!("{totals}:amounts"),
            settled: format!("{totals}:settled"),
            totals,
        }
    }

    /// The four names, in the order the scripts take them.
    pub(crate) fn all(&self) -> [&str; 4] {
        [&self.totals, &self.held, &self.amounts, &self.settled]
    }
}

/// Builds every key name of the ledger under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct LedgerKeys {
    space: KeySpace,
}

impl LedgerKeys {
    /// The ledger's keys under `prefix`, refused as the session store refuses it (empty, braces,
    /// whitespace).
    pub(crate) fn new(prefix: &str) -> Result<Self, ConfigError> {
        Ok(Self { space: KeySpace::new(prefix)? })
    }

    /// A session's counter: `{<prefix>:<shard>}:usage:<uuid>`.
    pub(crate) fn session(&self, session: SessionId) -> CounterKeys {
        CounterKeys::under(self.session_base(session))
    }

    /// A session's GCRA state: `{<prefix>:<shard>}:usage:<uuid>:rate`.
    pub(crate) fn session_rate(&self, session: SessionId) -> String {
        format!("{}:rate", self.session_base(session))
    }

    fn session_base(&self, session: SessionId) -> String {
        format!("{}:usage:{}", self.space.tag(session.shard()), session.as_uuid().hyphenated())
    }

    /// A subject's counter for one window: `{<prefix>:sub:<subject>}:<period>:<label>`.
    pub(crate) fn subject(&self, subject: &Subject, period: Period, label: &str) -> CounterKeys {
        CounterKeys::under(format!("{}:{period}:{label}", self.subject_tag(subject)))
    }

    /// A subject's GCRA state: `{<prefix>:sub:<subject>}:rate`.
    pub(crate) fn subject_rate(&self, subject: &Subject) -> String {
        format!("{}:rate", self.subject_tag(subject))
    }

    fn subject_tag(&self, subject: &Subject) -> String {
        format!("{{{}:sub:{}}}", self.space.prefix(), subject.as_str())
    }

    /// A real key's counter for one window: `{<prefix>:key:<secret_key_id>}:<period>:<label>`.
    pub(crate) fn secret_key(&self, secret_ref: &SecretRef, period: Period, label: &str) -> CounterKeys {
        CounterKeys::under(format!(
            "{{{}:key:{}}}:{period}:{label}",
            self.space.prefix(),
            secret_ref.as_str()
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// The text Redis Cluster hashes: between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("every ledger key has a hash tag");
        let close = key[open + 1..].find('}').expect("and closes it") + open + 1;
        &key[open + 1..close]
    }

    #[test]
    fn every_key_of_an_account_shares_its_hash_tag_and_a_session_shares_its_stores_shard() {
        let keys = LedgerKeys::new("sidekey").unwrap();
        let session = SessionId::new_random_in_shard(0xab);
        let counter = keys.session(session);
        for key in counter.all().into_iter().map(str::to_owned).chain([keys.session_rate(session)]) {
            assert_eq!(hash_tag(&key), "sidekey:ab", "{key}");
        }
        assert_eq!(
            counter.totals,
            format!("{{sidekey:ab}}:usage:{}", session.as_uuid().hyphenated()),
            "the session store's tag for shard ab"
        );

        let subject = Subject::parse("alice").unwrap();
        let day = keys.subject(&subject, Period::Day, "2026-12-07");
        assert_eq!(day.totals, "{sidekey:sub:alice}:day:2026-12-07");
        assert_eq!(day.held, "{sidekey:sub:alice}:day:2026-12-07:held");
        assert_eq!(keys.subject_rate(&subject), "{sidekey:sub:alice}:rate");
        let month = keys.secret_key(&SecretRef::parse("openai:prod").unwrap(), Period::Month, "2026-12");
        assert_eq!(month.settled, "{sidekey:key:openai:prod}:month:2026-12:settled");
        for key in month.all() {
            assert_eq!(hash_tag(key), "sidekey:key:openai:prod");
        }
    }

    #[test]
    fn a_subject_with_braces_keeps_all_its_keys_in_one_slot_and_apart_from_other_subjects() {
        let keys = LedgerKeys::new("sidekey").unwrap();
        let label = Period::Day.window(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)).label;
        let odd = Subject::parse("a}:day:x{y").unwrap();
        let counter = keys.subject(&odd, Period::Day, &label);
        let rate = keys.subject_rate(&odd);
        let tags: Vec<&str> = counter.all().into_iter().chain([rate.as_str()]).map(hash_tag).collect();
        assert!(tags.iter().all(|tag| *tag == tags[0]), "{tags:?}");
        let plain = keys.subject(&Subject::parse("a").unwrap(), Period::Day, &label);
        for (ours, theirs) in counter.all().into_iter().zip(plain.all()) {
            assert_ne!(ours, theirs);
        }
    }

    #[test]
    fn a_prefix_the_session_store_refuses_is_refused() {
        for prefix in ["", "a{b", "a b"] {
            assert!(LedgerKeys::new(prefix).is_err(), "{prefix:?}");
        }
    }
}
