//! [`ProxyPath`]: the path below an upstream, in the one form that is both matched and forwarded.
//!
//! A scope admits a request by comparing its path with route patterns as text, and the proxy then sends
//! that same text to the upstream. The check is only worth something if the upstream cannot read the text
//! as a different path than the one that was matched: a path that climbs (`/v1/files/../admin`), that
//! hides a separator (`/v1/files%2F..%2Fadmin`) or that only means something after a second decoding
//! (`%252e%252e`) would pass a pattern for one resource and reach another. So the parser refuses whatever
//! some server reads differently from the plain text, and rewrites the rest into one canonical form
//! (RFC 3986 §6.2.2) so that two spellings of the same path are matched alike:
//!
//! - An encoded slash or backslash (`%2F`, `%5C`) or a literal `\`: some servers decode `%2F` before routing
//!   and many treat `\` as `/`, which makes segments the matcher never saw.
//! - `%25`, an encoded percent sign: it is the only way to make a path that holds an escape after one
//!   decoding (`%252e` → `%2e` → `.`), so refusing it makes one decoding final.
//! - A `.` or `..` segment in any encoding (`.`, `%2e`, `.%2E`, …), also with `;parameters` (`..;`): servers
//!   resolve dot segments, and Java servers drop `;…` from a segment before resolving it, so `/..;/` is `..`.
//! - An empty segment (`//`): servers disagree on whether to merge it, so a prefix check and the upstream
//!   could count segments differently. One trailing `/` is a real, distinct path and is kept.
//! - A malformed escape, a byte outside visible ASCII, or escapes that do not decode to UTF-8: each is
//!   read differently by different decoders (overlong UTF-8 such as `%C0%AE` is `.` to some of them).
//! - `?` and `#`: the query travels apart; in a path they would split it where the matcher did not.
//!
//! What is accepted is canonicalised: escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded
//! and the hex of the remaining escapes is upper-cased. The dot-segment rule is checked on that form, so
//! `%2e%2E` is refused like `..`.

use std::fmt;

/// A path below an upstream (`""` or starting with `/`), canonical and safe to both match and forward.
///
/// Built only by [`ProxyPath::parse`]; see the [module documentation](self) for the rules and why.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProxyPath(Box<str>);

/// Why a proxied path was refused; each message tells the client what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is neither empty nor starts with `/`.
    #[error("the path must be empty or start with /")]
    NotAbsolute,
    /// The path holds `%2F`, `%5C` or a literal `\`.
    #[error(
        "the path must not contain an encoded slash or backslash (%2F, %5C) or a backslash: separate \
         segments with / only"
    )]
    EncodedSlashOrBackslash,
    /// The path holds `%25`.
    #[error("the path must not contain %25 (an encoded percent sign): percent-encode each character once")]
    EncodedPercent,
    /// A segment is `.` or `..` in some encoding, possibly followed by `;parameters`.
    #[error("the path must not contain a . or .. segment, in any encoding or followed by ;parameters")]
    DotSegment,
    /// Two `/` follow each other.
    #[error("the path must not contain an empty segment (//)")]
    EmptySegment,
    /// A `%` is not followed by two hexadecimal digits.
    #[error("the path has a % that is not followed by two hexadecimal digits")]
    MalformedEscape,
    /// The path holds a space, a control character or a non-ASCII character.
    #[error("the path may only contain visible ASCII characters: percent-encode spaces and other characters")]
    InvalidCharacter,
    /// The percent-escapes decode to bytes that are not UTF-8.
    #[error("the path's percent-escapes must decode to UTF-8 text")]
    InvalidUtf8,
    /// The path holds `?` or `#`.
    #[error("the path must not contain ? or #: send the query string apart from the path")]
    QueryOrFragment,
}

