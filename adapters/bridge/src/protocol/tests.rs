use super::*;

use serde_json::Value;

/// The specification, whose test vectors must match this module.
const SPECIFICATION: &str = include_str!("../../../../docs/bridge-protocol.md");
/// The opening fence of the one block of test vectors in the specification.
const VECTORS_FENCE: &str = "```json test-vectors\n";

const SECRET: &str = "a bridge secret for the unit tests";
const OTHER_SECRET: &str = "another bridge secret, not shared";
const INBOX: &str = "sidekey:bridge:inbox:0b8f7c1e-2d3a-4b5c-9d6e-7f8091a2b3c4";
const EXPIRES_AT_MS: u64 = 1_767_225_600_000;

// ---------------------------------------------------------------------------------------------------
// The test vectors of the specification
// ---------------------------------------------------------------------------------------------------

/// The block of test vectors, as the specification spells it. Every field is either an input or a
/// value computed from the inputs; unknown fields are refused, so none can go unchecked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    bridge_secret: String,
    auth_key_hex: String,
    request: RequestVector,
    replies: Vec<ReplyVector>,
    announcement: AnnouncementVector,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestVector {
    id: String,
    secret_key_id: String,
    reply_to: String,
    requester_private_key_hex: String,
    requester_public_key: String,
    expires_at_ms: u64,
    canonical: String,
    mac: String,
    json: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyVector {
    answer: AnswerVector,
    bridge_private_key_hex: String,
    bridge_public_key: String,
    nonce_hex: String,
    shared_secret_hex: String,
    hkdf_info: String,
    reply_key_hex: String,
    aad: String,
    plaintext: String,
    sealed: String,
    json: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
enum AnswerVector {
    Found { secret: String },
    NotFound,
    Failed { message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnouncementVector {
    id: String,
    secret_key_id: String,
    reason: AnnouncementReason,
    at_ms: u64,
    canonical: String,
    mac: String,
    json: String,
}

impl AnswerVector {
    fn to_answer(&self) -> Answer {
        match self {
            Self::Found { secret } => Answer::Found(SecretValue::new(secret.clone()).unwrap()),
            Self::NotFound => Answer::NotFound,
            Self::Failed { message } => Answer::Failed(message.clone()),
        }
    }

    fn assert_matches(&self, answer: &Answer) {
        match (self, answer) {
            (Self::Found { secret }, Answer::Found(value)) => assert_eq!(value.expose(), secret),
            (Self::NotFound, Answer::NotFound) => {}
            (Self::Failed { message }, Answer::Failed(opened)) => assert_eq!(opened, message),
            (expected, opened) => panic!("expected {expected:?}, opened {opened:?}"),
        }
    }
}

/// The one ```json test-vectors block of the specification.
fn specification_vectors() -> Vectors {
    let mut blocks = SPECIFICATION.match_indices(VECTORS_FENCE);
    let (start, _) = blocks.next().expect("the specification has a ```json test-vectors block");
    assert!(blocks.next().is_none(), "the specification has more than one test-vectors block");
    let body = &SPECIFICATION[start + VECTORS_FENCE.len()..];
    let end = body.find("\n```").expect("the test-vectors block is closed");
    serde_json::from_str(&body[..end]).expect("the test vectors are JSON of the documented shape")
}

/// Every output of `vectors` computed anew by this module from its inputs alone.
fn computed_by_the_module(vectors: &Vectors) -> Vectors {
    let secret = BridgeSecret::new(&vectors.bridge_secret).unwrap();
    let input = &vectors.request;
    let requester = EphemeralKey::from_secret_bytes(unhex(&input.requester_private_key_hex));
    let secret_ref = SecretRef::parse(&input.secret_key_id).unwrap();
    let request_message = SecretRequest::new(
        &secret,
        Uuid::parse_str(&input.id).unwrap(),
        &secret_ref,
        &input.reply_to,
        &requester,
        input.expires_at_ms,
    );
    let request = RequestVector {
        requester_public_key: requester.public_base64(),
        canonical: request_message.canonical(),
        mac: request_message.mac.clone(),
        json: String::from_utf8(request_message.to_bytes()).unwrap(),
        ..input.clone()
    };
    let verified = SecretRequest::verify(&request_message.to_bytes(), &secret).unwrap();
    let replies = vectors
        .replies
        .iter()
        .map(|input| {
            let bridge_key = EphemeralKey::from_secret_bytes(unhex(&input.bridge_private_key_hex));
            let nonce = unhex(&input.nonce_hex);
            let answer = input.answer.to_answer();
            let reply = SecretReply::seal_with(&secret, &verified, &answer, &bridge_key, nonce);
            let shared = bridge_key.secret.diffie_hellman(&verified.requester);
            let hkdf_info = format!("{REPLY_CONTEXT}\n{}\n{}", requester.public_base64(), reply.public_key);
            ReplyVector {
                bridge_public_key: reply.public_key.clone(),
                shared_secret_hex: hex(shared.as_bytes()),
                reply_key_hex: hex(&derive(secret.auth_key.as_ref(), shared.as_bytes(), &hkdf_info)),
                hkdf_info,
                aad: reply_aad(&reply.id, verified.secret_ref.as_str()),
                plaintext: serde_json::to_string(&sealed_answer(&answer)).unwrap(),
                sealed: reply.sealed.clone(),
                json: String::from_utf8(reply.to_bytes()).unwrap(),
                ..input.clone()
            }
        })
        .collect();
    let input = &vectors.announcement;
    let announcement_message = SecretAnnouncement::new(
        &secret,
        Uuid::parse_str(&input.id).unwrap(),
        &SecretRef::parse(&input.secret_key_id).unwrap(),
        input.reason,
        input.at_ms,
    );
    let announcement = AnnouncementVector {
        canonical: announcement_message.canonical(),
        mac: announcement_message.mac.clone(),
        json: String::from_utf8(announcement_message.to_bytes()).unwrap(),
        ..input.clone()
    };
    Vectors {
        bridge_secret: vectors.bridge_secret.clone(),
        auth_key_hex: hex(secret.auth_key.as_ref()),
        request,
        replies,
        announcement,
    }
}

/// The paths at which two JSON values differ.
fn differences(path: &str, documented: &Value, computed: &Value, found: &mut Vec<String>) {
    match (documented, computed) {
        (Value::Object(documented), Value::Object(computed)) => {
            for key in documented.keys().chain(computed.keys().filter(|key| !documented.contains_key(*key))) {
                let missing = Value::Null;
                let path = format!("{path}.{key}");
                let (left, right) = (documented.get(key), computed.get(key));
                differences(&path, left.unwrap_or(&missing), right.unwrap_or(&missing), found);
            }
        }
        (Value::Array(documented), Value::Array(computed)) if documented.len() == computed.len() => {
            for (index, (left, right)) in documented.iter().zip(computed).enumerate() {
                differences(&format!("{path}[{index}]"), left, right, found);
            }
        }
        _ if documented == computed => {}
        _ => found.push(format!("{path}: documented {documented}, computed {computed}")),
    }
}

/// What differs between the documented vectors and what this module computes from their inputs.
fn module_mismatches(documented: &Vectors) -> Vec<String> {
    let computed = computed_by_the_module(documented);
    let mut found = Vec::new();
    differences(
        "vectors",
        &serde_json::to_value(documented).unwrap(),
        &serde_json::to_value(&computed).unwrap(),
        &mut found,
    );
    found
}

/// Records a mismatch between a documented value and a computed one.
fn check<T: PartialEq + fmt::Debug>(found: &mut Vec<String>, what: &str, documented: &T, computed: &T) {
    if documented != computed {
        found.push(format!("{what}: documented {documented:?}, computed {computed:?}"));
    }
}

/// A JSON text as a value, or `Null` when it is not JSON (which then differs from any expected value).
fn json_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// What differs between the documented vectors and the values recomputed from the bare primitives
/// (HKDF, HMAC, X25519, XChaCha20-Poly1305) as the specification describes them, without this module:
/// a check of the specification's prose too.
fn primitive_mismatches(vectors: &Vectors) -> Vec<String> {
    let mut found = Vec::new();
    let found = &mut found;
    let auth_key = derive(b"sidekey-bridge/v1", vectors.bridge_secret.as_bytes(), "sidekey-bridge/v1/auth");
    check(found, "auth_key_hex", &vectors.auth_key_hex, &hex(&auth_key));

    let request = &vectors.request;
    let requester_private = StaticSecret::from(unhex::<32>(&request.requester_private_key_hex));
    let requester_public = PublicKey::from(&requester_private);
    check(
        found,
        "request.requester_public_key",
        &request.requester_public_key,
        &b64(requester_public.as_bytes()),
    );
    let canonical = format!(
        "sidekey-bridge/v1/request\n{}\n{}\n{}\n{}\n{}",
        request.id,
        request.secret_key_id,
        request.reply_to,
        request.requester_public_key,
        request.expires_at_ms
    );
    check(found, "request.canonical", &request.canonical, &canonical);
    check(found, "request.mac", &request.mac, &b64(&hmac(&auth_key, &canonical)));
    let expected = serde_json::json!({
        "v": 1,
        "type": "secret.request",
        "id": request.id,
        "secret_key_id": request.secret_key_id,
        "reply_to": request.reply_to,
        "public_key": request.requester_public_key,
        "expires_at_ms": request.expires_at_ms,
        "mac": request.mac,
    });
    check(found, "request.json", &json_value(&request.json), &expected);

    for (index, reply) in vectors.replies.iter().enumerate() {
        let what = |field: &str| format!("replies[{index}].{field}");
        let bridge_private = StaticSecret::from(unhex::<32>(&reply.bridge_private_key_hex));
        let bridge_public = PublicKey::from(&bridge_private);
        check(found, &what("bridge_public_key"), &reply.bridge_public_key, &b64(bridge_public.as_bytes()));
        let shared = bridge_private.diffie_hellman(&requester_public);
        assert!(shared.was_contributory());
        let requester_side = requester_private.diffie_hellman(&bridge_public);
        assert_eq!(shared.as_bytes(), requester_side.as_bytes(), "both sides agree");
        check(found, &what("shared_secret_hex"), &reply.shared_secret_hex, &hex(shared.as_bytes()));
        let info =
            format!("sidekey-bridge/v1/reply\n{}\n{}", request.requester_public_key, reply.bridge_public_key);
        check(found, &what("hkdf_info"), &reply.hkdf_info, &info);
        let reply_key = derive(&auth_key, shared.as_bytes(), &info);
        check(found, &what("reply_key_hex"), &reply.reply_key_hex, &hex(&reply_key));
        let aad = format!("sidekey-bridge/v1/reply\n{}\n{}", request.id, request.secret_key_id);
        check(found, &what("aad"), &reply.aad, &aad);
        let answer = serde_json::from_str::<AnswerVector>(&reply.plaintext).ok();
        check(found, &what("plaintext"), &answer, &Some(reply.answer.clone()));
        let cipher = XChaCha20Poly1305::new_from_slice(&reply_key).unwrap();
        let nonce = XNonce::from(unhex::<24>(&reply.nonce_hex));
        let sealed =
            cipher.encrypt(&nonce, Payload { msg: reply.plaintext.as_bytes(), aad: aad.as_bytes() }).unwrap();
        assert_eq!(sealed.len(), reply.plaintext.len() + 16, "the tag is 16 bytes");
        check(found, &what("sealed"), &reply.sealed, &b64(&sealed));
        let opened = cipher.decrypt(&nonce, Payload { msg: &sealed, aad: aad.as_bytes() }).unwrap();
        assert_eq!(opened, reply.plaintext.as_bytes());
        let expected = serde_json::json!({
            "v": 1,
            "type": "secret.reply",
            "id": request.id,
            "public_key": reply.bridge_public_key,
            "nonce": b64(&unhex::<24>(&reply.nonce_hex)),
            "sealed": reply.sealed,
        });
        check(found, &what("json"), &json_value(&reply.json), &expected);
    }

    let announcement = &vectors.announcement;
    let canonical = format!(
        "sidekey-bridge/v1/announcement\n{}\n{}\n{}\n{}",
        announcement.id,
        announcement.secret_key_id,
        announcement.reason.as_str(),
        announcement.at_ms
    );
    check(found, "announcement.canonical", &announcement.canonical, &canonical);
    check(found, "announcement.mac", &announcement.mac, &b64(&hmac(&auth_key, &canonical)));
    let expected = serde_json::json!({
        "v": 1,
        "type": "secret.rotated",
        "id": announcement.id,
        "secret_key_id": announcement.secret_key_id,
        "reason": announcement.reason.as_str(),
        "at_ms": announcement.at_ms,
        "mac": announcement.mac,
    });
    check(found, "announcement.json", &json_value(&announcement.json), &expected);
    std::mem::take(found)
}

#[test]
fn the_specification_test_vectors_are_what_the_module_computes() {
    let documented = specification_vectors();
    let found = module_mismatches(&documented);
    assert!(
        found.is_empty(),
        "the test vectors of docs/bridge-protocol.md disagree with the code (regenerate them with \
         `cargo test -p sidekey-adapters --lib print_test_vectors -- --ignored --nocapture`):\n{}",
        found.join("\n")
    );
    assert!(documented.bridge_secret.len() >= MIN_BRIDGE_SECRET_LEN);
    assert_eq!(documented.replies.len(), 3, "a found, a not_found and a failed reply");
    assert_eq!(
        documented.replies[0].answer,
        AnswerVector::Found { secret: "sk-test-vector-0001".to_owned() }
    );
    assert_eq!(documented.replies[1].answer, AnswerVector::NotFound);
    assert!(matches!(documented.replies[2].answer, AnswerVector::Failed { .. }));
}

#[test]
fn the_specification_test_vectors_follow_from_the_primitives() {
    let found = primitive_mismatches(&specification_vectors());
    assert!(found.is_empty(), "docs/bridge-protocol.md disagrees with the primitives:\n{}", found.join("\n"));
}

/// Each value of the block, changed in turn (one character or one unit), is caught by both checks
/// above: there is no value in the specification that nothing checks.
#[test]
fn every_value_of_the_test_vectors_is_checked() {
    let original = serde_json::to_value(specification_vectors()).unwrap();
    let mut pointers = Vec::new();
    leaves(&original, String::new(), &mut pointers);
    assert!(pointers.len() >= 50, "{} values", pointers.len());
    let mut caught_by_parsing = Vec::new();
    for pointer in pointers {
        let mut changed = original.clone();
        change(changed.pointer_mut(&pointer).unwrap());
        // A change that breaks the shape (a `reason` or `status` no one knows) is caught by parsing.
        let Ok(vectors) = serde_json::from_value::<Vectors>(changed) else {
            caught_by_parsing.push(pointer);
            continue;
        };
        assert!(!module_mismatches(&vectors).is_empty(), "the module check misses a change of {pointer}");
        assert!(
            !primitive_mismatches(&vectors).is_empty(),
            "the primitive check misses a change of {pointer}"
        );
    }
    caught_by_parsing.sort();
    assert_eq!(
        caught_by_parsing,
        [
            "/announcement/reason",
            "/replies/0/answer/status",
            "/replies/1/answer/status",
            "/replies/2/answer/status"
        ]
    );
}

/// The JSON pointers of every string and number in `value`.
fn leaves(value: &Value, pointer: String, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            map.iter().for_each(|(key, value)| leaves(value, format!("{pointer}/{key}"), found))
        }
        Value::Array(items) => {
            items
                .iter()
                .enumerate()
                .for_each(|(index, value)| leaves(value, format!("{pointer}/{index}"), found));
        }
        Value::String(_) | Value::Number(_) => found.push(pointer),
        Value::Null | Value::Bool(_) => {}
    }
}

/// Changes a number by one, or the last letter or digit of a string to another of its kind (a hex digit
/// stays a hex digit), so that every input stays well formed.
fn change(value: &mut Value) {
    match value {
        Value::Number(number) => *value = Value::from(number.as_u64().unwrap() + 1),
        Value::String(text) => {
            let (index, old) = text.char_indices().rev().find(|(_, c)| c.is_ascii_alphanumeric()).unwrap();
            let new = match old {
                '0'..='9' | 'a'..='f' => char::from_digit((old.to_digit(16).unwrap() + 1) % 16, 16).unwrap(),
                'z' => 'a',
                'Z' => 'A',
                _ => char::from(old as u8 + 1),
            };
            text.replace_range(index..=index, &new.to_string());
        }
        _ => unreachable!("only strings and numbers are changed"),
    }
}

/// The documented messages, as they would arrive: the request verifies at a bridge, each reply opens
/// at the requester, the announcement verifies at an instance.
#[test]
fn the_specification_test_vector_messages_verify_and_open() {
    let vectors = specification_vectors();
    let secret = BridgeSecret::new(&vectors.bridge_secret).unwrap();
    let request = &vectors.request;
    let verified = SecretRequest::verify(request.json.as_bytes(), &secret).unwrap();
    assert_eq!(verified.id.to_string(), request.id);
    assert_eq!(verified.secret_ref.as_str(), request.secret_key_id);
    assert_eq!(verified.reply_to, request.reply_to);
    assert_eq!(verified.expires_at_ms, request.expires_at_ms);

    let requester = EphemeralKey::from_secret_bytes(unhex(&request.requester_private_key_hex));
    let secret_ref = SecretRef::parse(&request.secret_key_id).unwrap();
    for reply in &vectors.replies {
        let (id, parsed) = SecretReply::parse(reply.json.as_bytes()).unwrap();
        assert_eq!(id, verified.id);
        reply.answer.assert_matches(&parsed.open(&secret, &requester, &secret_ref).unwrap());
        // Only the requester's key opens it.
        let other = EphemeralKey::from_secret_bytes([7; 32]);
        assert_eq!(parsed.open(&secret, &other, &secret_ref).unwrap_err(), ProtocolError::Unsealable);
    }
    let found = SecretReply::parse(vectors.replies[0].json.as_bytes()).unwrap().1;
    match found.open(&secret, &requester, &secret_ref).unwrap() {
        Answer::Found(value) => assert_eq!(value.expose(), "sk-test-vector-0001"),
        other => panic!("the first reply holds the key, not {other:?}"),
    }

    let announcement = &vectors.announcement;
    let verified = SecretAnnouncement::verify(announcement.json.as_bytes(), &secret).unwrap();
    assert_eq!(verified.id.to_string(), announcement.id);
    assert_eq!(verified.secret_ref.as_str(), announcement.secret_key_id);
    assert_eq!(verified.reason, announcement.reason);
    assert_eq!(verified.at_ms, announcement.at_ms);
}

/// The example of each message in the specification's prose is the test vectors' message (wrapped).
#[test]
fn the_specification_examples_are_the_test_vector_messages() {
    let vectors = specification_vectors();
    let mut expected = vec![&vectors.request.json, &vectors.replies[0].json, &vectors.announcement.json];
    for block in SPECIFICATION.split("```json\n").skip(1) {
        let example = block[..block.find("\n```").unwrap()].replace("\n ", "").replace('\n', "");
        let position = expected.iter().position(|json| **json == example);
        assert!(position.is_some(), "an example is not a test vector's message: {example}");
        expected.remove(position.unwrap());
    }
    assert!(expected.is_empty(), "messages without an example: {expected:?}");
}

/// The constants the specification quotes are those of the code.
#[test]
fn the_specification_quotes_the_constants_of_the_code() {
    let contexts = [HKDF_SALT, AUTH_KEY_INFO].map(|bytes| std::str::from_utf8(bytes).unwrap());
    for quoted in contexts.into_iter().chain([
        REQUEST_CONTEXT,
        REPLY_CONTEXT,
        ANNOUNCEMENT_CONTEXT,
        REQUEST_TYPE,
        REPLY_TYPE,
        ANNOUNCEMENT_TYPE,
    ]) {
        assert!(
            SPECIFICATION.contains(&format!("`{quoted}`")),
            "the specification does not quote {quoted:?}"
        );
    }
    for (what, number) in [
        ("the shortest bridge secret", MIN_BRIDGE_SECRET_LEN),
        ("the longest inbox address", MAX_INBOX_LEN),
        ("the longest failure message", MAX_FAILURE_LEN),
    ] {
        assert!(SPECIFICATION.contains(&format!("{number} bytes")), "{what}: {number} bytes");
    }
    assert_eq!(PROTOCOL_VERSION, 1, "the specification is of version 1");
}

/// Prints the test-vectors block recomputed from the inputs of the one in the specification: paste it
/// over the old one after a deliberate change to the protocol.
#[test]
#[ignore = "prints the test vectors to paste into docs/bridge-protocol.md"]
fn print_test_vectors() {
    let computed = computed_by_the_module(&specification_vectors());
    println!("```json test-vectors\n{}\n```", serde_json::to_string_pretty(&computed).unwrap());
}

// ---------------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------------

fn bridge_secret() -> BridgeSecret {
    BridgeSecret::new(SECRET).unwrap()
}

fn secret_ref(name: &str) -> SecretRef {
    SecretRef::parse(name).unwrap()
}

fn key(seed: u8) -> EphemeralKey {
    EphemeralKey::from_secret_bytes([seed; 32])
}

fn request_id() -> Uuid {
    Uuid::parse_str("5d0e4c2a-7b19-4f3e-8a6d-2c1b0e9f8a7d").unwrap()
}

/// A request from the requester key `key(1)` for `openai-prod`.
fn request() -> SecretRequest {
    SecretRequest::new(
        &bridge_secret(),
        request_id(),
        &secret_ref("openai-prod"),
        INBOX,
        &key(1),
        EXPIRES_AT_MS,
    )
}

fn verified() -> VerifiedRequest {
    SecretRequest::verify(&request().to_bytes(), &bridge_secret()).unwrap()
}

fn found(text: &str) -> Answer {
    Answer::Found(SecretValue::new(text.to_owned()).unwrap())
}

/// The reply to [`verified`], sealed by a bridge holding `secret`.
fn reply_with(secret: &BridgeSecret, answer: &Answer) -> SecretReply {
    SecretReply::seal_with(secret, &verified(), answer, &key(2), [3; 24])
}

/// Opens `reply` as the requester of [`request`] does: parse, then open.
fn open(reply: &SecretReply) -> Result<Answer, ProtocolError> {
    let (id, parsed) = SecretReply::parse(&reply.to_bytes())?;
    assert_eq!(id, request_id());
    parsed.open(&bridge_secret(), &key(1), &secret_ref("openai-prod"))
}

/// The request re-authenticated after a change, so that only the change is refused, not the MAC.
fn remac(mut request: SecretRequest) -> SecretRequest {
    request.mac = encode(&bridge_secret().mac(&request.canonical()));
    request
}

/// A named change to a message.
type Alteration<T> = (&'static str, fn(&mut T));

fn verify(request: &SecretRequest) -> Result<VerifiedRequest, ProtocolError> {
    SecretRequest::verify(&request.to_bytes(), &bridge_secret())
}

#[test]
fn a_request_verifies_with_the_same_bridge_secret() {
    let request = request();
    assert_eq!(request.v, 1);
    assert_eq!(request.kind, "secret.request");
    assert_eq!(request.id, "5d0e4c2a-7b19-4f3e-8a6d-2c1b0e9f8a7d");
    assert_eq!(request.public_key, key(1).public_base64());
    let verified = verify(&request).unwrap();
    assert_eq!(verified.id, request_id());
    assert_eq!(verified.secret_ref, secret_ref("openai-prod"));
    assert_eq!(verified.reply_to, INBOX);
    assert_eq!(verified.expires_at_ms, EXPIRES_AT_MS);
    assert_eq!(verified.requester, key(1).public);
    // Field order and unknown fields do not matter to a reader.
    let mut json: serde_json::Map<String, Value> = serde_json::from_slice(&request.to_bytes()).unwrap();
    json.insert("extension".to_owned(), Value::from("ignored"));
    let reordered = serde_json::to_vec(&json).unwrap();
    assert_eq!(SecretRequest::verify(&reordered, &bridge_secret()).unwrap().id, request_id());
}

#[test]
fn replies_round_trip_for_found_not_found_and_failed() {
    let secret = bridge_secret();
    match open(&reply_with(&secret, &found("sk-live-round-trip"))).unwrap() {
        Answer::Found(value) => assert_eq!(value.expose(), "sk-live-round-trip"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(open(&reply_with(&secret, &Answer::NotFound)).unwrap(), Answer::NotFound));
    match open(&reply_with(&secret, &Answer::Failed("the vault is sealed".to_owned()))).unwrap() {
        Answer::Failed(message) => assert_eq!(message, "the vault is sealed"),
        other => panic!("{other:?}"),
    }
    // The random form: fresh key pair and nonce each time, and still opens.
    let first = SecretReply::seal(&secret, &verified(), &found("sk-live-random")).unwrap();
    let second = SecretReply::seal(&secret, &verified(), &found("sk-live-random")).unwrap();
    assert_ne!(first.public_key, second.public_key);
    assert_ne!(first.nonce, second.nonce);
    assert_ne!(first.sealed, second.sealed);
    for reply in [first, second] {
        assert_eq!(reply.id, "5d0e4c2a-7b19-4f3e-8a6d-2c1b0e9f8a7d");
        assert!(matches!(open(&reply).unwrap(), Answer::Found(value) if value.expose() == "sk-live-random"));
    }
}

#[test]
fn a_failure_message_is_cut_to_200_bytes_without_control_characters() {
    let secret = bridge_secret();
    let long = "x".repeat(300);
    match open(&reply_with(&secret, &Answer::Failed(long))).unwrap() {
        Answer::Failed(message) => assert_eq!(message, "x".repeat(200)),
        other => panic!("{other:?}"),
    }
    // Cut on a character boundary: "a" then two-byte characters, so byte 200 is inside one.
    let multibyte = format!("a{}", "é".repeat(150));
    match open(&reply_with(&secret, &Answer::Failed(multibyte))).unwrap() {
        Answer::Failed(message) => {
            assert_eq!(message.len(), 199);
            assert_eq!(message, format!("a{}", "é".repeat(99)));
        }
        other => panic!("{other:?}"),
    }
    let controls = "line one\nline two\r\n\ttabbed\u{7}\u{1b}[31m red\u{85}".to_owned();
    match open(&reply_with(&secret, &Answer::Failed(controls))).unwrap() {
        Answer::Failed(message) => assert_eq!(message, "line oneline twotabbed[31m red"),
        other => panic!("{other:?}"),
    }
    // The requester cuts too, whatever a bridge sealed.
    let verbose = format!("{}\n{}", "y".repeat(150), "z".repeat(150));
    let plaintext = serde_json::json!({ "status": "failed", "message": verbose }).to_string();
    let reply = seal_plaintext(&secret, plaintext.as_bytes());
    match open(&reply).unwrap() {
        // Control characters go first, then the cut: the message keeps its full 200 bytes.
        Answer::Failed(message) => assert_eq!(message, format!("{}{}", "y".repeat(150), "z".repeat(50))),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Refusals: requests
// ---------------------------------------------------------------------------------------------------

#[test]
fn bridge_secrets_shorter_than_16_bytes_are_refused() {
    assert_eq!(BridgeSecret::new("").unwrap_err(), ProtocolError::WeakSecret);
    assert_eq!(BridgeSecret::new("fifteen bytes!!").unwrap_err(), ProtocolError::WeakSecret);
    assert!(BridgeSecret::new("sixteen bytes!!!").is_ok());
    // Bytes, not characters: eight two-byte characters are enough.
    assert!(BridgeSecret::new(&"é".repeat(8)).is_ok());
    assert_eq!(BridgeSecret::new(&"é".repeat(7)).unwrap_err(), ProtocolError::WeakSecret);
}

#[test]
fn a_request_made_with_another_bridge_secret_is_unauthenticated() {
    let forged = SecretRequest::new(
        &BridgeSecret::new(OTHER_SECRET).unwrap(),
        request_id(),
        &secret_ref("openai-prod"),
        INBOX,
        &key(1),
        EXPIRES_AT_MS,
    );
    assert_eq!(verify(&forged).unwrap_err(), ProtocolError::Unauthenticated);
}

#[test]
fn a_request_with_any_field_altered_is_unauthenticated() {
    let alterations: [Alteration<SecretRequest>; 5] = [
        ("id", |request| request.id = "5d0e4c2a-7b19-4f3e-8a6d-2c1b0e9f8a7e".to_owned()),
        ("secret_key_id", |request| request.secret_key_id = "openai-prof".to_owned()),
        ("reply_to", |request| request.reply_to = format!("{INBOX}0")),
        ("public_key", |request| request.public_key = key(9).public_base64()),
        ("expires_at_ms", |request| request.expires_at_ms += 1),
    ];
    for (field, alter) in alterations {
        let mut altered = request();
        alter(&mut altered);
        assert_eq!(verify(&altered).unwrap_err(), ProtocolError::Unauthenticated, "{field}");
        // The alteration itself is well formed: with a fresh MAC the request passes.
        assert!(verify(&remac(altered)).is_ok(), "{field}");
    }
}

#[test]
fn a_request_whose_mac_is_wrong_or_badly_encoded_is_unauthenticated() {
    let genuine = request();
    let mut bytes = URL_SAFE_NO_PAD.decode(&genuine.mac).unwrap();
    bytes[31] ^= 1;
    let flipped = URL_SAFE_NO_PAD.encode(&bytes);
    let padded =
        base64::engine::general_purpose::URL_SAFE.encode(URL_SAFE_NO_PAD.decode(&genuine.mac).unwrap());
    let standard = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(URL_SAFE_NO_PAD.decode(&genuine.mac).unwrap());
    for mac in [
        flipped,
        String::new(),
        genuine.mac[..genuine.mac.len() - 1].to_owned(),
        URL_SAFE_NO_PAD.encode([0u8; 31]),
        URL_SAFE_NO_PAD.encode([0u8; 33]),
        padded,
        format!("{}*", &genuine.mac[1..]),
        non_canonical(&genuine.mac),
    ] {
        let request = SecretRequest { mac: mac.clone(), ..genuine.clone() };
        assert_eq!(verify(&request).unwrap_err(), ProtocolError::Unauthenticated, "{mac:?}");
    }
    // The standard alphabet is not base64url (unless the MAC happens to hold neither `-` nor `_`).
    if standard != genuine.mac {
        let request = SecretRequest { mac: standard, ..genuine };
        assert_eq!(verify(&request).unwrap_err(), ProtocolError::Unauthenticated);
    }
}

#[test]
fn a_request_of_another_version_is_refused() {
    for version in [0, 2, 255] {
        let request = remac(SecretRequest { v: version, ..request() });
        assert_eq!(verify(&request).unwrap_err(), ProtocolError::Version(version));
    }
}

#[test]
fn a_message_of_another_type_is_not_a_request() {
    for kind in ["secret.reply", "secret.rotated", "secret.Request", ""] {
        let request = remac(SecretRequest { kind: kind.to_owned(), ..request() });
        assert!(matches!(verify(&request).unwrap_err(), ProtocolError::Malformed(_)), "{kind:?}");
    }
    let announcement = SecretAnnouncement::new(
        &bridge_secret(),
        request_id(),
        &secret_ref("openai-prod"),
        AnnouncementReason::Rotated,
        EXPIRES_AT_MS,
    );
    assert!(matches!(
        SecretRequest::verify(&announcement.to_bytes(), &bridge_secret()).unwrap_err(),
        ProtocolError::Malformed(_)
    ));
    for garbage in [&b""[..], b"null", b"[]", b"{}", b"not json", b"{\"v\":1}"] {
        assert!(matches!(
            SecretRequest::verify(garbage, &bridge_secret()).unwrap_err(),
            ProtocolError::Malformed(_)
        ));
    }
}

#[test]
fn a_request_id_not_in_lower_case_hyphenated_form_is_malformed() {
    let id = "5d0e4c2a-7b19-4f3e-8a6d-2c1b0e9f8a7d";
    for text in [
        id.to_uppercase(),
        "5D0e4c2a-7b19-4f3e-8a6d-2c1b0e9f8a7d".to_owned(),
        id.replace('-', ""),
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
        format!(" {id}"),
        String::new(),
        "not-a-uuid".to_owned(),
    ] {
        let request = remac(SecretRequest { id: text.clone(), ..request() });
        assert_eq!(verify(&request).unwrap_err(), ProtocolError::Malformed("id"), "{text:?}");
    }
    // The nil UUID and other versions are well formed: only the spelling is checked.
    let nil = remac(SecretRequest { id: Uuid::nil().to_string(), ..request() });
    assert_eq!(verify(&nil).unwrap().id, Uuid::nil());
}

#[test]
fn a_reply_to_with_a_space_a_control_character_or_too_long_is_malformed() {
    for reply_to in [
        "inbox one".to_owned(),
        "inbox\none".to_owned(),
        "inbox\r".to_owned(),
        "inbox\tone".to_owned(),
        "inbox-é".to_owned(),
        "inbox\u{7f}".to_owned(),
        String::new(),
        "a".repeat(201),
    ] {
        // Authenticated by the bridge secret, and still refused.
        let request = SecretRequest::new(
            &bridge_secret(),
            request_id(),
            &secret_ref("openai-prod"),
            &reply_to,
            &key(1),
            EXPIRES_AT_MS,
        );
        assert_eq!(verify(&request).unwrap_err(), ProtocolError::Malformed("reply_to"), "{reply_to:?}");
    }
    let longest = "a".repeat(200);
    let request = SecretRequest::new(
        &bridge_secret(),
        request_id(),
        &secret_ref("openai-prod"),
        &longest,
        &key(1),
        EXPIRES_AT_MS,
    );
    assert_eq!(verify(&request).unwrap().reply_to, longest);
}

#[test]
fn a_request_with_an_invalid_secret_key_id_or_public_key_is_malformed() {
    for name in ["", "openai prod", "openai\nprod", "openai/prod", &"a".repeat(129)] {
        let request = remac(SecretRequest { secret_key_id: name.to_owned(), ..request() });
        assert_eq!(verify(&request).unwrap_err(), ProtocolError::Malformed("secret_key_id"), "{name:?}");
    }
    let genuine = key(1).public_base64();
    for public_key in [
        String::new(),
        URL_SAFE_NO_PAD.encode([1u8; 31]),
        URL_SAFE_NO_PAD.encode([1u8; 33]),
        base64::engine::general_purpose::URL_SAFE.encode(key(1).public.as_bytes()),
        format!("{genuine}\n"),
        non_canonical(&genuine),
    ] {
        let request = remac(SecretRequest { public_key: public_key.clone(), ..request() });
        assert_eq!(verify(&request).unwrap_err(), ProtocolError::Malformed("public_key"), "{public_key:?}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Refusals: replies
// ---------------------------------------------------------------------------------------------------

/// A reply to [`verified`] sealing any plaintext the way a bridge holding `secret` would.
fn seal_plaintext(secret: &BridgeSecret, plaintext: &[u8]) -> SecretReply {
    let request = verified();
    let bridge_key = key(2);
    let bridge_public = bridge_key.public_base64();
    let shared = bridge_key.secret.diffie_hellman(&request.requester);
    let cipher =
        reply_cipher(secret, shared.as_bytes(), &encode(request.requester.as_bytes()), &bridge_public);
    let aad = reply_aad(&request.id.to_string(), request.secret_ref.as_str());
    let nonce = [3; 24];
    let sealed =
        cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: aad.as_bytes() }).unwrap();
    SecretReply {
        v: PROTOCOL_VERSION,
        kind: REPLY_TYPE.to_owned(),
        id: request.id.to_string(),
        public_key: bridge_public,
        nonce: encode(&nonce),
        sealed: encode(&sealed),
    }
}

#[test]
fn a_reply_sealed_with_another_bridge_secret_does_not_open() {
    let forged = reply_with(&BridgeSecret::new(OTHER_SECRET).unwrap(), &found("sk-attacker"));
    assert_eq!(open(&forged).unwrap_err(), ProtocolError::Unsealable);
}

#[test]
fn a_reply_does_not_open_with_the_key_of_another_request() {
    let reply = reply_with(&bridge_secret(), &found("sk-live-1"));
    let (_, parsed) = SecretReply::parse(&reply.to_bytes()).unwrap();
    let other = parsed.open(&bridge_secret(), &key(4), &secret_ref("openai-prod"));
    assert_eq!(other.unwrap_err(), ProtocolError::Unsealable);
}

#[test]
fn a_reply_does_not_open_for_another_secret_key_id() {
    let reply = reply_with(&bridge_secret(), &found("sk-live-1"));
    let (_, parsed) = SecretReply::parse(&reply.to_bytes()).unwrap();
    let other = parsed.open(&bridge_secret(), &key(1), &secret_ref("openai-prof"));
    assert_eq!(other.unwrap_err(), ProtocolError::Unsealable);
}

#[test]
fn a_reply_whose_id_was_swapped_does_not_open() {
    let genuine = reply_with(&bridge_secret(), &found("sk-live-1"));
    let swapped = SecretReply { id: "5d0e4c2a-7b19-4f3e-8a6d-2c1b0e9f8a7e".to_owned(), ..genuine };
    let (id, parsed) = SecretReply::parse(&swapped.to_bytes()).unwrap();
    assert_ne!(id, request_id());
    let opened = parsed.open(&bridge_secret(), &key(1), &secret_ref("openai-prod"));
    assert_eq!(opened.unwrap_err(), ProtocolError::Unsealable);
}

#[test]
fn a_reply_with_a_low_order_public_key_does_not_open() {
    // u = 0 and u = 1 (points of order 2 and 4): the shared secret is all zeros, whatever the key.
    let mut one = [0u8; 32];
    one[0] = 1;
    for low_order in [[0u8; 32], one] {
        let reply = SecretReply {
            public_key: encode(&low_order),
            ..reply_with(&bridge_secret(), &found("sk-live-1"))
        };
        assert_eq!(open(&reply).unwrap_err(), ProtocolError::Unsealable);
        // Not even a reply sealed under the all-zero shared secret by a holder of the bridge secret.
        let cipher = reply_cipher(&bridge_secret(), &[0; 32], &key(1).public_base64(), &reply.public_key);
        let aad = reply_aad(&reply.id, "openai-prod");
        let plaintext = br#"{"status":"found","secret":"sk-chosen"}"#;
        let sealed =
            cipher.encrypt(&XNonce::from([3; 24]), Payload { msg: plaintext, aad: aad.as_bytes() }).unwrap();
        let reply = SecretReply { sealed: encode(&sealed), ..reply };
        assert_eq!(open(&reply).unwrap_err(), ProtocolError::Unsealable);
    }
}

#[test]
fn a_reply_with_an_altered_nonce_or_ciphertext_does_not_open() {
    let genuine = reply_with(&bridge_secret(), &found("sk-live-1"));
    let nonce = SecretReply { nonce: encode(&[4; 24]), ..genuine.clone() };
    assert_eq!(open(&nonce).unwrap_err(), ProtocolError::Unsealable);
    let mut bytes = URL_SAFE_NO_PAD.decode(&genuine.sealed).unwrap();
    for index in [0, bytes.len() - 1] {
        bytes[index] ^= 0x80;
        let altered = SecretReply { sealed: encode(&bytes), ..genuine.clone() };
        assert_eq!(open(&altered).unwrap_err(), ProtocolError::Unsealable);
        bytes[index] ^= 0x80;
    }
    let truncated = SecretReply { sealed: encode(&bytes[..15]), ..genuine.clone() };
    assert_eq!(open(&truncated).unwrap_err(), ProtocolError::Unsealable);
    let another_key = SecretReply { public_key: key(5).public_base64(), ..genuine };
    assert_eq!(open(&another_key).unwrap_err(), ProtocolError::Unsealable);
}

#[test]
fn a_reply_with_a_malformed_field_is_malformed() {
    let genuine = reply_with(&bridge_secret(), &found("sk-live-1"));
    let cases = [
        SecretReply { public_key: encode(&[1; 31]), ..genuine.clone() },
        SecretReply { nonce: encode(&[3; 12]), ..genuine.clone() },
        SecretReply { nonce: format!("{}=", genuine.nonce), ..genuine.clone() },
        SecretReply { sealed: format!("{}!", genuine.sealed), ..genuine.clone() },
    ];
    for reply in cases {
        assert!(matches!(open(&reply).unwrap_err(), ProtocolError::Malformed(_)), "{reply:?}");
    }
}

#[test]
fn a_reply_of_another_version_type_or_id_form_is_refused_by_parse() {
    let genuine = reply_with(&bridge_secret(), &Answer::NotFound);
    let parse = |reply: SecretReply| SecretReply::parse(&reply.to_bytes()).map(|(id, _)| id);
    assert_eq!(parse(SecretReply { v: 2, ..genuine.clone() }).unwrap_err(), ProtocolError::Version(2));
    assert!(matches!(
        parse(SecretReply { kind: "secret.request".to_owned(), ..genuine.clone() }).unwrap_err(),
        ProtocolError::Malformed(_)
    ));
    assert_eq!(
        parse(SecretReply { id: genuine.id.to_uppercase(), ..genuine.clone() }).unwrap_err(),
        ProtocolError::Malformed("id")
    );
    assert!(matches!(SecretReply::parse(&request().to_bytes()).unwrap_err(), ProtocolError::Malformed(_)));
    assert_eq!(parse(genuine).unwrap(), request_id());
}

#[test]
fn an_authentic_answer_of_unknown_shape_is_the_bridges_failure_not_a_forgery() {
    let secret = bridge_secret();
    for plaintext in [
        &br#"{"status":"found"}"#[..],
        br#"{"status":"found","secret":""}"#,
        br#"{"status":"found","secret":"   "}"#,
        br#"{"status":"found","secret":"sk-1\r\nX-Evil: 1"}"#,
        br#"{"status":"maybe"}"#,
        br#"{"secret":"sk-1"}"#,
        b"[]",
        b"not json",
        b"",
    ] {
        // Sealed under the bridge secret, so authentic: the requester fails fast (502) instead of
        // waiting for a genuine reply that will not come.
        let reply = seal_plaintext(&secret, plaintext);
        assert!(matches!(open(&reply).unwrap(), Answer::Failed(_)), "{}", String::from_utf8_lossy(plaintext));
    }
    // A writer that escapes a character of the status is understood.
    assert!(matches!(
        open(&seal_plaintext(&secret, br#"{"status":"not_found"}"#)).unwrap(),
        Answer::NotFound
    ));
    // The exact forms open, and so do escaped secrets and unknown fields.
    assert!(matches!(
        open(&seal_plaintext(&secret, br#"{"status":"found","secret":"sk-\u00e9-1","extra":1}"#)).unwrap(),
        Answer::Found(value) if value.expose() == "sk-é-1"
    ));
    assert!(matches!(
        open(&seal_plaintext(&secret, br#"{"status":"not_found"}"#)).unwrap(),
        Answer::NotFound
    ));
    assert!(matches!(
        open(&seal_plaintext(&secret, br#"{"status":"failed"}"#)).unwrap(),
        Answer::Failed(message) if message.is_empty()
    ));
}

#[test]
fn sealed_answers_have_the_documented_plaintext() {
    let plaintext = |answer: &Answer| serde_json::to_string(&sealed_answer(answer)).unwrap();
    assert_eq!(plaintext(&found("sk-1")), r#"{"status":"found","secret":"sk-1"}"#);
    assert_eq!(plaintext(&Answer::NotFound), r#"{"status":"not_found"}"#);
    assert_eq!(plaintext(&Answer::Failed("down".to_owned())), r#"{"status":"failed","message":"down"}"#);
}

// ---------------------------------------------------------------------------------------------------
// Refusals: announcements
// ---------------------------------------------------------------------------------------------------

fn announcement_with(secret: &BridgeSecret) -> SecretAnnouncement {
    SecretAnnouncement::new(
        secret,
        request_id(),
        &secret_ref("openai-prod"),
        AnnouncementReason::Withdrawn,
        EXPIRES_AT_MS,
    )
}

fn verify_announcement(announcement: &SecretAnnouncement) -> Result<VerifiedAnnouncement, ProtocolError> {
    SecretAnnouncement::verify(&announcement.to_bytes(), &bridge_secret())
}

#[test]
fn an_announcement_verifies_with_the_same_bridge_secret() {
    let verified = verify_announcement(&announcement_with(&bridge_secret())).unwrap();
    assert_eq!(
        verified,
        VerifiedAnnouncement {
            id: request_id(),
            secret_ref: secret_ref("openai-prod"),
            reason: AnnouncementReason::Withdrawn,
            at_ms: EXPIRES_AT_MS,
        }
    );
}

#[test]
fn a_forged_or_altered_announcement_is_unauthenticated() {
    let forged = announcement_with(&BridgeSecret::new(OTHER_SECRET).unwrap());
    assert_eq!(verify_announcement(&forged).unwrap_err(), ProtocolError::Unauthenticated);
    let genuine = announcement_with(&bridge_secret());
    let alterations: [Alteration<SecretAnnouncement>; 5] = [
        ("id", |announcement| announcement.id = Uuid::nil().to_string()),
        ("secret_key_id", |announcement| announcement.secret_key_id = "openai-prof".to_owned()),
        ("reason", |announcement| announcement.reason = AnnouncementReason::Rotated),
        ("at_ms", |announcement| announcement.at_ms -= 1),
        ("mac", |announcement| announcement.mac = encode(&[0; 32])),
    ];
    for (field, alter) in alterations {
        let mut altered = genuine.clone();
        alter(&mut altered);
        assert_eq!(verify_announcement(&altered).unwrap_err(), ProtocolError::Unauthenticated, "{field}");
    }
    // A request's MAC does not authenticate an announcement (the contexts differ).
    let request = request();
    let borrowed = SecretAnnouncement { mac: request.mac, ..genuine };
    assert_eq!(verify_announcement(&borrowed).unwrap_err(), ProtocolError::Unauthenticated);
}

#[test]
fn an_announcement_of_another_version_type_or_form_is_refused() {
    let genuine = announcement_with(&bridge_secret());
    assert_eq!(
        verify_announcement(&SecretAnnouncement { v: 2, ..genuine.clone() }).unwrap_err(),
        ProtocolError::Version(2)
    );
    assert!(matches!(
        verify_announcement(&SecretAnnouncement { kind: "secret.request".to_owned(), ..genuine.clone() })
            .unwrap_err(),
        ProtocolError::Malformed(_)
    ));
    assert_eq!(
        verify_announcement(&SecretAnnouncement { id: genuine.id.to_uppercase(), ..genuine.clone() })
            .unwrap_err(),
        ProtocolError::Malformed("id")
    );
    let mut json: serde_json::Map<String, Value> = serde_json::from_slice(&genuine.to_bytes()).unwrap();
    json.insert("reason".to_owned(), Value::from("expired"));
    assert!(matches!(
        SecretAnnouncement::verify(&serde_json::to_vec(&json).unwrap(), &bridge_secret()).unwrap_err(),
        ProtocolError::Malformed(_)
    ));
    assert!(matches!(
        SecretAnnouncement::verify(&request().to_bytes(), &bridge_secret()).unwrap_err(),
        ProtocolError::Malformed(_)
    ));
}

// ---------------------------------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------------------------------

#[test]
fn debug_never_shows_the_auth_key_or_a_private_key() {
    let secret = bridge_secret();
    let auth_key = secret.auth_key.as_ref();
    let printed = format!("{secret:?} {secret:#?}");
    for shown in [hex(auth_key), encode(auth_key), format!("{auth_key:?}"), SECRET.to_owned()] {
        assert!(!printed.contains(&shown), "{printed} shows {shown}");
    }
    assert!(printed.contains("redacted"), "{printed}");

    let private = [0x5a; 32];
    let key = EphemeralKey::from_secret_bytes(private);
    let stored = key.secret.to_bytes();
    let printed = format!("{key:?} {key:#?}");
    for bytes in [private, stored] {
        for shown in [hex(&bytes), encode(&bytes), format!("{bytes:?}"), format!("{bytes:#?}")] {
            assert!(!printed.contains(&shown), "{printed} shows {shown}");
        }
    }
    assert!(printed.contains(&key.public_base64()), "the public key may be shown: {printed}");
}

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> [u8; N] {
    assert_eq!(text.len(), 2 * N, "{text:?} is not {N} bytes of hex");
    let mut bytes = [0u8; N];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).expect("hex");
    }
    bytes
}

/// The same 32 bytes in base64url with one of the two unused low bits of the last character set: a
/// spelling that strict decoding refuses.
fn non_canonical(encoded: &str) -> String {
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_eq!(encoded.len(), 43, "32 bytes");
    let last = ALPHABET.find(encoded.chars().last().unwrap()).unwrap() ^ 1;
    format!("{}{}", &encoded[..42], &ALPHABET[last..=last])
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// HKDF-SHA256, 32 bytes.
fn derive(salt: &[u8], ikm: &[u8], info: &str) -> [u8; 32] {
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), ikm).expand(info.as_bytes(), &mut okm).unwrap();
    okm
}

/// HMAC-SHA256.
fn hmac(key: &[u8], message: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().into()
}
