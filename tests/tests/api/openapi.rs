//! The committed OpenAPI document (`openapi/openapi.json`) against the one the server serves.

use std::collections::BTreeSet;
use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sidekey_tests::{assert_problem, header, send, spawn_app};

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

/// The methods a path of the document lists, upper-cased, with HEAD wherever GET is (the server answers
/// it there).
fn documented_methods(item: &Value) -> BTreeSet<String> {
    let mut methods: BTreeSet<String> =
        item.as_object().unwrap().keys().map(|method| method.to_ascii_uppercase()).collect();
    if methods.contains("GET") {
        methods.insert("HEAD".to_owned());
    }
    methods
}

#[tokio::test]
async fn every_documented_path_answers_a_method_it_does_not_list_with_405_and_an_allow_header_listing_it() {
    let app = spawn_app().await;
    let spec: Value = send(app.request(Method::GET, "/openapi.json", None)).await.json().await.unwrap();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        // The proxy routes forward every method but TRACE and CONNECT: tests/proxy/scope.rs checks those.
        if path.contains("{path}") {
            continue;
        }
        let concrete = path.replace("{session_id}", "6f1c1f5e-3f7a-4d8e-9a57-0c1d2e3f4a5b");
        let documented = documented_methods(item);
        for unlisted in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.contains(unlisted) {
                continue;
            }
            let method = Method::from_bytes(unlisted.as_bytes()).unwrap();
            let response = send(app.request(method, &concrete, None)).await;
            let allow = header(&response, "allow")
                .unwrap_or_else(|| panic!("{unlisted} {concrete}: a 405 without Allow"));
            let allowed: BTreeSet<String> = allow.split(',').map(|method| method.trim().to_owned()).collect();
            assert_eq!(allowed, documented, "{unlisted} {concrete}: Allow is {allow:?}");
            assert_problem(response, 405, "method_not_allowed").await;
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} method/path pairs were checked");
    app.shutdown().await;
}

#[tokio::test]
async fn the_served_spec_says_what_the_server_sends_and_refuses() {
    let app = spawn_app().await;
    let spec: Value = send(app.request(Method::GET, "/openapi.json", None)).await.json().await.unwrap();
    assert_eq!(spec["info"]["version"], env!("CARGO_PKG_VERSION"), "the document carries the crate version");
    let schemas = &spec["components"]["schemas"];
    for answer in ["IssuedSession", "Session"] {
        let schema = &schemas[answer];
        assert_eq!(schema["properties"]["subject"]["nullable"], true, "{answer}.subject is sent as null");
        assert!(
            schema["required"].as_array().unwrap().contains(&Value::from("subject")),
            "{answer}.subject is always sent"
        );
    }
    for body in ["IssueSessionRequest", "Scope", "Limits"] {
        assert_eq!(schemas[body]["additionalProperties"], false, "{body}: unknown fields are refused");
    }
    let revocation = schemas["RevocationRequest"]["oneOf"].as_array().unwrap();
    let required: Vec<&Value> = revocation.iter().map(|variant| &variant["required"]).collect();
    assert_eq!(required, [&serde_json::json!(["secret_key_id"]), &serde_json::json!(["subject"])]);
    let list = &spec["paths"]["/v1/admin/sessions"]["get"]["parameters"];
    let secret_key_id = list.as_array().unwrap().iter().find(|p| p["name"] == "secret_key_id").unwrap();
    assert_eq!(secret_key_id["schema"]["minLength"], 1, "an empty secret_key_id= is refused");
    for path in ["/v1/proxy/{upstream}/{path}", "/v1/chatkit/{path}"] {
        let post = &spec["paths"][path]["post"];
        assert_eq!(post["tags"], serde_json::json!(["proxy"]), "{path}");
        assert!(post["responses"]["default"].is_object(), "{path}: the upstream's answer passes unchanged");
        assert!(post["responses"]["403"].is_object(), "{path}: the scope's refusals");
    }
    // The interactive page shows the same (refined) document.
    let page = send(app.request(Method::GET, "/docs", None)).await.text().await.unwrap();
    assert!(page.contains("RevokeBySubject"), "/docs embeds the unrefined document");
    app.shutdown().await;
}

#[tokio::test]
async fn an_empty_secret_key_id_filter_is_refused_as_the_document_says() {
    let app = spawn_app().await;
    let response = send(app.admin(Method::GET, "/v1/admin/sessions?secret_key_id=")).await;
    assert_problem(response, 422, "validation_failed").await;
    app.shutdown().await;
}
