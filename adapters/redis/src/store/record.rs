//! The session hash: which fields it has, how a session is written into them and read back, and where
//! a stored session stands at some instant.
//!
//! | field | holds | since |
//! |---|---|---|
//! | `id`, `secret_key_id`, `subject` | as text (`subject` absent when none) | the start |
//! | `issued_at`, `expires_at` | 20-digit nanoseconds (see [`super::keys::instant_text`]) | the start |
//! | `ttl` | nanoseconds | the start |
//! | `metadata` | the client's labels as a JSON object | the start |
//! | `state` | `active` or `revoked` | the start |
//! | `caller_session` | the sign-in session the session ends with (absent when none) | 0.2 |
//! | `terms` | the scope and limits as JSON (absent when unscoped and unlimited) | 0.2 |
//!
//! Sessions written before `caller_session` existed kept that binding in their metadata under
//! `sidekey:caller_session`; such a record is read as if it had the field (a rolling upgrade keeps the
//! cascade), and the reserved key never reaches the session's metadata.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value, json};
use sidekey_application::{ENDED_SESSION_RETENTION, StoreError};
use sidekey_domain::{
    CallerSession, Limits, LimitsParts, Metadata, ModelPattern, Origin, RoutePattern, Scope, ScopeParts,
    SecretRef, Session, SessionId, SessionParts, Subject, TokenDigest, UpstreamName,
};

use super::keys::{duration_nanos, from_nanos};

/// The session hash's fields, in the order the `find` script returns them.
pub(crate) const FIELDS: [&str; 10] = [
    "id",
    "secret_key_id",
    "subject",
    "issued_at",
    "expires_at",
    "ttl",
    "metadata",
    "state",
    "caller_session",
    "terms",
];

/// Where a session's sign-in binding lived before it had a field of its own.
const LEGACY_CALLER_SESSION_KEY: &str = "sidekey:caller_session";

/// "Now", in the forms the scripts take.
pub(crate) struct Now {
    /// Nanoseconds since the epoch.
    pub(crate) nanos: u64,
    /// The same as 20-digit text.
    pub(crate) text: String,
    /// Now minus the retention, as 20-digit text: a session that expired at or before it is forgotten.
    pub(crate) cutoff: String,
    /// Milliseconds, rounded down.
    pub(crate) millis: u64,
}

/// Where a stored session stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    Active,
    Revoked,
    Expired,
    /// Ended longer than the retention ago: as good as absent.
    Forgotten,
}

/// A session hash, read back.
pub(crate) struct Record {
    pub(crate) id: SessionId,
    pub(crate) secret_ref: SecretRef,
    pub(crate) subject: Option<Subject>,
    pub(crate) issued_at: u64,
    pub(crate) expires_at: u64,
    ttl: u64,
    metadata: Metadata,
    revoked: bool,
    caller_session: Option<CallerSession>,
    scope: Scope,
    limits: Limits,
}