impl ProxyPath {
    /// Validates and canonicalises the path below an upstream, exactly as the client percent-encoded it.
    ///
    /// # Errors
    /// [`PathError`] names the first rule the path breaks, reading it from the left.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Ok(Self(Box::from("")));
        }
        if !raw.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        let bytes = raw.as_bytes();
        let mut canonical = String::with_capacity(raw.len());
        // Every byte the path stands for once decoded, kept only to check that escapes spell UTF-8.
        let mut decoded = Vec::with_capacity(raw.len());
        let mut index = 0;
        while index < bytes.len() {
            let byte = bytes[index];
            match byte {
                b'%' => {
                    let value = escaped_byte(bytes, index).ok_or(PathError::MalformedEscape)?;
                    match value {
                        b'/' | b'\\' => return Err(PathError::EncodedSlashOrBackslash),
                        b'%' => return Err(PathError::EncodedPercent),
                        _ if is_unreserved(value) => canonical.push(char::from(value)),
                        _ => push_escape(&mut canonical, value),
                    }
                    decoded.push(value);
                    index += 3;
                }
                b'\\' => return Err(PathError::EncodedSlashOrBackslash),
                b'?' | b'#' => return Err(PathError::QueryOrFragment),
                _ if byte.is_ascii_graphic() => {
                    canonical.push(char::from(byte));
                    decoded.push(byte);
                    index += 1;
                }
                _ => return Err(PathError::InvalidCharacter),
            }
        }
        if std::str::from_utf8(&decoded).is_err() {
            return Err(PathError::InvalidUtf8);
        }
        check_segments(&canonical)?;
        Ok(Self(canonical.into_boxed_str()))
    }

    /// The canonical path: what scopes match and what is forwarded.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The byte that the escape starting at `bytes[index]` (a `%`) stands for, if two hex digits follow.
