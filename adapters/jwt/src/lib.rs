//! Caller credentials from the app's identity provider: JWTs (keys from a JWKS URL, or an HS256 shared
//! secret) and Better Auth session tokens (its signed cookie, or the bearer plugin's raw token).
//!
//! The header of a JWT decides nothing by itself: the key is chosen by `kid`, the algorithms allowed are
//! derived from the key (its type and curve, and its `alg` when the JWK pins one), and HS256 is only ever
//! checked against the configured shared secret. That is what refuses `alg: none`, algorithms the key
//! does not belong to, and HS256 "signed" with a public key.
//!
//! Depends on `domain` and `application`; built into the binary by its `jwt` feature (on by default).
//!
//! # Layout
//! - [`config`]: [`JwtConfig`], the `[auth]` settings, which build the verifiers.
//! - this file: [`JwtVerifier`], [`BetterAuthSessionVerifier`] and [`CallerVerifiers`], which tries each.

pub mod config;

pub use config::JwtConfig;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::Sha256;
use sidekey_application::{
    CallerCredential, CallerRejection, CallerVerifier, CallerVerifierError, UserDirectory, VerifiedCredential,
};
use tokio::sync::Mutex;
// Tokio's monotonic clock (the system's, unless a test pauses it): the refetch interval and the key set's
// age are then tested by moving time rather than waiting for it.
use tokio::time::Instant;

/// The shortest HS256 secret accepted: 256 bits, as RFC 7518 §3.2 requires.
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// Settings that cannot check a caller: refused at start-up (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// Caller authentication is on, with nothing to check credentials with.
    #[error(
        "auth.mode = \"jwt\" needs auth.jwks_url, auth.hs256_secret (SIDEKEY_AUTH_HS256_SECRET) or \
         auth.better_auth_secret (SIDEKEY_BETTER_AUTH_SECRET)"
    )]
    NothingToCheckWith,
    /// `jwks_url` is not an `http(s)` URL.
    #[error("auth.jwks_url must be an http:// or https:// URL")]
    JwksUrl,
    /// The HS256 secret is too short to be one.
    #[error("auth.hs256_secret must be at least {MIN_HS256_SECRET_LEN} bytes")]
    ShortSecret,
    /// Better Auth session tokens without a directory to look them up in.
    #[error("auth.better_auth_secret needs [directory] url: sessions are checked there")]
    BetterAuthWithoutDirectory,
    /// rustls refused its configuration.
    #[error("TLS configuration for the key set: {0}")]
    Tls(rustls::Error),
}
/// The largest key set read from the provider.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// How JWTs are checked.
#[derive(Clone)]
pub struct JwtSettings {
    /// The identity provider's key set (Better Auth: `<base URL>/api/auth/jwks`).
    pub jwks_url: Option<String>,
    /// The shared secret of HS256 JWTs.
    pub hs256_secret: Option<String>,
    /// The required `iss`.
    pub issuer: Option<String>,
    /// The required `aud`.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The cached key set is fetched again after this long.
    pub jwks_max_age: Duration,
    /// An unknown `kid` fetches the key set again at most this often.
    pub jwks_min_refetch_interval: Duration,
    /// The bound on one fetch of the key set.
    pub fetch_timeout: Duration,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            jwks_url: None,
            hs256_secret: None,
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(300),
            jwks_min_refetch_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(3),
        }
    }
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSettings")
            .field("jwks_url", &self.jwks_url)
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "<redacted>"))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The key set as last fetched.
struct CachedKeys {
    keys: Arc<JwkSet>,
    fetched_at: Instant,
}

/// JWTs checked against a JWKS and/or an HS256 secret.
pub struct JwtVerifier {
    settings: JwtSettings,
    jwks_url: Option<hyper::Uri>,
    hs256: Option<DecodingKey>,
    client: HttpsClient,
    /// The cached set, and when a fetch was last tried (a tokio mutex: one fetch at a time, the others
    /// wait for its result instead of fetching too).
    cache: Mutex<(Option<CachedKeys>, Option<Instant>)>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The claims sidekey reads; `exp`, `nbf`, `iss` and `aud` are checked by the validation itself.
#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    email: Option<String>,
}

