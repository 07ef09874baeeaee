//! [`Limits`] on what one session may consume, and the [`LimitsPolicy`] that bounds them.
//!
//! A session's limits are whatever it asked for, else the configured default, else the configured
//! ceiling. The last step matters: a session that asks for nothing is still capped by the ceiling, so
//! leaving a field out can never be a way around it.

use std::fmt;

/// One of the four limits, for errors that must name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LimitField {
    /// `max_requests`: proxied requests over the session's life.
    MaxRequests,
    /// `requests_per_minute`: proxied requests per minute.
    RequestsPerMinute,
    /// `max_tokens`: input and output tokens over the session's life.
    MaxTokens,
    /// `max_output_tokens_per_request`: the clamp on each request's output tokens.
    MaxOutputTokensPerRequest,
}

impl LimitField {
    /// Every field, in the order the contract lists them.
    pub const ALL: [Self; 4] =
        [Self::MaxRequests, Self::RequestsPerMinute, Self::MaxTokens, Self::MaxOutputTokensPerRequest];

    /// The field's name, as JSON and configuration spell it (`max_tokens`).
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxRequests => "max_requests",
            Self::RequestsPerMinute => "requests_per_minute",
            Self::MaxTokens => "max_tokens",
            Self::MaxOutputTokensPerRequest => "max_output_tokens_per_request",
        }
    }

    /// The field's path in a session request (`limits.max_tokens`).
    pub fn request_path(self) -> &'static str {
        match self {
            Self::MaxRequests => "limits.max_requests",
            Self::RequestsPerMinute => "limits.requests_per_minute",
            Self::MaxTokens => "limits.max_tokens",
            Self::MaxOutputTokensPerRequest => "limits.max_output_tokens_per_request",
        }
    }
}

impl fmt::Display for LimitField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What one session may consume; `None` sets no limit of its own. Every value set is at least 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    max_requests: Option<u64>,
    requests_per_minute: Option<u32>,
    max_tokens: Option<u64>,
    max_output_tokens_per_request: Option<u32>,
}

/// The fields of [`Limits`] before validation, as a request or the configuration spells them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are the limits', documented on [`LimitField`]
pub struct LimitsParts {
    pub max_requests: Option<u64>,
    pub requests_per_minute: Option<u32>,
    pub max_tokens: Option<u64>,
    pub max_output_tokens_per_request: Option<u32>,
}

/// A limit set to zero: a session that may do nothing is a mistake; leaving the field out is how to
/// ask for no limit of one's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} must be at least 1 when set", field.request_path())]
pub struct ZeroLimitError {
    /// The field set to zero (a configuration loader names its own section with [`LimitField::name`]).
    pub field: LimitField,
}

/// A requested limit above the configured ceiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be at most {ceiling}, got {requested}")]
pub struct LimitError {
    /// The field's path in the request (`limits.max_tokens`).
    pub field: &'static str,
    /// What was asked for.
    pub requested: u64,
    /// The most the configuration allows.
    pub ceiling: u64,
}

/// A configured default above its ceiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limits.default.{field} ({default}) must not exceed limits.ceiling.{field} ({ceiling})")]
pub struct LimitsPolicyError {
    /// The field.
    pub field: LimitField,
    /// `limits.default.<field>`.
    pub default: u64,
    /// `limits.ceiling.<field>`.
    pub ceiling: u64,
}

impl Limits {
    /// No limit at all.
    pub const UNLIMITED: Self = Self {
        max_requests: None,
        requests_per_minute: None,
        max_tokens: None,
        max_output_tokens_per_request: None,
    };

    /// Validates limits: each one set must be at least 1.
    ///
    /// # Errors
    /// [`ZeroLimitError`] names the first field set to zero.
    pub fn new(parts: LimitsParts) -> Result<Self, ZeroLimitError> {
        let limits = Self {
            max_requests: parts.max_requests,
            requests_per_minute: parts.requests_per_minute,
            max_tokens: parts.max_tokens,
            max_output_tokens_per_request: parts.max_output_tokens_per_request,
        };
        match LimitField::ALL.into_iter().find(|&field| limits.get(field) == Some(0)) {
            Some(field) => Err(ZeroLimitError { field }),
            None => Ok(limits),
        }
    }

