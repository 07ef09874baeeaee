//! The JWT verifier against keys these tests generate (EdDSA, ES256, RS256, PS256, HS256) and a JWKS
//! served, Better Auth style (no `use` field), by a local HTTP server whose keys the tests change.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Route, Server, get, handler};
use serde_json::{Value, json};
use sidekey_application::{
    CallerCredential, CallerRejection, CallerVerifier, CallerVerifierError, VerifiedCredential,
};
use sidekey_jwt::{CallerVerifiers, JwtSettings, JwtVerifier};

const ISSUER: &str = "http://127.0.0.1:3000";
const HS256_SECRET: &str = "a-shared-hs256-secret-of-32-bytes-at-least";

/// A signing key and its public JWK.
struct TestKey {
    algorithm: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
    /// The public key's DER (SubjectPublicKeyInfo or PKCS#1), for the algorithm-confusion attack.
    public_der: Vec<u8>,
}

fn ed25519(kid: &str) -> TestKey {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let mut seed = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    TestKey {
        algorithm: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(key.to_pkcs8_der().unwrap().as_bytes()),
        jwk: json!({"kty":"OKP","crv":"Ed25519","x":B64.encode(key.verifying_key().as_bytes()),"kid":kid,"alg":"EdDSA"}),
        public_der: key.verifying_key().to_public_key_der().unwrap().into_vec(),
    }
}

fn p256(kid: &str) -> TestKey {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    TestKey {
        algorithm: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes()),
        jwk: json!({"kty":"EC","crv":"P-256","x":B64.encode(point.x().unwrap()),"y":B64.encode(point.y().unwrap()),"kid":kid,"alg":"ES256"}),
        public_der: key.verifying_key().to_public_key_der().unwrap().into_vec(),
    }
}

