//! [`Origin`]: a browser origin (`scheme://host[:port]`), as a scope lists them and browsers send them.

use std::fmt;

/// Longest origin text: a scheme, the longest DNS name (253 characters) and a port, with room to spare.
pub const MAX_ORIGIN_LEN: usize = 300;

/// Longest host name DNS allows (RFC 1035 §2.3.4, written without the final dot).
const MAX_HOST_LEN: usize = 253;

/// A browser origin: `http` or `https`, a host and an optional port, nothing else.
///
/// Kept in the form browsers serialise (the HTML standard's "ASCII serialization of an origin"): scheme
/// and host in lower case, and no port when it is the scheme's default (80, 443), so that comparing with
/// a request's `Origin` header is comparing like with like.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Origin(Box<str>);

/// Why an origin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// Longer than [`MAX_ORIGIN_LEN`].
    #[error("an origin must be at most {MAX_ORIGIN_LEN} characters")]
    TooLong,
    /// The scheme is missing or not `http`/`https`.
    #[error("an origin must start with http:// or https://")]
    Scheme,
    /// A `user@` part.
    #[error("an origin must not contain user information (user@)")]
    UserInfo,
    /// A path, even a single trailing `/`.
    #[error("an origin must not have a path, not even a trailing / (https://app.example.com)")]
    Path,
    /// A `?` or `#`.
    #[error("an origin must not have a query or a fragment")]
    QueryOrFragment,
    /// The host is empty or not a DNS name, an IPv4 address or a bracketed IPv6 address.
    #[error("an origin's host must be a DNS name or IP address (A-Z a-z 0-9 . - _, or [IPv6])")]
    Host,
    /// The port is not a number from 1 to 65535 written without leading zeros.
    #[error("an origin's port must be a number from 1 to 65535")]
    Port,
}

impl Origin {
    /// Parses `scheme://host[:port]`; scheme and host in any case.
    ///
    /// # Errors
    /// [`OriginError`] names the rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        if text.len() > MAX_ORIGIN_LEN {
            return Err(OriginError::TooLong);
        }
        let (scheme, authority) = text.split_once("://").ok_or(OriginError::Scheme)?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(OriginError::Scheme),
        };
        if let Some(position) = authority.find(['/', '?', '#']) {
            return Err(match authority.as_bytes()[position] {
                b'/' => OriginError::Path,
                _ => OriginError::QueryOrFragment,
            });
        }
        if authority.contains('@') {
            return Err(OriginError::UserInfo);
        }
        let (host, port) = split_host_and_port(authority)?;
        let host = host.to_ascii_lowercase();
        let port = port.map(parse_port).transpose()?.filter(|&port| port != default_port);
        let origin = match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        Ok(Self(origin.into_boxed_str()))
    }

    /// Whether a request's `Origin` header names this origin (scheme and host compared without regard to
    /// case). `null`, and any header that is not a valid origin, never matches.
    pub fn matches_header(&self, header: &str) -> bool {
        Origin::parse(header).is_ok_and(|sent| sent == *self)
    }

    /// The origin as browsers write it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Splits the authority into a validated host and the port's text, if any.
fn split_host_and_port(authority: &str) -> Result<(&str, Option<&str>), OriginError> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or(OriginError::Host)?;
        let (host, rest) = authority.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return Err(OriginError::Host),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if !(is_dns_or_ipv4_host(host) || is_ipv6_literal(host)) {
        return Err(OriginError::Host);
    }
    Ok((host, port))
}

/// A DNS name or dotted IPv4 address: non-empty labels of `A-Z a-z 0-9 - _` separated by single dots.
/// (`_` is not valid in host names but browsers accept it, and so serialise it in `Origin`.)
fn is_dns_or_ipv4_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// A bracketed IPv6 address: hex digits, `:` and `.` (for an embedded IPv4 address), with at least one `:`.
/// Browsers serialise the address in its compressed form; this only refuses what cannot be one.
fn is_ipv6_literal(host: &str) -> bool {
    let Some(inner) = host.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) else {
        return false;
    };
    inner.contains(':') && inner.bytes().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
}

