//! The operations that span every shard: listings and bulk revocations (a key rotation, a user ban).
//!
//! Each shard is read through its sorted-set index (the narrowest the request allows), a page at a
//! time, [`SHARD_PARALLELISM`] shards at once; bulk revocations revoke each page with one script.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use redis::{FromRedisValue, Value};
use sidekey_application::{RevocationTarget, SessionFilter, StoreError};
use sidekey_domain::{Session, TokenDigest};
use tokio::task::JoinSet;

use super::Inner;
use super::keys;
use super::record::{CANDIDATE_FIELDS, Candidate, FIELDS, Record, Standing, corrupt};

/// How many shards a listing or bulk revocation works on at once: enough to hide round trips, few
/// enough that an admin call does not crowd out verifications on the shared connection.
pub(super) const SHARD_PARALLELISM: usize = 16;
/// Index members read per round trip in listings and bulk revocations, and so sessions per bulk
/// revocation script: a script blocks Redis while it runs, and 256 small hash updates take well under
/// a millisecond.
pub(super) const PAGE: usize = 256;

impl Inner {
    /// Up to [`PAGE`] members of a shard index whose score says they may still be active, from `offset`.
    async fn index_page(&self, index: &str, offset: usize) -> Result<Vec<TokenDigest>, StoreError> {
        let now = self.now();
        let mut range = redis::cmd("ZRANGEBYSCORE");
        range.arg(index).arg(format!("({}", now.millis)).arg("+inf").arg("LIMIT").arg(offset).arg(PAGE);
        let members: Vec<Vec<u8>> = self.redis.query("read an index", &range).await?;
        // A member that does not parse was not written by this store; skip it rather than fail the call.
        Ok(members.iter().filter_map(|member| keys::parse_member(member)).collect())
    }

    /// Revokes every active session of `shard` that `target` selects.
    pub(super) async fn revoke_matching_in(
        &self,
        shard: u8,
        target: &RevocationTarget,
    ) -> Result<u64, StoreError> {
        let index = match target {
            RevocationTarget::SecretRef(secret_ref) => self.keys.by_secret_ref(shard, secret_ref),
            RevocationTarget::Subject(subject) => self.keys.by_subject(shard, subject),
        };
        let (mut offset, mut revoked) = (0, 0);
        loop {
            let page = self.index_page(&index, offset).await?;
            if page.is_empty() {
                break;
            }
            let mut read = redis::pipe();
            for digest in &page {
                read.cmd("HMGET").arg(self.keys.session(digest)).arg(&CANDIDATE_FIELDS[..]);
            }
            let rows: Vec<Value> = self.redis.pipeline("read sessions", &read).await?;
            let mut candidates = Vec::with_capacity(page.len());
            for (digest, row) in page.iter().zip(rows) {
                let fields =
                    Vec::<Option<String>>::from_redis_value(row).map_err(|_| corrupt(digest, "fields"))?;
                let Some(candidate) = Candidate::from_fields(*digest, &fields)? else { continue };
                let selected = match target {
                    RevocationTarget::SecretRef(secret_ref) => &candidate.secret_ref == secret_ref,
                    RevocationTarget::Subject(subject) => candidate.subject.as_ref() == Some(subject),
                };
                if selected {
                    candidates.push(candidate);
                }
            }
            let now_revoked = self.revoke_in(shard, &candidates).await?;
            revoked += now_revoked;
            // Revoked members left the index; the others still stand before the next page.
            offset += page.len().saturating_sub(usize::try_from(now_revoked).unwrap_or(usize::MAX));
            if page.len() < PAGE {
                break;
            }
        }
        Ok(revoked)
    }

    /// The active sessions of `shard` that `filter` selects, until `found` reaches `limit`.
    pub(super) async fn list_in(
        &self,
        shard: u8,
        filter: &SessionFilter,
        limit: usize,
        found: &AtomicUsize,
    ) -> Result<Vec<Session>, StoreError> {
        // The narrowest index the filter allows; the filter itself is applied to every session read.
        let index = match (&filter.secret_ref, &filter.subject) {
            (Some(secret_ref), _) => self.keys.by_secret_ref(shard, secret_ref),
            (None, Some(subject)) => self.keys.by_subject(shard, subject),
            (None, None) => self.keys.all(shard),
        };
        let mut sessions = Vec::new();
        let mut offset = 0;
        while found.load(Ordering::Relaxed) < limit {
            let page = self.index_page(&index, offset).await?;
            if page.is_empty() {
                break;
            }
            let mut read = redis::pipe();
            for digest in &page {
                read.cmd("HMGET").arg(self.keys.session(digest)).arg(&FIELDS[..]);
                read.cmd("EXISTS").arg(self.keys.sealed(digest));
            }
            let rows: Vec<Value> = self.redis.pipeline("read sessions", &read).await?;
            let now = self.now();
            let mut rows = rows.into_iter();
            for digest in &page {
                let (Some(fields), Some(sealed)) = (rows.next(), rows.next()) else {
                    return Err(StoreError::Unavailable("a pipeline answered short".to_owned()));
                };
                let fields = Vec::<Option<Vec<u8>>>::from_redis_value(fields)
                    .map_err(|_| corrupt(digest, "fields"))?;
                let sealed = bool::from_redis_value(sealed).map_err(|_| corrupt(digest, "sealed"))?;
                let Some(record) = Record::parse(&fields).map_err(|what| corrupt(digest, what))? else {
                    continue;
                };
                if record.standing(&now, sealed) != Standing::Active {
                    continue;
                }
                let session = record.session().map_err(|what| corrupt(digest, what))?;
                if filter.matches(&session) {
                    sessions.push(session);
                    if found.fetch_add(1, Ordering::Relaxed) + 1 >= limit {
                        break;
                    }
                }
            }
            if page.len() < PAGE {
                break;
            }
            offset += page.len();
        }
        Ok(sessions)
    }
}

/// Runs `work` for every shard, [`SHARD_PARALLELISM`] at a time, and collects the results; the first
/// failure fails the whole call (and aborts the shards still running, as the set is dropped).
pub(super) async fn for_every_shard<T, F, Fut>(work: F) -> Result<Vec<T>, StoreError>
where
    T: Send + 'static,
    F: Fn(u8) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let mut running = JoinSet::new();
    let mut results = Vec::with_capacity(keys::SHARDS);
    for shard in 0..=u8::MAX {
        if running.len() >= SHARD_PARALLELISM
            && let Some(done) = running.join_next().await
        {
            results.push(joined(done)?);
        }
        running.spawn(work(shard));
    }
    while let Some(done) = running.join_next().await {
        results.push(joined(done)?);
    }
    Ok(results)
}

fn joined<T>(done: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, StoreError> {
    match done {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(StoreError::Unavailable(format!("a shard task stopped: {error}"))),
    }
}