/// An RSA key for `algorithm` (RS256 or PS256); its JWK pins no `alg`, so it verifies either.
fn rsa(kid: &str, algorithm: Algorithm) -> TestKey {
    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let public = key.to_public_key();
    TestKey {
        algorithm,
        encoding: EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
        jwk: json!({"kty":"RSA","n":B64.encode(public.n().to_bytes_be()),"e":B64.encode(public.e().to_bytes_be()),"kid":kid}),
        public_der: public.to_pkcs1_der().unwrap().into_vec(),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims() -> Value {
    json!({"sub":"user_1","email":"ada@example.com","iss":ISSUER,"aud":ISSUER,"iat":now(),"exp":now() + 900})
}

fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.typ = None;
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A token with a header of our own and an HMAC-SHA256 signature under `secret`.
fn hand_made(header: &Value, claims: &Value, secret: Option<&[u8]>) -> String {
    use hmac::Mac as _;
    let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let signature = secret.map_or_else(String::new, |secret| {
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(secret).unwrap();
        mac.update(signing_input.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    });
    format!("{signing_input}.{signature}")
}

/// A JWKS endpoint whose keys the test sets, counting the requests it serves; `up` = false answers 503.
#[derive(Clone, Default)]
struct Provider {
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

#[handler]
fn jwks(provider: Data<&Provider>) -> poem::Response {
    provider.fetches.fetch_add(1, Ordering::SeqCst);
    if provider.down.load(Ordering::SeqCst) {
        return poem::Response::builder().status(poem::http::StatusCode::SERVICE_UNAVAILABLE).finish();
    }
    let keys = provider.keys.lock().unwrap().clone();
    poem::Response::builder().content_type("application/json").body(json!({ "keys": keys }).to_string())
}

impl Provider {
    async fn serve(keys: Vec<Value>) -> (Self, String) {
        let provider = Self { keys: Arc::new(Mutex::new(keys)), ..Self::default() };
        let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let app = Route::new().at("/api/auth/jwks", get(jwks)).data(provider.clone());
        tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
        (provider, format!("http://{addr}/api/auth/jwks"))
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn verifier(jwks_url: Option<&str>, hs256: bool, refetch: Duration) -> CallerVerifiers {
    let settings = JwtSettings {
        jwks_url: jwks_url.map(str::to_owned),
        hs256_secret: hs256.then(|| HS256_SECRET.to_owned()),
        issuer: Some(ISSUER.to_owned()),
        audience: Some(ISSUER.to_owned()),
        jwks_min_refetch_interval: refetch,
        ..JwtSettings::default()
    };
    CallerVerifiers::new(Some(JwtVerifier::new(settings).unwrap()), None)
}

async fn check(verifier: &CallerVerifiers, token: &str) -> Result<VerifiedCredential, CallerVerifierError> {
    verifier.verify(&CallerCredential::Bearer(token.to_owned()), SystemTime::now()).await
}

fn refused(reason: CallerRejection) -> Result<VerifiedCredential, CallerVerifierError> {
    Err(CallerVerifierError::Rejected(reason))
}

#[tokio::test]
async fn every_supported_algorithm_is_accepted_from_a_jwks_without_use_fields() {
    let keys = [ed25519("ed"), p256("ec"), rsa("rsa", Algorithm::RS256)];
    let (_provider, url) = Provider::serve(keys.iter().map(|key| key.jwk.clone()).collect()).await;
    let verifier = verifier(Some(&url), true, Duration::from_secs(10));
    for (key, kid) in keys.iter().zip(["ed", "ec", "rsa"]) {
        let verified = check(&verifier, &sign(key, Some(kid), &claims())).await;
        assert_eq!(
            verified,
            Ok(VerifiedCredential::Jwt { subject: "user_1".into(), email: Some("ada@example.com".into()) }),
            "{:?}",
            key.algorithm
        );
    }
    // The same RSA key signs PS256 too (its JWK pins no alg).
    let rsa_ps = TestKey { algorithm: Algorithm::PS256, ..rsa_clone(&keys[2]) };
    assert!(check(&verifier, &sign(&rsa_ps, Some("rsa"), &claims())).await.is_ok());
    // HS256 with the shared secret.
    let hs = TestKey {
        algorithm: Algorithm::HS256,
        encoding: EncodingKey::from_secret(HS256_SECRET.as_bytes()),
        jwk: Value::Null,
        public_der: Vec::new(),
    };
    assert!(check(&verifier, &sign(&hs, None, &claims())).await.is_ok());
}

/// The RSA test key again (EncodingKey is not Clone-friendly across algorithms otherwise).
fn rsa_clone(key: &TestKey) -> TestKey {
    TestKey {
        algorithm: key.algorithm,
        encoding: key.encoding.clone(),
        jwk: key.jwk.clone(),
        public_der: key.public_der.clone(),
    }
}

#[tokio::test]
async fn bad_signatures_claims_and_times_are_refused_for_what_they_are() {
    let key = p256("ec");
    let (_provider, url) = Provider::serve(vec![key.jwk.clone()]).await;
    let verifier = verifier(Some(&url), false, Duration::from_secs(10));
    let other = p256("ec");
    assert_eq!(
        check(&verifier, &sign(&other, Some("ec"), &claims())).await,
        refused(CallerRejection::BadSignature)
    );
    let mut wrong_issuer = claims();
    wrong_issuer["iss"] = json!("https://evil.example");
    assert_eq!(
        check(&verifier, &sign(&key, Some("ec"), &wrong_issuer)).await,
        refused(CallerRejection::Issuer)
    );
    let mut wrong_audience = claims();
    wrong_audience["aud"] = json!(["https://other.example"]);
    assert_eq!(
        check(&verifier, &sign(&key, Some("ec"), &wrong_audience)).await,
        refused(CallerRejection::Audience)
    );
    let mut no_audience = claims();
    no_audience.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        check(&verifier, &sign(&key, Some("ec"), &no_audience)).await,
        refused(CallerRejection::MissingClaim)
    );
    let mut expired = claims();
    expired["exp"] = json!(now() - 120);
    assert_eq!(check(&verifier, &sign(&key, Some("ec"), &expired)).await, refused(CallerRejection::Expired));
    let mut within_leeway = claims();
    within_leeway["exp"] = json!(now() - 10);
    assert!(check(&verifier, &sign(&key, Some("ec"), &within_leeway)).await.is_ok(), "30 s of leeway");
    let mut not_yet = claims();
    not_yet["nbf"] = json!(now() + 120);
    assert_eq!(
        check(&verifier, &sign(&key, Some("ec"), &not_yet)).await,
        refused(CallerRejection::NotYetValid)
    );
    let mut no_subject = claims();
    no_subject.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        check(&verifier, &sign(&key, Some("ec"), &no_subject)).await,
        refused(CallerRejection::MissingClaim)
    );
    assert_eq!(
        check(&verifier, &sign(&key, Some("nope"), &claims())).await,
        refused(CallerRejection::UnknownKey)
    );
    assert_eq!(check(&verifier, "not.a.jwt").await, refused(CallerRejection::Malformed));
}

#[tokio::test]
async fn alg_none_unsupported_algorithms_and_algorithm_confusion_are_refused() {
    let key = rsa("rsa", Algorithm::RS256);
    let (_provider, url) = Provider::serve(vec![key.jwk.clone()]).await;
    for hs256 in [false, true] {
        let verifier = verifier(Some(&url), hs256, Duration::from_secs(10));
        let none = hand_made(&json!({"alg":"none","kid":"rsa"}), &claims(), None);
        assert_eq!(check(&verifier, &none).await, refused(CallerRejection::Algorithm), "alg none");
        let es512 = hand_made(&json!({"alg":"ES512","kid":"rsa"}), &claims(), Some(b"x"));
        assert_eq!(check(&verifier, &es512).await, refused(CallerRejection::Algorithm), "ES512");
        // HS256 "signed" with the RSA public key, as if it were a shared secret.
        let confused = hand_made(&json!({"alg":"HS256","kid":"rsa"}), &claims(), Some(&key.public_der));
        let expected = if hs256 { CallerRejection::BadSignature } else { CallerRejection::Algorithm };
        assert_eq!(
            check(&verifier, &confused).await,
            refused(expected),
            "confusion, hs256 configured: {hs256}"
        );
        // An EC algorithm named against the RSA key.
        let mismatched = hand_made(&json!({"alg":"ES256","kid":"rsa"}), &claims(), Some(b"x"));
        assert_eq!(check(&verifier, &mismatched).await, refused(CallerRejection::Algorithm), "ES256 on RSA");
    }
    // A JWK that pins RS256 does not verify PS256.
    let pinned = TestKey {
        jwk: {
            let mut jwk = key.jwk.clone();
            jwk["alg"] = json!("RS256");
            jwk
        },
        ..rsa_clone(&key)
    };
    let (_provider, url) = Provider::serve(vec![pinned.jwk.clone()]).await;
    let verifier = verifier(Some(&url), false, Duration::from_secs(10));
    let ps = TestKey { algorithm: Algorithm::PS256, ..rsa_clone(&pinned) };
    assert_eq!(
        check(&verifier, &sign(&ps, Some("rsa"), &claims())).await,
        refused(CallerRejection::Algorithm)
    );
}

#[tokio::test]
async fn a_key_rotated_in_at_the_provider_is_fetched_but_unknown_kids_cannot_storm_it() {
    let old = ed25519("k1");
    let (provider, url) = Provider::serve(vec![old.jwk.clone()]).await;
    // Far longer than the storm below takes, whatever the machine: the interval passes when the test
    // moves the clock.
    let interval = Duration::from_secs(60);
    let verifier = verifier(Some(&url), false, interval);
    assert!(check(&verifier, &sign(&old, Some("k1"), &claims())).await.is_ok());
    assert_eq!(provider.fetches(), 1);

    // 100 tokens with random kids: at most one more fetch within the interval.
    let forger = ed25519("x");
    for index in 0..100 {
        let kid = format!("random-{index}");
        assert_eq!(
            check(&verifier, &sign(&forger, Some(&kid), &claims())).await,
            refused(CallerRejection::UnknownKey)
        );
    }
    assert!(provider.fetches() <= 2, "{} fetches for 100 unknown kids", provider.fetches());

    // The provider rotates: a token with the new kid verifies once the interval allows a refetch.
    let new = ed25519("k2");
    provider.keys.lock().unwrap().push(new.jwk.clone());
    let fetches = provider.fetches();
    assert_eq!(
        check(&verifier, &sign(&new, Some("k2"), &claims())).await,
        refused(CallerRejection::UnknownKey),
        "not within the interval"
    );
    assert_eq!(provider.fetches(), fetches);
    // The verifier measures the interval on tokio's clock. Paused only for the jump: the refetch is real
    // I/O, which a paused clock would let a timeout overtake.
    tokio::time::pause();
    tokio::time::advance(interval).await;
    tokio::time::resume();
    assert!(check(&verifier, &sign(&new, Some("k2"), &claims())).await.is_ok());
    assert!(check(&verifier, &sign(&old, Some("k1"), &claims())).await.is_ok());
}

#[tokio::test]
async fn a_provider_that_is_down_fails_closed_but_cached_keys_keep_working() {
    let key = ed25519("k1");
    let (provider, url) = Provider::serve(vec![key.jwk.clone()]).await;
    provider.down.store(true, Ordering::SeqCst);
    let verifier = verifier(Some(&url), false, Duration::ZERO);
    assert!(matches!(
        check(&verifier, &sign(&key, Some("k1"), &claims())).await,
        Err(CallerVerifierError::ProviderUnavailable(_))
    ));
    provider.down.store(false, Ordering::SeqCst);
    assert!(check(&verifier, &sign(&key, Some("k1"), &claims())).await.is_ok(), "recovers by itself");
    provider.down.store(true, Ordering::SeqCst);
    assert!(
        check(&verifier, &sign(&key, Some("k1"), &claims())).await.is_ok(),
        "the cached key still verifies"
    );

    // Nothing listens at all.
    let closed = verifier_at("http://127.0.0.1:1/jwks");
    assert!(matches!(
        check(&closed, &sign(&key, Some("k1"), &claims())).await,
        Err(CallerVerifierError::ProviderUnavailable(_))
    ));
}

fn verifier_at(url: &str) -> CallerVerifiers {
    verifier(Some(url), false, Duration::ZERO)
}