impl Record {
    /// Parses the fields in [`FIELDS`] order; `None` when the hash does not exist. The error names the
    /// field that does not read.
    pub(crate) fn parse(fields: &[Option<Vec<u8>>]) -> Result<Option<Self>, &'static str> {
        let [id, secret_ref, subject, issued_at, expires_at, ttl, metadata, state, caller_session, terms] =
            fields
        else {
            return Err("wrong field count");
        };
        let Some(id) = id else { return Ok(None) };
        let id = String::from_utf8(id.clone()).ok().and_then(|id| SessionId::parse(&id).ok()).ok_or("id")?;
        let secret_ref =
            SecretRef::parse(&text(secret_ref, "secret_key_id")?).map_err(|_| "secret_key_id")?;
        let subject = optional_text(subject, "subject")?
            .map(|subject| Subject::parse(&subject).map_err(|_| "subject"))
            .transpose()?;
        let mut entries: BTreeMap<String, String> =
            serde_json::from_str(&text(metadata, "metadata")?).map_err(|_| "metadata")?;
        let legacy_binding = entries.remove(LEGACY_CALLER_SESSION_KEY);
        let metadata = Metadata::new(entries).map_err(|_| "metadata")?;
        let caller_session = optional_text(caller_session, "caller_session")?
            .or(legacy_binding)
            .map(|id| CallerSession::parse(&id).map_err(|_| "caller_session"))
            .transpose()?;
        let (scope, limits) = match optional_text(terms, "terms")? {
            Some(terms) => terms::decode(&terms).ok_or("terms")?,
            None => (Scope::default(), Limits::default()),
        };
        let revoked = match state.as_deref() {
            Some(b"active") => false,
            Some(b"revoked") => true,
            _ => return Err("state"),
        };
        Ok(Some(Self {
            id,
            secret_ref,
            subject,
            issued_at: number(issued_at, "issued_at")?,
            expires_at: number(expires_at, "expires_at")?,
            ttl: number(ttl, "ttl")?,
            metadata,
            revoked,
            caller_session,
            scope,
            limits,
        }))
    }

    /// The same rules as the memory store's: forgotten after expiry plus retention; revoked; expired at
    /// `expires_at` (inclusive) or once Redis dropped the sealed key.
    pub(crate) fn standing(&self, now: &Now, sealed_present: bool) -> Standing {
        let retention = duration_nanos(ENDED_SESSION_RETENTION);
        if self.expires_at.saturating_add(retention) <= now.nanos {
            Standing::Forgotten
        } else if self.revoked {
            Standing::Revoked
        } else if self.expires_at <= now.nanos || !sealed_present {
            Standing::Expired
        } else {
            Standing::Active
        }
    }

    /// The session this record holds.
    pub(crate) fn session(&self) -> Result<Session, &'static str> {
        Session::from_parts(SessionParts {
            id: self.id,
            secret_ref: self.secret_ref.clone(),
            subject: self.subject.clone(),
            issued_at: from_nanos(self.issued_at),
            expires_at: from_nanos(self.expires_at),
            ttl: Duration::from_nanos(self.ttl),
            metadata: self.metadata.clone(),
            caller_session: self.caller_session.clone(),
            scope: self.scope.clone(),
            limits: self.limits,
        })
        .map_err(|_| "inconsistent times")
    }
}