impl JwtVerifier {
    /// A verifier; fetches nothing yet (the service starts while the provider is down).
    ///
    /// # Errors
    /// [`JwtConfigError`]: neither a JWKS URL nor an HS256 secret; a URL that is not `http(s)`; a secret
    /// under 32 bytes.
    pub fn new(settings: JwtSettings) -> Result<Self, JwtConfigError> {
        if settings.jwks_url.is_none() && settings.hs256_secret.is_none() {
            return Err(JwtConfigError::NothingToCheckWith);
        }
        let jwks_url = match &settings.jwks_url {
            None => None,
            Some(url) => {
                let uri: hyper::Uri = url.parse().map_err(|_| JwtConfigError::JwksUrl)?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(JwtConfigError::JwksUrl);
                }
                Some(uri)
            }
        };
        let hs256 = match &settings.hs256_secret {
            Some(secret) if secret.len() < MIN_HS256_SECRET_LEN => {
                return Err(JwtConfigError::ShortSecret);
            }
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(settings.fetch_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(JwtConfigError::Tls)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Self { settings, jwks_url, hs256, client, cache: Mutex::new((None, None)) })
    }

    fn validation(&self, algorithms: Vec<Algorithm>) -> Validation {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        // Set alone, `iss` and `aud` are only checked when present: require them too.
        match &self.settings.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &self.settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        validation
    }

    async fn verify_jwt(&self, token: &str) -> Result<VerifiedCredential, CallerVerifierError> {
        let header = jsonwebtoken::decode_header(token).map_err(|error| match error.kind() {
            // `none`, ES512 and other algorithms the library does not know fail to parse.
            ErrorKind::Json(_) if token_alg_is_unknown(token) => CallerRejection::Algorithm,
            _ => CallerRejection::Malformed,
        })?;
        let (key, algorithms) = match header.alg {
            Algorithm::HS256 => {
                (self.hs256.clone().ok_or(CallerRejection::Algorithm)?, vec![Algorithm::HS256])
            }
            Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256 | Algorithm::PS256 => {
                if self.jwks_url.is_none() {
                    return Err(CallerRejection::Algorithm.into());
                }
                let jwk = self.key_for(header.kid.as_deref()).await?;
                let algorithms = allowed_algorithms(&jwk).ok_or(CallerRejection::UnknownKey)?;
                if !algorithms.contains(&header.alg) {
                    return Err(CallerRejection::Algorithm.into());
                }
                let key = DecodingKey::from_jwk(&jwk).map_err(|_| CallerRejection::UnknownKey)?;
                (key, vec![header.alg])
            }
            _ => return Err(CallerRejection::Algorithm.into()),
        };
        let decoded = jsonwebtoken::decode::<Claims>(token, &key, &self.validation(algorithms))
            .map_err(|error| rejection(error.kind()))?;
        let subject =
            decoded.claims.sub.filter(|sub| !sub.is_empty()).ok_or(CallerRejection::MissingClaim)?;
        Ok(VerifiedCredential::Jwt { subject, email: decoded.claims.email })
    }

    /// The key named `kid` (or the only key, when the token names none), refetching the set when the
    /// `kid` is unknown, at most once per `jwks_min_refetch_interval`.
    async fn key_for(&self, kid: Option<&str>) -> Result<Jwk, CallerVerifierError> {
        let mut cache = self.cache.lock().await;
        let (cached, last_attempt) = &mut *cache;
        let stale =
            cached.as_ref().is_none_or(|keys| keys.fetched_at.elapsed() >= self.settings.jwks_max_age);
        if !stale && let Some(jwk) = cached.as_ref().and_then(|keys| find(&keys.keys, kid)) {
            return Ok(jwk);
        }
        let may_fetch = last_attempt.is_none_or(|at| at.elapsed() >= self.settings.jwks_min_refetch_interval);
        if may_fetch {
            *last_attempt = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => *cached = Some(CachedKeys { keys: Arc::new(keys), fetched_at: Instant::now() }),
                Err(cause) => {
                    tracing::warn!(%cause, "cannot fetch the identity provider's key set");
                    if cached.is_none() {
                        return Err(CallerVerifierError::ProviderUnavailable(cause));
                    }
                }
            }
        }
        match cached.as_ref() {
            // Never fetched successfully, and not allowed to try again yet.
            None => Err(CallerVerifierError::ProviderUnavailable("no key set fetched yet".to_owned())),
            Some(keys) => find(&keys.keys, kid).ok_or_else(|| CallerRejection::UnknownKey.into()),
        }
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let Some(uri) = self.jwks_url.clone() else { return Err("no jwks_url".to_owned()) };
        let request = hyper::Request::get(uri)
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|error| error.to_string())?;
        let fetch = async {
            let response =
                self.client.request(request).await.map_err(|error| format!("request failed: {error}"))?;
            if !response.status().is_success() {
                return Err(format!("the provider answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|error| format!("reading the key set failed: {error}"))?
                .to_bytes();
            serde_json::from_slice::<JwkSet>(&body)
                .map_err(|error| format!("the key set is not a JWKS: {error}"))
        };
        tokio::time::timeout(self.settings.fetch_timeout, fetch)
            .await
            .map_err(|_| format!("no key set within {} ms", self.settings.fetch_timeout.as_millis()))?
    }
}

/// The key named `kid`, or the only key of the set when the token names none.
fn find(keys: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => keys.find(kid).cloned(),
        None if keys.keys.len() == 1 => keys.keys.first().cloned(),
        None => None,
    }
}