    /// Proxied requests over the session's life.
    pub fn max_requests(&self) -> Option<u64> {
        self.max_requests
    }
    /// Proxied requests per minute.
    pub fn requests_per_minute(&self) -> Option<u32> {
        self.requests_per_minute
    }
    /// Input and output tokens over the session's life.
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
    }
    /// The most output tokens one request may ask for.
    pub fn max_output_tokens_per_request(&self) -> Option<u32> {
        self.max_output_tokens_per_request
    }

    /// The value of one field, widened to `u64` so that rules can treat the four alike.
    pub fn get(&self, field: LimitField) -> Option<u64> {
        match field {
            LimitField::MaxRequests => self.max_requests,
            LimitField::RequestsPerMinute => self.requests_per_minute.map(u64::from),
            LimitField::MaxTokens => self.max_tokens,
            LimitField::MaxOutputTokensPerRequest => self.max_output_tokens_per_request.map(u64::from),
        }
    }

    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        *self == Self::UNLIMITED
    }

    /// The fields, for a store to keep.
    pub fn to_parts(&self) -> LimitsParts {
        LimitsParts {
            max_requests: self.max_requests,
            requests_per_minute: self.requests_per_minute,
            max_tokens: self.max_tokens,
            max_output_tokens_per_request: self.max_output_tokens_per_request,
        }
    }
}

/// The configured limits: the default a session gets for what it does not ask, and the ceiling on what
/// it may ask (`[limits.default]`, `[limits.ceiling]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsPolicy {
    default: Limits,
    ceiling: Limits,
}

impl LimitsPolicy {
    /// No default and no ceiling: sessions are limited only by what they ask for.
    pub const UNLIMITED: Self = Self { default: Limits::UNLIMITED, ceiling: Limits::UNLIMITED };

    /// A policy whose defaults lie within its ceilings.
    ///
    /// # Errors
    /// [`LimitsPolicyError`] names the first field whose default exceeds its ceiling.
    pub fn new(default: Limits, ceiling: Limits) -> Result<Self, LimitsPolicyError> {
        for field in LimitField::ALL {
            if let (Some(default), Some(ceiling)) = (default.get(field), ceiling.get(field))
                && default > ceiling
            {
                return Err(LimitsPolicyError { field, default, ceiling });
            }
        }
        Ok(Self { default, ceiling })
    }

    /// The limits of a session that asked for `requested`: each field as asked, else the default, else
    /// the ceiling.
    ///
    /// # Errors
    /// [`LimitError`] names the first field asked above its ceiling.
    pub fn resolve(&self, requested: &Limits) -> Result<Limits, LimitError> {
        for field in LimitField::ALL {
            if let (Some(asked), Some(ceiling)) = (requested.get(field), self.ceiling.get(field))
                && asked > ceiling
            {
                return Err(LimitError { field: field.request_path(), requested: asked, ceiling });
            }
        }
        let (default, ceiling) = (&self.default, &self.ceiling);
        Ok(Limits {
            max_requests: requested.max_requests.or(default.max_requests).or(ceiling.max_requests),
            requests_per_minute: requested
                .requests_per_minute
                .or(default.requests_per_minute)
                .or(ceiling.requests_per_minute),
            max_tokens: requested.max_tokens.or(default.max_tokens).or(ceiling.max_tokens),
            max_output_tokens_per_request: requested
                .max_output_tokens_per_request
                .or(default.max_output_tokens_per_request)
                .or(ceiling.max_output_tokens_per_request),
        })
    }

    /// What a session gets for the fields it does not ask for (before the ceiling fills the rest).
    pub fn default_limits(&self) -> &Limits {
        &self.default
    }

