//! The committed OpenAPI document (`openapi/openapi.json`) against the one the server serves.

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sidekey_tests::{header, send, spawn_app};

/// How to bring the committed spec up to date; the failure message repeats it.
const REGENERATE: &str = "cargo run -q -p sidekey -- openapi > openapi/openapi.json";

fn committed_spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json")
}

#[tokio::test]
async fn the_committed_openapi_spec_is_byte_identical_to_the_served_one() {
    let app = spawn_app().await;
    let response = send(app.request(Method::GET, "/openapi.json", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, "content-type").is_some_and(|value| value.starts_with("application/json")));
    let served = response.text().await.unwrap();
    let path = committed_spec_path();
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}; create it from the repository root with `{REGENERATE}`",
            path.display()
        )
    });
    // The file is exactly what the regenerate command writes: the served document and the newline that
    // `println!` ends it with.
    let expected = format!("{served}\n");
    if committed != expected {
        let line = committed.lines().zip(expected.lines()).position(|(a, b)| a != b).map_or_else(
            || "(one is a prefix of the other)".to_owned(),
            |index| format!("first difference at line {}", index + 1),
        );
        panic!(
            "openapi/openapi.json differs from what the server serves at /openapi.json ({line}). \
             Regenerate it from the repository root with `{REGENERATE}`, review the diff, and commit it."
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_served_spec_documents_every_contract_route() {
    let app = spawn_app().await;
    let spec: Value = send(app.request(Method::GET, "/openapi.json", None)).await.json().await.unwrap();
    for (path, method) in [
        ("/v1/sessions", "post"),
        ("/v1/session", "get"),
        ("/v1/session", "delete"),
        ("/v1/session/refresh", "post"),
        ("/v1/auth/verify", "get"),
        ("/v1/admin/sessions", "get"),
        ("/v1/admin/sessions/{session_id}", "delete"),
        ("/v1/admin/revocations", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(spec["paths"][path][method].is_object(), "the spec lacks {} {path}", method.to_uppercase());
    }
    // The error answers are documented as problem+json.
    let issue = &spec["paths"]["/v1/sessions"]["post"]["responses"];
    for status in ["201", "400", "413", "422"] {
        assert!(issue[status].is_object(), "POST /v1/sessions does not document {status}");
    }
    assert!(issue["422"]["content"]["application/problem+json"].is_object(), "{}", issue["422"]);
    app.shutdown().await;
}
