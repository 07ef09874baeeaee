//! Percent-decoding, and whether a value carries the session token under any number of encodings.
//!
//! An SDK may repeat its "API key", the session token, in a query parameter or a header of its own;
//! sidekey removes those before forwarding. The literal token is not the only spelling: `%73kt_…` is the
//! same parameter to any server that decodes it, and a server, framework or log pipeline that decodes
//! twice turns `%2573kt_…` into the token as well. So a value is decoded until it no longer changes, and
//! searched for the token after every round.

use std::borrow::Cow;

/// Most decoding rounds a value gets. One an honest client sends is stable after one or two; a nest of
/// `%25…` sent to make sidekey decode thousands of times over is cut off here and counts as holding the
/// token (it is dropped: nothing honest is lost, and the work stays bounded by this many passes).
const MAX_DECODING_ROUNDS: usize = 8;

/// Whether `value`, or what it decodes to after any number of rounds of percent-decoding (with `+` as a
/// space when `plus_is_space`, as in a query), contains `token`.
pub(crate) fn holds_token(value: &[u8], token: &str, plus_is_space: bool) -> bool {
    if token.is_empty() {
        return false;
    }
    let mut current = Cow::Borrowed(value);
    for _ in 0..=MAX_DECODING_ROUNDS {
        if holds(&current, token) {
            return true;
        }
        let escaped = memchr::memchr(b'%', &current).is_some()
            || (plus_is_space && memchr::memchr(b'+', &current).is_some());
        if !escaped {
            return false;
        }
        let decoded = percent_decode(&current, plus_is_space);
        if decoded == *current {
            return false;
        }
        current = Cow::Owned(decoded);
    }
    true
}

/// Whether `haystack` contains `needle` literally.
fn holds(haystack: &[u8], needle: &str) -> bool {
    memchr::memmem::find(haystack, needle.as_bytes()).is_some()
}

/// Decodes `%XX` (and `+` when `plus_is_space`), as the WHATWG URL standard does: a `%` not followed by
/// two hex digits stays as it is.
pub(crate) fn percent_decode(text: &[u8], plus_is_space: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    while let Some(&byte) = text.get(at) {
        let hex = |offset: usize| text.get(at + offset).and_then(|digit| (*digit as char).to_digit(16));
        match byte {
            b'%' => {
                if let (Some(high), Some(low)) = (hex(1), hex(2)) {
                    // Two hex digits are below 256.
                    out.push((high * 16 + low) as u8);
                    at += 3;
                    continue;
                }
                out.push(byte);
            }
            b'+' if plus_is_space => out.push(b' '),
            _ => out.push(byte),
        }
        at += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "skt_abc123";

    /// `text` with every byte escaped as `%XX`.
    fn escaped(text: &str) -> String {
        text.bytes().map(|byte| format!("%{byte:02X}")).collect()
    }

    #[test]
    fn the_token_is_found_literally_and_under_any_number_of_encodings() {
        let once = escaped(TOKEN);
        let twice = once.replace('%', "%25");
        let thrice = twice.replace('%', "%25");
        for value in [
            TOKEN.to_owned(),
            format!("Bearer {TOKEN}"),
            "%73kt_abc123".to_owned(),
            "%73%6B%74%5fabc123".to_owned(),
            format!("prefix-{once}-suffix"),
            twice.clone(),
            thrice,
            "%2573kt_abc123".to_owned(),
        ] {
            assert!(holds_token(value.as_bytes(), TOKEN, false), "{value}");
            assert!(holds_token(value.as_bytes(), TOKEN, true), "{value}");
        }
    }

    #[test]
    fn values_without_the_token_are_kept_even_with_escapes() {
        for value in ["", "skt_abc12", "sk-real", "a%20b+c", "%zz%4", "%", "skt%5Fabc124", "abc123skt_"] {
            assert!(!holds_token(value.as_bytes(), TOKEN, false), "{value}");
            assert!(!holds_token(value.as_bytes(), TOKEN, true), "{value}");
        }
        assert!(!holds_token(b"anything", "", false), "an empty token is in nothing");
    }

    #[test]
    fn plus_is_a_space_only_in_queries() {
        let token = "skt_a b";
        assert!(holds_token(b"skt_a+b", token, true));
        assert!(!holds_token(b"skt_a+b", token, false));
        assert!(holds_token(b"skt_a%2Bb".as_slice(), "skt_a+b", false));
    }

    #[test]
    fn a_value_still_changing_after_the_last_round_counts_as_holding_the_token() {
        let mut nested = "x".to_owned();
        for _ in 0..MAX_DECODING_ROUNDS {
            nested = escaped(&nested);
        }
        assert!(!holds_token(nested.as_bytes(), TOKEN, false), "stable within the rounds: kept");
        let deeper = nested.replace('%', "%25");
        assert!(holds_token(deeper.as_bytes(), TOKEN, false), "not stable: dropped");
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode(b"a%20b+c%zz%4", true), b"a b c%zz%4");
        assert_eq!(percent_decode(b"a%20b+c", false), b"a b+c");
        assert_eq!(percent_decode(b"%", true), b"%");
        assert_eq!(percent_decode(b"%41%+1", true), b"A% 1", "`+1` is no hex escape");
        assert_eq!(percent_decode(b"%ff", false), [0xff]);
    }
}
