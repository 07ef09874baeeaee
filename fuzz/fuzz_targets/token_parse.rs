//! The parsers of client-supplied identifiers: `Token::parse` (the bearer token), `SecretRef::parse`
//! (`secret_key_id`), `Subject::parse` and `SessionId::parse`, on arbitrary UTF-8.
//!
//! Properties: no panic; each parse is deterministic; what parses round-trips to the same text (a
//! secret name to its lower-case canonical form); and every token built from 32 random bytes parses
//! back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekey_domain::token::{TOKEN_LEN, TOKEN_PREFIX, TOKEN_RANDOM_BYTES};
use sidekey_domain::{SecretRef, SessionId, Subject, Token, TokenDigest};

fuzz_target!(|data: &[u8]| {
    // Any 32 bytes make a token that parses back to the same token.
    if let Some(random) = data.first_chunk::<TOKEN_RANDOM_BYTES>() {
        let token = Token::from_random_bytes(random);
        let parsed = Token::parse(token.expose()).expect("a token built from random bytes parses");
        assert_eq!(parsed.expose(), token.expose());
        assert_eq!(parsed.digest(), token.digest());
    }

    let Ok(text) = std::str::from_utf8(data) else { return };

    let first = Token::parse(text);
    assert_eq!(first, Token::parse(text), "Token::parse is deterministic");
    if let Ok(token) = &first {
        assert_eq!(token.expose(), text, "a parsed token exposes exactly its text");
        assert!(text.len() == TOKEN_LEN && text.starts_with(TOKEN_PREFIX));
        let digest: TokenDigest = token.digest();
        assert_eq!(token.keys().digest(), &digest);
    }

    let secret_ref = SecretRef::parse(text);
    assert_eq!(secret_ref, SecretRef::parse(text), "SecretRef::parse is deterministic");
    if let Ok(secret_ref) = &secret_ref {
        // Names are case-insensitive: what parses is kept in its canonical lower case, and the
        // canonical form parses back to itself.
        let canonical = text.to_ascii_lowercase();
        assert_eq!(secret_ref.as_str(), canonical);
        assert_eq!(secret_ref.to_string(), canonical);
        assert_eq!(SecretRef::parse(&canonical).as_ref(), Ok(secret_ref));
    }

    let subject = Subject::parse(text);
    assert_eq!(subject, Subject::parse(text), "Subject::parse is deterministic");
    if let Ok(subject) = &subject {
        assert_eq!(subject.as_str(), text);
        assert_eq!(subject.to_string(), text);
    }

    let session_id = SessionId::parse(text);
    assert_eq!(session_id, SessionId::parse(text), "SessionId::parse is deterministic");
    if let Ok(id) = session_id {
        // UUIDs have several accepted spellings (braces, urn:uuid:, simple, upper case); the canonical
        // form is the hyphenated lower case one, and it parses back to the same id.
        let canonical = id.to_string();
        assert_eq!(SessionId::parse(&canonical), Ok(id));
        assert_eq!(canonical, id.as_uuid().hyphenated().to_string());
    }
});
