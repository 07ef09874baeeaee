//! The configured bounds on a session's life.

use std::time::Duration;

/// The longest lifetime any setting may express: ten years. It keeps every `SystemTime + Duration` in the
/// expiry arithmetic far from overflow, and no real deployment wants a longer-lived bearer token.
pub const LONGEST_LIFETIME: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// How long sessions may live: the default and the bounds of a requested TTL, and the cap on refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPolicy {
    default_ttl: Duration,
    min_ttl: Duration,
    max_ttl: Duration,
    max_lifetime: Duration,
}

/// A TTL that lies within a [`SessionPolicy`]'s bounds; only the policy makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ttl(Duration);

impl Ttl {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

/// A policy whose settings contradict each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `min_ttl_seconds` is zero.
    #[error("min_ttl_seconds must be at least 1")]
    ZeroMinimum,
    /// The settings are not ordered `min ≤ default ≤ max ≤ max_lifetime`.
    #[error(
        "session bounds must satisfy min_ttl_seconds ({min}) <= default_ttl_seconds ({default}) <= \
         max_ttl_seconds ({max}) <= max_lifetime_seconds ({lifetime})"
    )]
    Unordered {
        /// `min_ttl_seconds`.
        min: u64,
        /// `default_ttl_seconds`.
        default: u64,
        /// `max_ttl_seconds`.
        max: u64,
        /// `max_lifetime_seconds`.
        lifetime: u64,
    },
    /// `max_lifetime_seconds` is longer than [`LONGEST_LIFETIME`].
    #[error("max_lifetime_seconds must be at most {} (ten years)", LONGEST_LIFETIME.as_secs())]
    TooLong,
}

/// A requested TTL outside the policy's bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ttl_seconds must be between {min} and {max}, got {requested}")]
pub struct TtlError {
    /// What the caller asked for, in seconds.
    pub requested: u64,
    /// The smallest allowed value, in seconds.
    pub min: u64,
    /// The largest allowed value, in seconds.
    pub max: u64,
}

impl SessionPolicy {
    /// The contract's defaults: 1 hour by default, 1 second to 1 day, refreshes capped at 1 day.
    pub const DEFAULT: Self = Self {
        default_ttl: Duration::from_secs(3600),
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(86_400),
        max_lifetime: Duration::from_secs(86_400),
    };

    /// A policy from whole seconds, as configuration spells it.
    ///
    /// # Errors
    /// [`PolicyError`] unless `1 ≤ min ≤ default ≤ max ≤ max_lifetime ≤` ten years.
    pub fn from_seconds(
        default_ttl: u64,
        min_ttl: u64,
        max_ttl: u64,
        max_lifetime: u64,
    ) -> Result<Self, PolicyError> {
        if min_ttl == 0 {
            return Err(PolicyError::ZeroMinimum);
        }
        if !(min_ttl <= default_ttl && default_ttl <= max_ttl && max_ttl <= max_lifetime) {
            return Err(PolicyError::Unordered {
                min: min_ttl,
                default: default_ttl,
                max: max_ttl,
                lifetime: max_lifetime,
            });
        }
        if max_lifetime > LONGEST_LIFETIME.as_secs() {
            return Err(PolicyError::TooLong);
        }
        Ok(Self {
            default_ttl: Duration::from_secs(default_ttl),
            min_ttl: Duration::from_secs(min_ttl),
            max_ttl: Duration::from_secs(max_ttl),
            max_lifetime: Duration::from_secs(max_lifetime),
        })
    }

    /// The TTL for a request: the default when none is asked for, else the asked one if within bounds.
    ///
    /// # Errors
    /// [`TtlError`] when `requested` lies outside `min_ttl..=max_ttl`.
    pub fn ttl(&self, requested_seconds: Option<u64>) -> Result<Ttl, TtlError> {
        let Some(requested) = requested_seconds else {
            return Ok(Ttl(self.default_ttl));
        };
        let (min, max) = (self.min_ttl.as_secs(), self.max_ttl.as_secs());
        if (min..=max).contains(&requested) {
            Ok(Ttl(Duration::from_secs(requested)))
        } else {
            Err(TtlError { requested, min, max })
        }
    }

    /// How long after `issued_at` a session may live at most, however often it is refreshed.
    pub fn max_lifetime(&self) -> Duration {
        self.max_lifetime
    }

    /// The default TTL.
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// The shortest TTL a request may ask for.
    pub fn min_ttl(&self) -> Duration {
        self.min_ttl
    }

    /// The longest TTL a request may ask for.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_policy_grants_one_hour() {
        assert_eq!(SessionPolicy::default().ttl(None).unwrap().get(), Duration::from_secs(3600));
    }

    #[test]
    fn ttl_accepts_the_bounds_and_refuses_beyond_them() {
        let policy = SessionPolicy::from_seconds(60, 10, 120, 600).unwrap();
        assert_eq!(policy.ttl(Some(10)).unwrap().get().as_secs(), 10);
        assert_eq!(policy.ttl(Some(120)).unwrap().get().as_secs(), 120);
        assert_eq!(policy.ttl(Some(9)), Err(TtlError { requested: 9, min: 10, max: 120 }));
        assert!(policy.ttl(Some(121)).is_err());
        assert!(policy.ttl(Some(0)).is_err());
        assert!(policy.ttl(Some(u64::MAX)).is_err());
    }

    #[test]
    fn from_seconds_refuses_contradictory_settings() {
        assert_eq!(SessionPolicy::from_seconds(60, 0, 120, 600), Err(PolicyError::ZeroMinimum));
        assert!(matches!(SessionPolicy::from_seconds(5, 10, 120, 600), Err(PolicyError::Unordered { .. })));
        assert!(matches!(SessionPolicy::from_seconds(60, 10, 700, 600), Err(PolicyError::Unordered { .. })));
        assert_eq!(SessionPolicy::from_seconds(60, 10, 120, u64::MAX), Err(PolicyError::TooLong));
    }

    proptest! {
        #[test]
        fn a_granted_ttl_always_lies_within_the_bounds(
            min in 1u64..1000, span in 0u64..1000, requested in proptest::option::of(any::<u64>()),
        ) {
            let max = min + span;
            let policy = SessionPolicy::from_seconds(min, min, max, max).unwrap();
            match policy.ttl(requested) {
                Ok(ttl) => prop_assert!((min..=max).contains(&ttl.get().as_secs())),
                Err(error) => prop_assert!(requested.is_some_and(|r| r < min || r > max), "{error}"),
            }
        }
    }
}