    /// The most a session may ask for.
    pub fn ceiling(&self) -> &Limits {
        &self.ceiling
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(
        max_requests: Option<u64>,
        rpm: Option<u32>,
        tokens: Option<u64>,
        output: Option<u32>,
    ) -> Limits {
        Limits::new(LimitsParts {
            max_requests,
            requests_per_minute: rpm,
            max_tokens: tokens,
            max_output_tokens_per_request: output,
        })
        .unwrap()
    }

    #[test]
    fn new_refuses_a_zero_naming_the_field() {
        let zero_tokens =
            LimitsParts { max_requests: Some(5), max_tokens: Some(0), ..LimitsParts::default() };
        let error = Limits::new(zero_tokens).unwrap_err();
        assert_eq!(error, ZeroLimitError { field: LimitField::MaxTokens });
        assert_eq!(error.to_string(), "limits.max_tokens must be at least 1 when set");
        let zero_rpm = LimitsParts { requests_per_minute: Some(0), ..LimitsParts::default() };
        assert_eq!(Limits::new(zero_rpm), Err(ZeroLimitError { field: LimitField::RequestsPerMinute }));
        let zero_output = LimitsParts { max_output_tokens_per_request: Some(0), ..LimitsParts::default() };
        assert_eq!(
            Limits::new(zero_output),
            Err(ZeroLimitError { field: LimitField::MaxOutputTokensPerRequest })
        );
        let zero_requests = LimitsParts { max_requests: Some(0), ..LimitsParts::default() };
        assert_eq!(Limits::new(zero_requests), Err(ZeroLimitError { field: LimitField::MaxRequests }));
        let ones = limits(Some(1), Some(1), Some(1), Some(1));
        assert_eq!(Limits::new(ones.to_parts()), Ok(ones));
    }

    #[test]
    fn only_limits_with_nothing_set_are_unlimited() {
        assert!(Limits::default().is_unlimited());
        assert!(Limits::new(LimitsParts::default()).unwrap().is_unlimited());
        assert!(!limits(None, None, None, Some(1)).is_unlimited());
    }

    #[test]
    fn a_default_above_its_ceiling_is_a_configuration_error_naming_both_settings() {
        let default = limits(None, None, Some(2000), None);
        let ceiling = limits(None, None, Some(1000), None);
        let error = LimitsPolicy::new(default, ceiling).unwrap_err();
        assert_eq!(error, LimitsPolicyError { field: LimitField::MaxTokens, default: 2000, ceiling: 1000 });
        assert_eq!(
            error.to_string(),
            "limits.default.max_tokens (2000) must not exceed limits.ceiling.max_tokens (1000)"
        );
        assert!(LimitsPolicy::new(ceiling, ceiling).is_ok());
        // A default with no ceiling, or a ceiling with no default, constrains nothing else.
        assert!(
            LimitsPolicy::new(limits(Some(9), None, None, None), limits(None, Some(1), None, None)).is_ok()
        );
    }

    #[test]
    fn resolve_takes_the_request_then_the_default_then_the_ceiling() {
        let policy = LimitsPolicy::new(
            limits(Some(1000), Some(60), None, None),
            limits(None, Some(120), Some(1_000_000), Some(4096)),
        )
        .unwrap();
        let asked = limits(Some(5), None, Some(100), None);
        assert_eq!(policy.resolve(&asked), Ok(limits(Some(5), Some(60), Some(100), Some(4096))));
        assert_eq!(
            policy.resolve(&Limits::UNLIMITED),
            Ok(limits(Some(1000), Some(60), Some(1_000_000), Some(4096)))
        );
        assert_eq!(LimitsPolicy::UNLIMITED.resolve(&asked), Ok(asked));
        assert_eq!(LimitsPolicy::default().resolve(&Limits::UNLIMITED), Ok(Limits::UNLIMITED));
    }

    #[test]
    fn resolve_refuses_a_request_above_the_ceiling_and_accepts_one_at_it() {
        let policy =
            LimitsPolicy::new(Limits::UNLIMITED, limits(None, Some(20), Some(1_000_000), None)).unwrap();
        let error = policy.resolve(&limits(None, None, Some(2_000_000), None)).unwrap_err();
        assert_eq!(
            error,
            LimitError { field: "limits.max_tokens", requested: 2_000_000, ceiling: 1_000_000 }
        );
        assert_eq!(error.to_string(), "limits.max_tokens must be at most 1000000, got 2000000");
        assert!(policy.resolve(&limits(None, None, Some(1_000_000), None)).is_ok());
        let error = policy.resolve(&limits(None, Some(21), None, None)).unwrap_err();
        assert_eq!(error.field, "limits.requests_per_minute");
    }

    fn some_limits() -> impl Strategy<Value = Limits> {
        let value = || proptest::option::of(1u32..50);
        (value(), value(), value(), value()).prop_map(|(requests, rpm, tokens, output)| {
            limits(requests.map(u64::from), rpm, tokens.map(u64::from), output)
        })
    }

    proptest! {
        #[test]
        fn resolved_limits_never_exceed_the_ceiling_and_omission_never_escapes_it(
            default in some_limits(), ceiling in some_limits(), requested in some_limits(),
        ) {
            let Ok(policy) = LimitsPolicy::new(default, ceiling) else { return Ok(()) };
            match policy.resolve(&requested) {
                Ok(resolved) => {
                    for field in LimitField::ALL {
                        let got = resolved.get(field);
                        if let Some(cap) = ceiling.get(field) {
                            let within = got.is_some_and(|value| value <= cap);
                            prop_assert!(within, "{} = {:?} over {}", field, got, cap);
                        }
                        if let Some(asked) = requested.get(field) {
                            prop_assert_eq!(got, Some(asked));
                        } else {
                            prop_assert_eq!(got, default.get(field).or(ceiling.get(field)));
                        }
                    }
                }
                Err(error) => {
                    let over = LimitField::ALL.into_iter().any(|field| {
                        field.request_path() == error.field
                            && requested.get(field) == Some(error.requested)
                            && ceiling.get(field) == Some(error.ceiling)
                            && error.requested > error.ceiling
                    });
                    prop_assert!(over, "{}", error);
                }
            }
        }
    }
}