/// A port of 1–65535 written as browsers write it: decimal digits, no sign, no leading zero.
fn parse_port(text: &str) -> Result<u16, OriginError> {
    if text.is_empty() || text.starts_with('0') || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OriginError::Port);
    }
    text.parse::<u16>().map_err(|_| OriginError::Port)
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin(text: &str) -> Origin {
        Origin::parse(text).unwrap_or_else(|error| panic!("{text:?}: {error}"))
    }

    #[test]
    fn parse_keeps_the_form_browsers_send() {
        for (text, canonical) in [
            ("https://app.example.com", "https://app.example.com"),
            ("HTTPS://App.Example.COM", "https://app.example.com"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("http://[2001:DB8::1]", "http://[2001:db8::1]"),
            ("https://example.com:443", "https://example.com"),
            ("http://example.com:80", "http://example.com"),
            ("http://example.com:443", "http://example.com:443"),
            ("https://my_host.internal:65535", "https://my_host.internal:65535"),
        ] {
            assert_eq!(origin(text).as_str(), canonical, "{text}");
            assert_eq!(origin(text).to_string(), canonical, "{text}");
        }
        assert_eq!(format!("{:?}", origin("https://a.b")), "Origin(\"https://a.b\")");
    }

    #[test]
    fn parse_refuses_each_broken_rule_with_its_own_error() {
        let cases = [
            ("app.example.com", OriginError::Scheme),
            ("ftp://example.com", OriginError::Scheme),
            ("null", OriginError::Scheme),
            ("https:/example.com", OriginError::Scheme),
            ("https://example.com/", OriginError::Path),
            ("https://example.com/app", OriginError::Path),
            ("https://example.com?x=1", OriginError::QueryOrFragment),
            ("https://example.com#top", OriginError::QueryOrFragment),
            ("https://user@example.com", OriginError::UserInfo),
            ("https://user:pw@example.com", OriginError::UserInfo),
            ("https://", OriginError::Host),
            ("https://:443", OriginError::Host),
            ("https://exa mple.com", OriginError::Host),
            ("https://example..com", OriginError::Host),
            ("https://.example.com", OriginError::Host),
            ("https://example.com.", OriginError::Host),
            ("https://exämple.com", OriginError::Host),
            ("https://[::1", OriginError::Host),
            ("https://[::1]x", OriginError::Host),
            ("https://[]", OriginError::Host),
            ("https://[zz::1]", OriginError::Host),
            ("https://example.com:", OriginError::Port),
            ("https://example.com:0", OriginError::Port),
            ("https://example.com:0443", OriginError::Port),
            ("https://example.com:65536", OriginError::Port),
            ("https://example.com:+1", OriginError::Port),
            ("https://example.com:1:2", OriginError::Port),
        ];
        for (text, expected) in cases {
            assert_eq!(Origin::parse(text), Err(expected), "{text:?}");
        }
        let long = format!("https://{}.com", "a".repeat(MAX_ORIGIN_LEN));
        assert_eq!(Origin::parse(&long), Err(OriginError::TooLong));
        let long_host = format!("https://{}", vec!["a".repeat(63); 4].join("."));
        assert_eq!(Origin::parse(&long_host), Err(OriginError::Host));
    }

    #[test]
    fn matches_header_ignores_case_and_never_matches_null_or_malformed_headers() {
        let app = origin("https://app.example.com");
        assert!(app.matches_header("https://app.example.com"));
        assert!(app.matches_header("HTTPS://APP.example.com"));
        assert!(app.matches_header("https://app.example.com:443"));
        for other in [
            "null",
            "",
            "http://app.example.com",
            "https://app.example.com:8443",
            "https://app.example.com/",
            "https://app.example.com.evil.com",
            "https://evil.com",
            " https://app.example.com",
            "https://app.example.com, https://evil.com",
        ] {
            assert!(!app.matches_header(other), "{other:?}");
        }
    }

    proptest! {
        #[test]
        fn an_origin_reparses_from_its_text_and_matches_it(
            secure in any::<bool>(),
            host in "[a-zA-Z0-9-]{1,10}(\\.[a-zA-Z0-9_-]{1,10}){0,3}",
            port in 0u16..,
        ) {
            let scheme = if secure { "https" } else { "http" };
            let text = match port {
                0 => format!("{scheme}://{host}"),
                _ => format!("{scheme}://{host}:{port}"),
            };
            let parsed = origin(&text);
            prop_assert_eq!(Origin::parse(parsed.as_str()), Ok(parsed.clone()));
            prop_assert!(parsed.matches_header(&text));
            prop_assert!(parsed.matches_header(&text.to_ascii_uppercase()));
        }

        #[test]
        fn parse_never_panics(text in "(?s).{0,40}|(https?://)[ -~]{0,20}") {
            if let Ok(parsed) = Origin::parse(&text) {
                prop_assert!(parsed.as_str().starts_with("http"), "{:?}", text);
                prop_assert!(!parsed.as_str().bytes().any(|b| b.is_ascii_uppercase()), "{:?}", text);
            }
        }
    }
}