fn text(value: &Option<Vec<u8>>, name: &'static str) -> Result<String, &'static str> {
    let bytes = value.as_ref().ok_or(name)?;
    String::from_utf8(bytes.clone()).map_err(|_| name)
}

fn optional_text(value: &Option<Vec<u8>>, name: &'static str) -> Result<Option<String>, &'static str> {
    value.as_ref().map(|_| text(value, name)).transpose()
}

fn number(value: &Option<Vec<u8>>, name: &'static str) -> Result<u64, &'static str> {
    text(value, name)?.parse().map_err(|_| name)
}

/// The optional fields a new session's hash gets besides the ones every session has, as `HSET`
/// name/value pairs: only those the session uses, so a plain session's hash stays as it always was.
pub(crate) fn optional_fields(session: &Session) -> Vec<(&'static str, String)> {
    let mut fields = Vec::new();
    if let Some(subject) = session.subject() {
        fields.push(("subject", subject.as_str().to_owned()));
    }
    if let Some(caller_session) = session.caller_session() {
        fields.push(("caller_session", caller_session.as_str().to_owned()));
    }
    if !session.scope().is_unrestricted() || !session.limits().is_unlimited() {
        fields.push(("terms", terms::encode(session.scope(), session.limits())));
    }
    fields
}

/// The client's metadata as the hash keeps it.
pub(crate) fn metadata_json(session: &Session) -> Result<String, StoreError> {
    serde_json::to_string(session.metadata().entries())
        .map_err(|error| StoreError::Unavailable(format!("metadata did not serialize: {error}")))
}

/// The hash fields a revocation reads first (to name the session's index keys).
pub(crate) const CANDIDATE_FIELDS: [&str; 3] = ["id", "secret_key_id", "subject"];

/// A session a bulk operation read from its hash, to be revoked by the revoke script.
pub(crate) struct Candidate {
    pub(crate) digest: TokenDigest,
    pub(crate) id: String,
    pub(crate) secret_ref: SecretRef,
    pub(crate) subject: Option<Subject>,
}

impl Candidate {
    /// A revocation candidate from its hash's [`CANDIDATE_FIELDS`]; `None` without a hash.
    pub(crate) fn from_fields(
        digest: TokenDigest,
        fields: &[Option<String>],
    ) -> Result<Option<Self>, StoreError> {
        let [id, secret_ref, subject] = fields else {
            return Err(corrupt(&digest, "fields"));
        };
        let (Some(id), Some(secret_ref)) = (id, secret_ref) else { return Ok(None) };
        let secret_ref = SecretRef::parse(secret_ref).map_err(|_| corrupt(&digest, "secret_key_id"))?;
        let subject =
            subject.as_deref().map(Subject::parse).transpose().map_err(|_| corrupt(&digest, "subject"))?;
        Ok(Some(Self { digest, id: id.clone(), secret_ref, subject }))
    }
}

/// A stored session that does not read: logged with the token's fingerprint only, and answered as the
/// store being unavailable (the session can neither be trusted nor ruled out).
pub(crate) fn corrupt(digest: &TokenDigest, what: &'static str) -> StoreError {
    tracing::warn!(fingerprint = %digest.fingerprint(), field = what, "a stored session could not be read");
    StoreError::Unavailable(format!("a stored session is corrupt ({what})"))
}

/// The `terms` field: `{"scope": {...}, "limits": {...}}`, each member only when it restricts anything.
/// Every value is the domain type's canonical text, parsed back with its own `parse`, so what was valid
/// when written is valid when read.
mod terms {
    use super::*;

    pub(super) fn encode(scope: &Scope, limits: &Limits) -> String {
        let mut terms = Map::new();
        let mut scoped = Map::new();
        let list = |items: Vec<String>| Value::from(items);
        if let Some(upstreams) = scope.upstreams() {
            scoped.insert("upstreams".into(), list(upstreams.iter().map(ToString::to_string).collect()));
        }
        if let Some(routes) = scope.routes() {
            scoped.insert("routes".into(), list(routes.iter().map(ToString::to_string).collect()));
        }
        if let Some(models) = scope.models() {
            scoped.insert("models".into(), list(models.iter().map(ToString::to_string).collect()));
        }
        if let Some(origins) = scope.origins() {
            scoped.insert("origins".into(), list(origins.iter().map(ToString::to_string).collect()));
        }
        if !scoped.is_empty() {
            terms.insert("scope".into(), Value::Object(scoped));
        }
        let parts = limits.to_parts();
        let limited = json!({
            "max_requests": parts.max_requests,
            "requests_per_minute": parts.requests_per_minute,
            "max_tokens": parts.max_tokens,
            "max_output_tokens_per_request": parts.max_output_tokens_per_request,
        });
        if !limits.is_unlimited() {
            let Value::Object(mut limited) = limited else { unreachable!("json! of an object") };
            limited.retain(|_, value| !value.is_null());
            terms.insert("limits".into(), Value::Object(limited));
        }
        Value::Object(terms).to_string()
    }

    pub(super) fn decode(text: &str) -> Option<(Scope, Limits)> {
        let terms: Value = serde_json::from_str(text).ok()?;
        let scope = match terms.get("scope") {
            None => Scope::default(),
            Some(scope) => Scope::new(ScopeParts {
                upstreams: parsed(scope.get("upstreams"), UpstreamName::parse)?,
                routes: parsed(scope.get("routes"), RoutePattern::parse)?,
                models: parsed(scope.get("models"), ModelPattern::parse)?,
                origins: parsed(scope.get("origins"), Origin::parse)?,
            })
            .ok()?,
        };
        let limits = match terms.get("limits") {
            None => Limits::default(),
            Some(limits) => {
                let number = |name: &str| limits.get(name).and_then(Value::as_u64);
                let small = |name: &str| number(name).and_then(|value| u32::try_from(value).ok());
                Limits::new(LimitsParts {
                    max_requests: number("max_requests"),
                    requests_per_minute: small("requests_per_minute"),
                    max_tokens: number("max_tokens"),
                    max_output_tokens_per_request: small("max_output_tokens_per_request"),
                })
                .ok()?
            }
        };
        Some((scope, limits))
    }

    /// A list of texts, each parsed; `Some(None)` when absent, `None` when anything does not parse.
    fn parsed<T, E, C: FromIterator<T>>(
        value: Option<&Value>,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Option<Option<C>> {
        let Some(value) = value else { return Some(None) };
        let items = value.as_array()?;
        items.iter().map(|item| parse(item.as_str()?).ok()).collect::<Option<C>>().map(Some)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::SystemTime;

    use sidekey_domain::SessionPolicy;

    use super::*;

    fn session() -> Session {
        let policy = SessionPolicy::default();
        Session::issue(
            SessionId::new_random(),
            SecretRef::parse("openai-prod").unwrap(),
            Some(Subject::parse("user_1").unwrap()),
            Metadata::default(),
            policy.ttl(None).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        )
    }

    fn scoped() -> Session {
        let scope = Scope::new(ScopeParts {
            upstreams: Some(BTreeSet::from([UpstreamName::parse("openai").unwrap()])),
            routes: Some(vec![RoutePattern::parse("POST /v1/chat/completions").unwrap()]),
            models: Some(vec![
                ModelPattern::parse("gpt-4o-mini").unwrap(),
                ModelPattern::parse("gpt-4.1-*").unwrap(),
            ]),
            origins: Some(BTreeSet::from([Origin::parse("https://chat.example").unwrap()])),
        })
        .unwrap();
        let limits = Limits::new(LimitsParts {
            max_requests: Some(100),
            requests_per_minute: Some(20),
            max_tokens: None,
            max_output_tokens_per_request: Some(2048),
        })
        .unwrap();
        session().scoped(scope, limits).bound_to(CallerSession::parse("ba_1").unwrap())
    }

    /// The hash a session is written as, read back through [`Record::parse`].
    fn round_trip(session: &Session, metadata: &str) -> Session {
        let mut hash: BTreeMap<&str, String> = BTreeMap::from([
            ("id", session.id().to_string()),
            ("secret_key_id", session.secret_ref().to_string()),
            ("issued_at", super::super::keys::instant_text(super::super::keys::nanos(session.issued_at()))),
            ("expires_at", super::super::keys::instant_text(super::super::keys::nanos(session.expires_at()))),
            ("ttl", duration_nanos(session.ttl()).to_string()),
            ("metadata", metadata.to_owned()),
            ("state", "active".to_owned()),
        ]);
        hash.extend(optional_fields(session));
        let fields: Vec<Option<Vec<u8>>> =
            FIELDS.iter().map(|name| hash.get(name).map(|value| value.as_bytes().to_vec())).collect();
        Record::parse(&fields).unwrap().unwrap().session().unwrap()
    }

    #[test]
    fn a_scoped_limited_bound_session_reads_back_as_it_was_written() {
        let session = scoped();
        assert_eq!(round_trip(&session, &metadata_json(&session).unwrap()), session);
    }

    #[test]
    fn a_plain_session_gets_no_optional_field_but_its_subject() {
        let session = session();
        assert_eq!(optional_fields(&session), vec![("subject", "user_1".to_owned())]);
        assert_eq!(round_trip(&session, "{}"), session);
    }

    #[test]
    fn a_legacy_binding_in_the_metadata_becomes_the_caller_session_and_leaves_the_metadata() {
        let session = session();
        let read = round_trip(&session, r#"{"sidekey:caller_session":"ba_7","team":"x"}"#);
        assert_eq!(read.caller_session().map(CallerSession::as_str), Some("ba_7"));
        assert_eq!(read.metadata().entries().keys().collect::<Vec<_>>(), ["team"]);
    }

    #[test]
    fn terms_that_do_not_parse_are_refused_naming_the_field() {
        let session = scoped();
        let mut fields: Vec<Option<Vec<u8>>> = vec![None; FIELDS.len()];
        fields[0] = Some(session.id().to_string().into_bytes());
        fields[1] = Some(b"openai-prod".to_vec());
        fields[3] = Some(b"1".to_vec());
        fields[4] = Some(b"2".to_vec());
        fields[5] = Some(b"1000000000".to_vec());
        fields[6] = Some(b"{}".to_vec());
        fields[7] = Some(b"active".to_vec());
        for bad in [r#"{"scope":{"routes":["GET x"]}}"#, r#"{"limits":{"max_requests":0}}"#, "not json"] {
            fields[9] = Some(bad.as_bytes().to_vec());
            assert_eq!(Record::parse(&fields).err(), Some("terms"), "{bad}");
        }
    }
}