/// The algorithms a JWK may verify: by its type and curve, narrowed to its own `alg` when it pins one.
/// `None` for a key that must not be used (another use, an unsupported type, or a malformed one — the
/// EdDSA verifier panics on a short key, so lengths are checked here).
fn allowed_algorithms(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    let decoded_len = |text: &str| URL_SAFE_NO_PAD.decode(text).map(|bytes| bytes.len()).ok();
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) if decoded_len(&rsa.n).is_some_and(|len| len >= 256) => {
            vec![Algorithm::RS256, Algorithm::PS256]
        }
        AlgorithmParameters::EllipticCurve(ec)
            if ec.curve == EllipticCurve::P256
                && decoded_len(&ec.x) == Some(32)
                && decoded_len(&ec.y) == Some(32) =>
        {
            vec![Algorithm::ES256]
        }
        AlgorithmParameters::OctetKeyPair(okp)
            if okp.curve == EllipticCurve::Ed25519 && decoded_len(&okp.x) == Some(32) =>
        {
            vec![Algorithm::EdDSA]
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(by_type),
        Some(pinned) => {
            let pinned = Algorithm::try_from(pinned).ok()?;
            by_type.contains(&pinned).then(|| vec![pinned])
        }
    }
}

/// Whether the token's header names an algorithm (such as `none` or `ES512`) rather than being garbage.
fn token_alg_is_unknown(token: &str) -> bool {
    let Some(header) = token.split('.').next() else { return false };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(header) else { return false };
    serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|header| header.get("alg").is_some())
}

fn rejection(kind: &ErrorKind) -> CallerRejection {
    match kind {
        ErrorKind::InvalidSignature => CallerRejection::BadSignature,
        ErrorKind::ExpiredSignature => CallerRejection::Expired,
        ErrorKind::ImmatureSignature => CallerRejection::NotYetValid,
        ErrorKind::InvalidIssuer => CallerRejection::Issuer,
        ErrorKind::InvalidAudience => CallerRejection::Audience,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidSubject => CallerRejection::MissingClaim,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::InvalidKeyFormat => {
            CallerRejection::Algorithm
        }
        _ => CallerRejection::Malformed,
    }
}

/// Better Auth session tokens: the signed `better-auth.session_token` cookie, or the raw token the
/// bearer plugin sends, looked up unexpired in the directory.
pub struct BetterAuthSessionVerifier {
    secret: String,
    directory: Arc<dyn UserDirectory>,
}

impl std::fmt::Debug for BetterAuthSessionVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BetterAuthSessionVerifier(<redacted>)")
    }
}

impl BetterAuthSessionVerifier {
    /// A verifier with Better Auth's `BETTER_AUTH_SECRET`, over `directory`.
    pub fn new(secret: String, directory: Arc<dyn UserDirectory>) -> Self {
        Self { secret, directory }
    }

    /// The token of a signed cookie value (`token.base64(HMAC-SHA256(secret, token))`, URL-encoded), if
    /// the signature is right.
    fn signed_token(&self, value: &str) -> Option<String> {
        let decoded = percent_decode(value)?;
        let (token, signature) = decoded.rsplit_once('.')?;
        let signature = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(signature).ok())?;
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.secret.as_bytes()).ok()?;
        mac.update(token.as_bytes());
        // Constant time, so a signature cannot be guessed byte by byte.
        mac.verify_slice(&signature).ok()?;
        Some(token.to_owned())
    }

    async fn session(&self, token: &str, now: SystemTime) -> Result<VerifiedCredential, CallerVerifierError> {
        if token.is_empty() || token.len() > 256 {
            return Err(CallerRejection::UnknownSession.into());
        }
        match self.directory.session_by_token(token, now).await? {
            Some(session) => Ok(VerifiedCredential::DirectorySession(session)),
            None => Err(CallerRejection::UnknownSession.into()),
        }
    }
}