fn escaped_byte(bytes: &[u8], index: usize) -> Option<u8> {
    let high = hex_value(*bytes.get(index + 1)?)?;
    let low = hex_value(*bytes.get(index + 2)?)?;
    Some(high << 4 | low)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3: characters that mean the same encoded or not, so their escapes are decoded.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn push_escape(canonical: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    canonical.push('%');
    canonical.push(char::from(HEX[usize::from(byte >> 4)]));
    canonical.push(char::from(HEX[usize::from(byte & 0x0f)]));
}

/// The segment rules, on the canonical form (which starts with `/`).
fn check_segments(canonical: &str) -> Result<(), PathError> {
    let mut segments = canonical[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let is_last = segments.peek().is_none();
        // An empty last segment is the trailing `/` (or the path `/` itself), a path of its own.
        if segment.is_empty() && !is_last {
            return Err(PathError::EmptySegment);
        }
        if is_dot_segment(segment) {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

/// Whether a canonical segment is `.` or `..` once its `;parameters` are dropped. The canonical form has
/// decoded every `%2E`, so dots are literal here; an encoded `;` (`%3B`) is cut at too, because a server
/// that decodes before it strips parameters would read it as one.
fn is_dot_segment(segment: &str) -> bool {
    let name_end = [segment.find(';'), segment.find("%3B")].into_iter().flatten().min();
    let name = &segment[..name_end.unwrap_or(segment.len())];
    name == "." || name == ".."
}

impl fmt::Display for ProxyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProxyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyPath({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canonical(raw: &str) -> String {
        ProxyPath::parse(raw).unwrap_or_else(|error| panic!("{raw:?}: {error}")).as_str().to_owned()
    }

    #[test]
    fn plain_paths_are_kept_as_they_are() {
        for path in [
            "",
            "/",
            "/v1/chat/completions",
            "/v1/threads/",
            "/v1/files/file-abc123/content",
            "/models/gemini-2.0-flash:generateContent",
            "/a/.../b",
            "/a/.x/..y/x..",
            "/v1/a;b=c/d",
            "/v1/~user/!$&'()*+,=:@",
        ] {
            assert_eq!(canonical(path), path);
        }
    }

    #[test]
    fn escapes_of_unreserved_characters_are_decoded_and_others_upper_cased() {
        assert_eq!(canonical("/v1/%41%7a%30%2D%2e%5F%7E"), "/v1/Az0-._~");
        assert_eq!(canonical("/v1/models/ft%3agpt-4o%3A%20x"), "/v1/models/ft%3Agpt-4o%3A%20x");
        assert_eq!(canonical("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(canonical("/v1/x%2e"), "/v1/x.");
    }

    #[test]
    fn a_path_that_is_not_empty_must_start_with_a_slash() {
        assert_eq!(ProxyPath::parse("v1/models"), Err(PathError::NotAbsolute));
        assert_eq!(ProxyPath::parse("%2Fv1"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn encoded_separators_and_backslashes_are_refused() {
        for path in ["/a%2fb", "/a%2Fb", "/a%5cb", "/a%5Cb", "/a\\b", "/\\", "/a/%2F%2e%2e"] {
            assert_eq!(ProxyPath::parse(path), Err(PathError::EncodedSlashOrBackslash), "{path:?}");
        }
    }

    #[test]
    fn an_encoded_percent_sign_is_refused_whatever_follows_it() {
        for path in ["/%25", "/a%252e%252e/b", "/a%2541", "/%25%25"] {
            assert_eq!(ProxyPath::parse(path), Err(PathError::EncodedPercent), "{path:?}");
        }
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for path in [
            "/.",
            "/..",
            "/./",
            "/../",
            "/a/./b",
            "/a/../b",
            "/a/..",
            "/%2e",
            "/%2E/",
            "/a/%2e%2e/b",
            "/a/.%2e/b",
            "/a/%2E./b",
            "/a/..;/b",
            "/a/..;jsessionid=x/b",
            "/a/.;x",
            "/a/..%3b/b",
            "/a/%2e%2e%3Bx/b",
            "/a/%2e%2e;",
        ] {
            assert_eq!(ProxyPath::parse(path), Err(PathError::DotSegment), "{path:?}");
        }
    }

    #[test]
    fn empty_segments_are_refused_but_one_trailing_slash_is_kept() {
        for path in ["//", "//a", "/a//b", "/a//", "/a///"] {
            assert_eq!(ProxyPath::parse(path), Err(PathError::EmptySegment), "{path:?}");
        }
        assert_eq!(canonical("/v1/threads/"), "/v1/threads/");
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for path in ["/%", "/a%", "/a%2", "/a%g0", "/a%0g", "/a%%41", "/a%-1"] {
            assert_eq!(ProxyPath::parse(path), Err(PathError::MalformedEscape), "{path:?}");
        }
    }

    #[test]
    fn spaces_controls_and_non_ascii_are_refused() {
        for path in ["/a b", "/a\tb", "/a\nb", "/a\0", "/a\u{7f}", "/café", "/ключ"] {
            assert_eq!(ProxyPath::parse(path), Err(PathError::InvalidCharacter), "{path:?}");
        }
    }

    #[test]
    fn escapes_that_do_not_spell_utf8_are_refused() {
        for path in ["/%ff", "/%c0%ae", "/%c0%ae%c0%ae/x", "/a%C3"] {
            assert_eq!(ProxyPath::parse(path), Err(PathError::InvalidUtf8), "{path:?}");
        }
    }

    #[test]
    fn a_query_or_fragment_is_refused() {
        for path in ["/a?b=c", "/a#b", "/?", "/#"] {
            assert_eq!(ProxyPath::parse(path), Err(PathError::QueryOrFragment), "{path:?}");
        }
        // Encoded, they are plain characters of a segment.
        assert_eq!(canonical("/a%3fb%23c"), "/a%3Fb%23c");
    }

    #[test]
    fn display_and_debug_show_the_canonical_path() {
        let path = ProxyPath::parse("/v1/%61").unwrap();
        assert_eq!(path.to_string(), "/v1/a");
        assert_eq!(format!("{path:?}"), "ProxyPath(\"/v1/a\")");
    }

    /// Percent-decodes once, leaving anything that is not a valid escape as it is.
    fn decode_once(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            match (bytes[index], escaped_byte(bytes, index)) {
                (b'%', Some(value)) => {
                    out.push(value);
                    index += 3;
                }
                (byte, _) => {
                    out.push(byte);
                    index += 1;
                }
            }
        }
        out
    }

    /// Paths made of the pieces the rules are about, so that most cases probe an edge.
    fn path_like() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => Just("/".to_owned()),
            4 => "[a-zA-Z0-9_~-]{1,3}",
            2 => Just(".".to_owned()),
            1 => Just(";".to_owned()),
            1 => "%[0-9a-fA-F]{2}",
            1 => prop_oneof![Just("%2e"), Just("%2E"), Just("%2f"), Just("%5c"), Just("%25"), Just("%3b")]
                .prop_map(str::to_owned),
            1 => prop_oneof![Just("%"), Just("\\"), Just("?"), Just(" "), Just("é"), Just(":@!*+,")]
                .prop_map(str::to_owned),
        ];
        (proptest::bool::weighted(0.9), proptest::collection::vec(piece, 0..16)).prop_map(
            |(rooted, pieces)| {
                let body = pieces.concat();
                if rooted { format!("/{body}") } else { body }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn canonicalisation_is_idempotent(raw in path_like()) {
            if let Ok(path) = ProxyPath::parse(&raw) {
                let again = ProxyPath::parse(path.as_str());
                prop_assert_eq!(again.as_ref(), Ok(&path));
            }
        }

        #[test]
        fn no_accepted_path_decodes_to_a_dot_segment_an_empty_segment_or_a_backslash(raw in path_like()) {
            let Ok(path) = ProxyPath::parse(&raw) else { return Ok(()) };
            let mut bytes = path.as_str().as_bytes().to_vec();
            for _ in 0..3 {
                bytes = decode_once(&bytes);
                let text = String::from_utf8_lossy(&bytes);
                prop_assert!(!text.contains('\\'), "{} decodes to {}", path, text);
                prop_assert!(!text.contains("//"), "{} decodes to {}", path, text);
                for segment in text.split('/') {
                    let name = segment.split(';').next().unwrap_or_default();
                    prop_assert!(name != "." && name != "..", "{} decodes to {}", path, text);
                }
            }
        }

        #[test]
        fn accepted_paths_escape_only_reserved_bytes_in_upper_case(raw in path_like()) {
            let Ok(path) = ProxyPath::parse(&raw) else { return Ok(()) };
            let bytes = path.as_str().as_bytes();
            prop_assert!(bytes.iter().all(u8::is_ascii_graphic));
            for (index, _) in path.as_str().match_indices('%') {
                let value = escaped_byte(bytes, index).expect("a canonical escape is well formed");
                prop_assert!(!is_unreserved(value), "{}", path);
                prop_assert!(!bytes[index + 1..index + 3].iter().any(u8::is_ascii_lowercase), "{}", path);
            }
        }

        #[test]
        fn parse_never_panics_and_accepts_only_rooted_ascii(raw in "(?s).{0,64}") {
            if let Ok(path) = ProxyPath::parse(&raw) {
                prop_assert!(path.as_str().is_empty() || path.as_str().starts_with('/'), "{:?}", raw);
                prop_assert!(path.as_str().bytes().all(|b| b.is_ascii_graphic()), "{:?}", raw);
            }
        }

        #[test]
        fn encoding_unreserved_characters_changes_nothing(raw in "(/[a-zA-Z0-9._~-]{0,6}){0,5}") {
            // Every unreserved character encoded: the answer, path or error, must be the plain text's.
            let encoded: String =
                raw.bytes().map(|b| if b == b'/' { "/".to_owned() } else { format!("%{b:02x}") }).collect();
            prop_assert_eq!(
                ProxyPath::parse(&encoded).map(|p| p.as_str().to_owned()),
                ProxyPath::parse(&raw).map(|p| p.as_str().to_owned())
            );
        }
    }
}
