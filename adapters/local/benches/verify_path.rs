//! The verify path piece by piece: token parse, digest, in-memory store lookup, and the whole
//! `SessionService::verify` over the in-memory store; and the encoding of a new token, issue's share.
//!
//! Run: `cargo bench -p sidekey-adapters --bench verify_path`. Figures go to docs/BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use sidekey_application::{Clock, Grant, SessionService, SessionStore};
use sidekey_domain::{Metadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy, Token};
use sidekey_local::{EnvSecretSource, InMemorySessionStore, SystemClock};

/// Sessions in the store while measuring: enough that lookups miss the CPU caches as in production.
const STORED_SESSIONS: usize = 100_000;

fn verify_path(c: &mut Criterion) {
    // A current-thread runtime: `block_on` of a ready future costs tens of nanoseconds, and the store's
    // purge task never runs during a measurement.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = runtime.block_on(async { Arc::new(InMemorySessionStore::new(clock.clone())) });
    let secret = Arc::new(SecretValue::new("sk-bench-0123456789".to_owned()).unwrap());
    let secret_ref = SecretRef::parse("openai-prod").unwrap();
    let policy = SessionPolicy::default();
    let tokens: Vec<Token> = (0..STORED_SESSIONS).map(|_| Token::generate().unwrap()).collect();
    runtime.block_on(async {
        for token in &tokens {
            let session = Session::issue(
                SessionId::of_token(&token.digest()),
                secret_ref.clone(),
                None,
                Metadata::default(),
                policy.ttl(None).unwrap(),
                clock.now(),
            );
            store.insert(&token.keys(), Grant { session, secret: Arc::clone(&secret) }).await.unwrap();
        }
    });
    let texts: Vec<String> = tokens.iter().map(|token| token.expose().to_owned()).collect();
    let service = SessionService::new(store.clone(), Arc::new(EnvSecretSource), clock, policy);

    let mut group = c.benchmark_group("verify_path");
    let mut next = 0usize;
    let mut rotate = || {
        next = (next + 7919) % STORED_SESSIONS;
        next
    };
    // The harness's own cost, to subtract from the async rows below.
    group.bench_function("block_on_ready_future", |b| b.iter(|| runtime.block_on(async { black_box(1) })));
    group.bench_function("token_parse", |b| b.iter(|| Token::parse(black_box(&texts[rotate()])).unwrap()));
    // Issue's share: the random bytes written as a token (base62 body and checksum).
    let random = [0xa5; sidekey_domain::token::TOKEN_RANDOM_BYTES];
    group.bench_function("token_encode", |b| b.iter(|| Token::from_random_bytes(black_box(&random))));
    let parsed = Token::parse(&texts[0]).unwrap();
    group.bench_function("token_digest", |b| b.iter(|| black_box(&parsed).digest()));
    group.bench_function("token_keys", |b| b.iter(|| black_box(&parsed).keys()));
    let keys: Vec<_> = tokens.iter().map(Token::keys).collect();
    group.bench_function("store_find_100k", |b| {
        b.iter(|| runtime.block_on(store.find(black_box(&keys[rotate()]))).unwrap())
    });
    group.bench_function("parse_keys_find_100k", |b| {
        b.iter(|| {
            let keys = Token::parse(black_box(&texts[rotate()])).unwrap().keys();
            runtime.block_on(store.find(&keys)).unwrap()
        })
    });
    group.bench_function("service_verify_100k", |b| {
        b.iter(|| runtime.block_on(service.verify(black_box(&texts[rotate()]))).unwrap())
    });
    group.bench_function("service_verify_malformed", |b| {
        b.iter(|| runtime.block_on(service.verify(black_box("skt_garbage"))).unwrap_err())
    });
    group.finish();
}

criterion_group!(benches, verify_path);
criterion_main!(benches);