#[async_trait]
impl CallerVerifier for BetterAuthSessionVerifier {
    async fn verify(
        &self,
        credential: &CallerCredential,
        now: SystemTime,
    ) -> Result<VerifiedCredential, CallerVerifierError> {
        let token = match credential {
            CallerCredential::SessionCookie(value) => {
                self.signed_token(value).ok_or(CallerRejection::UnknownSession)?
            }
            // The bearer plugin sends the raw token; a signed one is accepted too.
            CallerCredential::Bearer(value) if value.contains('.') => {
                self.signed_token(value).ok_or(CallerRejection::UnknownSession)?
            }
            CallerCredential::Bearer(value) => value.clone(),
        };
        self.session(&token, now).await
    }
}

/// `%XX` decoding (cookie values are URL-encoded); `None` for a malformed escape or invalid UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

/// Routes each credential to the verifier for its kind: a bearer JWT to the JWT verifier, any other
/// bearer token and the session cookie to Better Auth's.
#[derive(Debug)]
pub struct CallerVerifiers {
    jwt: Option<JwtVerifier>,
    better_auth: Option<BetterAuthSessionVerifier>,
}

impl CallerVerifiers {
    /// The verifiers configured.
    pub fn new(jwt: Option<JwtVerifier>, better_auth: Option<BetterAuthSessionVerifier>) -> Self {
        Self { jwt, better_auth }
    }
}

/// Three base64url segments: the shape of a JWS compact serialization.
fn looks_like_jwt(token: &str) -> bool {
    let mut segments = token.split('.');
    let shaped = |segment: Option<&str>, may_be_empty: bool| {
        segment.is_some_and(|segment| {
            (may_be_empty || !segment.is_empty())
                && segment.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        })
    };
    shaped(segments.next(), false)
        && shaped(segments.next(), false)
        && shaped(segments.next(), true)
        && segments.next().is_none()
}

#[async_trait]
impl CallerVerifier for CallerVerifiers {
    async fn verify(
        &self,
        credential: &CallerCredential,
        now: SystemTime,
    ) -> Result<VerifiedCredential, CallerVerifierError> {
        match credential {
            CallerCredential::Bearer(token) if token.is_empty() => Err(CallerRejection::Malformed.into()),
            CallerCredential::Bearer(token) if looks_like_jwt(token) => match &self.jwt {
                Some(jwt) => jwt.verify_jwt(token).await,
                None => Err(CallerRejection::NotAccepted.into()),
            },
            _ => match &self.better_auth {
                Some(better_auth) => better_auth.verify(credential, now).await,
                None if matches!(credential, CallerCredential::Bearer(_)) => {
                    Err(CallerRejection::Malformed.into())
                }
                None => Err(CallerRejection::NotAccepted.into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shapes_are_told_from_session_tokens() {
        assert!(looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"));
        assert!(looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0."));
        assert!(!looks_like_jwt("abcdefABCDEF0123456789abcdefABCD"));
        assert!(!looks_like_jwt("token.c2lnbmF0dXJl%3D"));
        assert!(!looks_like_jwt("a.b.c.d"));
    }

    #[test]
    fn cookie_values_are_percent_decoded_strictly() {
        assert_eq!(percent_decode("a%2Bb%2F%3D").as_deref(), Some("a+b/="));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }

    #[test]
    fn settings_are_checked_and_debug_hides_the_secret() {
        assert!(JwtVerifier::new(JwtSettings::default()).is_err());
        let short = JwtSettings { hs256_secret: Some("short".into()), ..JwtSettings::default() };
        assert!(JwtVerifier::new(short).is_err());
        let ftp = JwtSettings { jwks_url: Some("ftp://idp/jwks".into()), ..JwtSettings::default() };
        assert!(JwtVerifier::new(ftp).is_err());
        let settings =
            JwtSettings { hs256_secret: Some("s".repeat(32) + "-hidden-part"), ..JwtSettings::default() };
        assert!(!format!("{settings:?}").contains("hidden-part"));
        assert!(JwtVerifier::new(settings).is_ok());
    }
}
