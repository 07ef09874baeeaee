//! The bridge protocol's messages as they arrive from the bus: requests (at a bridge), replies (at the
//! requesting instance, parsed then opened) and announcements, all under a fixed bridge secret.
//!
//! Properties: no panic; nothing verifies or opens without the bridge secret's MAC or seal (the inputs
//! cannot forge one, so a reply from the fuzzer never opens); and a reply sealed to a real request with
//! an answer made from the input opens to the same answer, its failure text cut as the protocol says.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use sidekey_bridge::BridgeSecret;
use sidekey_bridge::protocol::{
    Answer, EphemeralKey, SecretAnnouncement, SecretReply, SecretRequest, VerifiedRequest,
};
use sidekey_domain::{SecretRef, SecretValue};

/// The secret, keys and request every input is checked against, made once.
struct Fixture {
    secret: BridgeSecret,
    requester_key: EphemeralKey,
    bridge_key: EphemeralKey,
    secret_ref: SecretRef,
    request: VerifiedRequest,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let secret = BridgeSecret::new("fuzz-bridge-secret-0123456789").expect("a long enough secret");
    let requester_key = EphemeralKey::from_secret_bytes([7u8; 32]);
    let bridge_key = EphemeralKey::from_secret_bytes([9u8; 32]);
    let secret_ref = SecretRef::parse("openai-prod").expect("a valid name");
    let id = "3f0c5f2e-8a4b-4c1d-9e6f-0123456789ab".parse().expect("a UUID");
    let bytes = SecretRequest::new(&secret, id, &secret_ref, "sidekey:bridge:inbox:fuzz", &requester_key, 1)
        .to_bytes();
    let request = SecretRequest::verify(&bytes, &secret).expect("a request made with the secret verifies");
    Fixture { secret, requester_key, bridge_key, secret_ref, request }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;

    if let Ok(request) = SecretRequest::verify(data, &fixture.secret) {
        // Only a holder of the secret can make one; keep the fields' documented forms.
        assert!(!request.reply_to.is_empty() && request.reply_to.bytes().all(|b| b.is_ascii_graphic()));
        assert!(SecretRef::parse(request.secret_ref.as_str()).is_ok());
    }

    if let Ok((id, reply)) = SecretReply::parse(data) {
        assert_eq!(id.hyphenated().to_string(), reply.id, "a reply's id is its canonical UUID");
        // Nobody without the bridge secret can seal a reply, and the fuzzer cannot guess an AEAD tag.
        let opened = reply.open(&fixture.secret, &fixture.requester_key, &fixture.secret_ref);
        assert!(opened.is_err(), "a reply from the fuzzer opened");
    }

    if let Ok(announcement) = SecretAnnouncement::verify(data, &fixture.secret) {
        assert!(SecretRef::parse(announcement.secret_ref.as_str()).is_ok());
    }

    // Seal an answer made from the input to the fixed request, and open it again.
    if data.len() <= 1024
        && let Ok(text) = std::str::from_utf8(data)
    {
        round_trip(fixture, &Answer::Failed(text.to_owned()));
        if let Ok(value) = SecretValue::new(text.to_owned()) {
            round_trip(fixture, &Answer::Found(value));
        }
    }
});

fn round_trip(fixture: &Fixture, answer: &Answer) {
    let reply =
        SecretReply::seal_with(&fixture.secret, &fixture.request, answer, &fixture.bridge_key, [3u8; 24]);
    let (id, parsed) = SecretReply::parse(&reply.to_bytes()).expect("a sealed reply parses");
    assert_eq!(id, fixture.request.id);
    assert_eq!(parsed, reply);
    let opened = parsed
        .open(&fixture.secret, &fixture.requester_key, &fixture.secret_ref)
        .expect("a reply sealed to the request opens");
    match (answer, opened) {
        (Answer::Found(sent), Answer::Found(received)) => assert_eq!(sent.expose(), received.expose()),
        (Answer::Failed(sent), Answer::Failed(received)) => {
            // Control characters removed, then at most 200 bytes cut on a character boundary.
            let stripped: String = sent.chars().filter(|c| !c.is_control()).collect();
            assert!(received.len() <= 200, "a failure text of {} bytes", received.len());
            assert!(stripped.starts_with(&received), "the failure text is not a prefix of what was sent");
            assert!(stripped.len() <= 200 || received.len() > 196, "cut more than one character short");
            if stripped.len() <= 200 {
                assert_eq!(received, stripped);
            }
        }
        (sent, received) => panic!("sent {sent:?}, opened {received:?}"),
    }
    // The same reply does not open for another key name: the name is bound as associated data.
    let other = SecretRef::parse("another-key").expect("a valid name");
    assert!(parsed.open(&fixture.secret, &fixture.requester_key, &other).is_err());
}
