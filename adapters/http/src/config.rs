//! The HTTP side's settings as configuration spells them: `[http]`, `[cors]` and `[[upstreams]]`
//! (the latter is [`UpstreamSettings`] itself).

use std::num::NonZeroU32;
use std::time::Duration;

use poem::http::HeaderName;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cors::{CorsConfigError, CorsSettings};
use crate::rate_limit::FailureQuota;
use crate::trusted_proxies::{InvalidNetwork, ProxyTrust};
use crate::{HttpSettings, IssueLimiter, Surface, UpstreamSettings};

/// `[http]`: limits of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct HttpConfig {
    /// Largest JSON request body, in bytes (413 above).
    pub body_limit_bytes: usize,
    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish, in seconds.
    pub shutdown_grace_seconds: u64,
    /// Failed requests (400, 401, 413) a client address may send per second, sustained; past that and
    /// the burst, its `/v1/` requests get 429 until it slows down. 0 turns the limit off.
    pub failed_requests_per_second: u32,
    /// Failed requests a client address may send at once.
    pub failed_requests_burst: u32,
    /// The reverse proxies in front of sidekey, as CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses:
    /// their `Forwarded`, `X-Forwarded-*` and `X-Real-IP` are believed (the client address is then the
    /// right-most `X-Forwarded-For` entry that is not one of them) and passed on, extended. From any other
    /// peer those headers are dropped and replaced, and the client address is the TCP peer.
    pub trusted_proxies: Vec<String>,
    /// Deprecated: list the proxies in `trusted_proxies` instead. Set while `trusted_proxies` is empty, it
    /// believes every peer, as before: the client address is the last entry of this header
    /// (`x-forwarded-for` or `x-real-ip`) and forwarded headers pass on from anyone. Ignored otherwise.
    pub client_address_header: Option<String>,
    /// Whether `/docs` (the interactive page) and `/openapi.json` are served.
    pub docs: bool,
    /// Sessions one client address may create per minute (`POST /v1/sessions`, a burst of the whole
    /// minute's allowance); past it, 429 `rate_limited`. 0 turns the limit off.
    pub issue_per_client_per_minute: u32,
}

/// Default `failed_requests_per_second`: a client that mistypes a token now and then is never limited;
/// one that guesses tokens is, within a second.
const DEFAULT_FAILED_PER_SECOND: u32 = 20;
/// Default `failed_requests_burst`: room for a page that retries a batch of calls with a stale token.
const DEFAULT_FAILED_BURST: u32 = 100;
/// Default `issue_per_client_per_minute`: an app backend issuing for all its users from one address
/// creates far fewer than 6,000 sessions a minute (100 a second); a flooder creates thousands a second.
const DEFAULT_ISSUE_PER_CLIENT_PER_MINUTE: u32 = 6000;
/// Default `shutdown_grace_seconds`: a streamed answer of a few dozen seconds still finishes.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: HttpSettings::DEFAULT_BODY_LIMIT,
            shutdown_grace_seconds: DEFAULT_SHUTDOWN_GRACE.as_secs(),
            failed_requests_per_second: DEFAULT_FAILED_PER_SECOND,
            failed_requests_burst: DEFAULT_FAILED_BURST,
            trusted_proxies: Vec::new(),
            client_address_header: None,
            issue_per_client_per_minute: DEFAULT_ISSUE_PER_CLIENT_PER_MINUTE,
            docs: true,
        }
    }
}

