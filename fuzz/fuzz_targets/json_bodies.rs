//! The JSON request bodies of the HTTP API, through `parse_json` (what `JsonBody` uses), and then the
//! domain checks the handlers run on a parsed body.
//!
//! Properties: no panic; every refusal is a client error (400 `invalid_request` for malformed JSON, 422
//! `validation_failed` for a well-formed body with a bad field), and well-formed JSON is never called
//! malformed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use sidekey_http::api::admin::RevocationRequest;
use sidekey_http::api::json_body::parse_json;
use sidekey_http::problem::ErrorCode;
use sidekey_http::api::session::IssueSessionRequest;
use sidekey_domain::{Metadata, SecretRef, Subject};

fuzz_target!(|data: &[u8]| {
    // Whether serde_json itself reads the bytes as one JSON document.
    let well_formed = serde_json::from_slice::<serde_json::Value>(data).is_ok();

    if let Some(request) = check::<IssueSessionRequest>(data, well_formed) {
        let _ = SecretRef::parse(&request.secret_key_id);
        let _ = Metadata::new(request.metadata.unwrap_or_default());
        let _ = request.ttl_seconds;
    }
    if let Some(request) = check::<RevocationRequest>(data, well_formed) {
        if let Some(name) = &request.secret_key_id {
            let _ = SecretRef::parse(name);
        }
        if let Some(subject) = &request.subject {
            let _ = Subject::parse(subject);
        }
    }
});

/// Parses `data` as a `T` and checks the error, if any.
fn check<T: DeserializeOwned>(data: &[u8], well_formed: bool) -> Option<T> {
    match parse_json::<T>(data) {
        Ok(value) => {
            assert!(well_formed, "parse_json accepted what serde_json does not read as JSON");
            Some(value)
        }
        Err(error) => {
            let code = error.code();
            let status = code.status().as_u16();
            assert!((400..500).contains(&status), "a body refused with {status}: {error:?}");
            assert!(
                matches!(code, ErrorCode::InvalidRequest | ErrorCode::ValidationFailed),
                "a body refused with {code:?}"
            );
            if well_formed {
                assert_eq!(code, ErrorCode::ValidationFailed, "well-formed JSON called malformed: {error:?}");
            }
            let problem = error.to_problem();
            assert_eq!(problem.status, status);
            assert_eq!(problem.code, code.as_str());
            None
        }
    }
}
