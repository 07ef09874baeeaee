//! The `[auth]` settings that check credentials: JWT keys and claims, and Better Auth's secret.

use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sidekey_application::UserDirectory;
use sidekey_settings::Secret;

use crate::{BetterAuthSessionVerifier, CallerVerifiers, JwtConfigError, JwtSettings, JwtVerifier};

/// How callers' credentials are checked (with `auth.mode = "jwt"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct JwtConfig {
    /// The identity provider's key set (Better Auth's JWT plugin: `<base URL>/api/auth/jwks`).
    pub jwks_url: Option<String>,
    /// A shared secret for HS256 JWTs minted by the app itself (at least 32 bytes).
    pub hs256_secret: Option<Secret>,
    /// The required `iss`, when set.
    pub issuer: Option<String>,
    /// The required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Better Auth's `BETTER_AUTH_SECRET`: accept its session cookie and bearer session tokens (needs a
    /// `[directory]`).
    pub better_auth_secret: Option<Secret>,
    /// The key set is fetched again after this many seconds.
    pub jwks_max_age_seconds: u64,
    /// An unknown `kid` fetches the key set again at most this often, in seconds.
    pub jwks_min_refetch_seconds: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        let defaults = JwtSettings::default();
        Self {
            jwks_url: None,
            hs256_secret: None,
            issuer: None,
            audience: None,
            leeway_seconds: defaults.leeway.as_secs(),
            better_auth_secret: None,
            jwks_max_age_seconds: defaults.jwks_max_age.as_secs(),
            jwks_min_refetch_seconds: defaults.jwks_min_refetch_interval.as_secs(),
        }
    }
}

impl JwtConfig {
    /// Whether any way to check a credential is configured.
    pub fn is_configured(&self) -> bool {
        self.jwks_url.is_some() || self.hs256_secret.is_some() || self.better_auth_secret.is_some()
    }

    /// The verifiers these settings describe, Better Auth's looking sessions up in `directory`.
    ///
    /// # Errors
    /// [`JwtConfigError`]: nothing to check credentials with, Better Auth without a directory, or a JWT
    /// setting that cannot work (fail closed: such a service must not start).
    pub fn verifiers(
        &self,
        directory: Option<Arc<dyn UserDirectory>>,
    ) -> Result<CallerVerifiers, JwtConfigError> {
        if !self.is_configured() {
            return Err(JwtConfigError::NothingToCheckWith);
        }
        let jwt = if self.jwks_url.is_some() || self.hs256_secret.is_some() {
            Some(JwtVerifier::new(JwtSettings {
                jwks_url: self.jwks_url.clone(),
                hs256_secret: self.hs256_secret.as_ref().map(|secret| secret.expose().to_owned()),
                issuer: self.issuer.clone(),
                audience: self.audience.clone(),
                leeway: Duration::from_secs(self.leeway_seconds),
                jwks_max_age: Duration::from_secs(self.jwks_max_age_seconds),
                jwks_min_refetch_interval: Duration::from_secs(self.jwks_min_refetch_seconds),
                ..JwtSettings::default()
            })?)
        } else {
            None
        };
        let better_auth = match (&self.better_auth_secret, directory) {
            (None, _) => None,
            (Some(_), None) => return Err(JwtConfigError::BetterAuthWithoutDirectory),
            (Some(secret), Some(directory)) => {
                Some(BetterAuthSessionVerifier::new(secret.expose().to_owned(), directory))
            }
        };
        Ok(CallerVerifiers::new(jwt, better_auth))
    }
}