/// `[http]` or `[cors]` settings that cannot work: refused at start-up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpConfigError {
    /// A rate without a burst.
    #[error("http.failed_requests_burst must be at least 1 (or set the rate to 0)")]
    ZeroBurst,
    /// `client_address_header` is not a header name.
    #[error("http.client_address_header: {0:?} is not a header name")]
    ClientAddressHeader(String),
    /// An entry of `trusted_proxies` is not a network.
    #[error("http.trusted_proxies: {0}")]
    TrustedProxies(#[from] InvalidNetwork),
    /// A CORS origin is not one.
    #[error(transparent)]
    Cors(#[from] CorsConfigError),
}

impl HttpConfig {
    /// The HTTP layer's settings.
    ///
    /// # Errors
    /// [`HttpConfigError`] when a `trusted_proxies` entry is not a network, `client_address_header` is
    /// not a header name, or the burst is 0 with a rate set.
    pub fn settings(&self) -> Result<HttpSettings, HttpConfigError> {
        let failure_quota = match NonZeroU32::new(self.failed_requests_per_second) {
            None => None,
            Some(per_second) => Some(FailureQuota {
                per_second,
                burst: NonZeroU32::new(self.failed_requests_burst).ok_or(HttpConfigError::ZeroBurst)?,
            }),
        };
        Ok(HttpSettings {
            body_limit: self.body_limit_bytes,
            failure_quota,
            proxy_trust: self.proxy_trust()?,
            docs: self.docs,
            surface: Surface::All,
        })
    }

    /// The issuance limiter, when on.
    pub fn issue_limiter(&self) -> Option<IssueLimiter> {
        NonZeroU32::new(self.issue_per_client_per_minute).map(IssueLimiter::new)
    }

    /// Whose forwarding headers are believed: `trusted_proxies`, else every peer when the deprecated
    /// `client_address_header` is set, else nobody.
    fn proxy_trust(&self) -> Result<ProxyTrust, HttpConfigError> {
        match &self.client_address_header {
            Some(name) if self.trusted_proxies.is_empty() => {
                let address_header = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                    .map_err(|_| HttpConfigError::ClientAddressHeader(name.to_owned()))?;
                Ok(ProxyTrust::EveryPeer { address_header })
            }
            _ => Ok(ProxyTrust::networks(&self.trusted_proxies)?),
        }
    }

    /// What an operator should hear at start-up about these settings: the deprecated
    /// `client_address_header`, and what it does here.
    pub fn warnings(&self) -> Vec<String> {
        let Some(name) = &self.client_address_header else { return Vec::new() };
        vec![if self.trusted_proxies.is_empty() {
            format!(
                "http.client_address_header ({name:?}) is deprecated: it believes the forwarding headers of \
                 every peer, so a client that reaches sidekey directly chooses its own address; list your \
                 reverse proxies in http.trusted_proxies instead"
            )
        } else {
            "http.client_address_header is deprecated and ignored: http.trusted_proxies is set".to_owned()
        }]
    }

    /// How long in-flight requests may take to finish on shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

/// `[cors]`: browser origins allowed on the session and proxy routes (none: CORS off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct CorsConfig {
    /// Browser origins (`scheme://host[:port]`) allowed on the session and proxy routes.
    pub allowed_origins: Vec<String>,
    /// How long a browser may cache a preflight's answer, in seconds.
    pub max_age_seconds: u64,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self { allowed_origins: Vec::new(), max_age_seconds: CorsSettings::DEFAULT_MAX_AGE.as_secs() }
    }
}

impl CorsConfig {
    /// The validated settings.
    ///
    /// # Errors
    /// [`HttpConfigError::Cors`] for an entry that is not an origin.
    pub fn settings(&self) -> Result<CorsSettings, HttpConfigError> {
        Ok(CorsSettings::new(&self.allowed_origins, Duration::from_secs(self.max_age_seconds))?)
    }
}

/// Upstreams as configured: `[[upstreams]]` deserializes straight into [`UpstreamSettings`].
pub type UpstreamsConfig = Vec<UpstreamSettings>;

#[cfg(test)]
mod tests {
    use super::*;

    fn with(trusted_proxies: &[&str], client_address_header: Option<&str>) -> HttpConfig {
        HttpConfig {
            trusted_proxies: trusted_proxies.iter().map(|network| (*network).to_owned()).collect(),
            client_address_header: client_address_header.map(str::to_owned),
            ..HttpConfig::default()
        }
    }

    #[test]
    fn nobody_is_trusted_and_nothing_is_warned_by_default() {
        let config = HttpConfig::default();
        assert_eq!(config.settings().unwrap().proxy_trust, ProxyTrust::default());
        assert!(config.warnings().is_empty());
    }

    #[test]
    fn trusted_proxies_are_parsed_and_a_bad_entry_is_refused_by_name() {
        let trust = with(&["10.0.0.0/8", "192.0.2.1"], None).settings().unwrap().proxy_trust;
        assert!(trust.trusts("10.9.8.7".parse().unwrap()) && trust.trusts("192.0.2.1".parse().unwrap()));
        assert!(!trust.trusts("192.0.2.2".parse().unwrap()));
        let error = with(&["10.0.0.0/8", "10.0.0.0/40"], None).settings().unwrap_err();
        assert!(matches!(&error, HttpConfigError::TrustedProxies(_)), "{error}");
        assert!(error.to_string().contains("http.trusted_proxies: \"10.0.0.0/40\""), "{error}");
    }

    #[test]
    fn the_deprecated_header_alone_trusts_every_peer_and_is_warned_about() {
        let config = with(&[], Some(" X-Forwarded-For "));
        let address_header = HeaderName::from_static("x-forwarded-for");
        assert_eq!(config.settings().unwrap().proxy_trust, ProxyTrust::EveryPeer { address_header });
        let warnings = config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("deprecated") && warnings[0].contains("trusted_proxies"),
            "{warnings:?}"
        );
        let bad = with(&[], Some("not a header")).settings().unwrap_err();
        assert_eq!(bad, HttpConfigError::ClientAddressHeader("not a header".to_owned()));
    }

    #[test]
    fn the_deprecated_header_is_ignored_beside_trusted_proxies_and_says_so() {
        let config = with(&["127.0.0.1/32"], Some("x-real-ip"));
        let trust = config.settings().unwrap().proxy_trust;
        assert_eq!(trust, ProxyTrust::networks(&["127.0.0.1/32"]).unwrap());
        assert!(!trust.trusts("192.0.2.1".parse().unwrap()));
        assert_eq!(
            config.warnings(),
            ["http.client_address_header is deprecated and ignored: http.trusted_proxies is set"]
        );
    }
}
