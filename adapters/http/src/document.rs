//! The OpenAPI document: poem-openapi's, refined in this one place where its derives cannot say what the
//! server does.
//!
//! poem-openapi 5 writes the schemas, parameters and answers of the operations from their types. It
//! cannot express: a closed object (`additionalProperties: false`: the bodies are read by serde with
//! `deny_unknown_fields`, and the answers carry exactly their fields), an `Option` field that is always
//! sent (as null or not), "exactly one of two fields" (`oneOf`, for the revocation body;
//! `GET /v1/admin/usage` says it in words, since OpenAPI 3.0 has no `oneOf` across query parameters, and
//! an exploded object parameter made the fuzzer send `null` as the text `null`, a valid subject), a map's
//! value bounds, the answers a route really gives (its failure enum is shared with routes that fail
//! otherwise), headers that the middleware adds (`Cache-Control`), or a catch-all route of any method
//! (the proxy). `refine` adds those to the generated document, and both the served
//! `/openapi.json` (and `/docs`) and the committed `openapi/openapi.json` come from [`openapi_json`], so
//! they cannot differ. [`AllowedMethods`] reads the document's paths back, so a 405's `Allow` header
//! lists exactly the documented methods.

use serde_json::{Map, Value, json};

use crate::problem::PROBLEM_JSON;

/// The answers each operation can give, by `operationId`. Every other status the shared failure enums
/// declare is removed from that operation. Statuses no operation declares: 405 (answered for methods the
/// document does not list, with `Allow`), 431 (request headers over `http.max_header_bytes`, before
/// routing) and 500 (a fault of sidekey's own, never bad input: kept where it can happen, issuance's
/// randomness).
const STATUSES: &[(&str, &[&str])] = &[
    // 401/404: caller authentication (`auth.mode = jwt`, a user directory); 413 body limit; 429 the
    // issuance rate, failed requests, or `max_live_per_subject`; 502/504 the secret source.
    ("issue_session", &["201", "400", "401", "404", "413", "422", "429", "500", "502", "503", "504"]),
    ("get_session", &["200", "401", "429", "503"]),
    ("refresh_session", &["200", "401", "429", "503"]),
    ("revoke_session", &["204", "401", "429", "503"]),
    ("issue_ticket", &["201", "401", "429", "503"]),
    // 400/403/429: the forwarded request's path, route and limits (`X-Forwarded-Method`/`-Uri`).
    ("verify_token", VERIFY_STATUSES),
    ("verify_token_post", VERIFY_STATUSES),
    ("verify_token_put", VERIFY_STATUSES),
    ("verify_token_patch", VERIFY_STATUSES),
    ("verify_token_delete", VERIFY_STATUSES),
    // 404: the admin API is disabled; 422: a query parameter out of its bounds.
    ("admin_list_sessions", &["200", "401", "403", "404", "422", "429", "503"]),
    ("admin_usage", &["200", "401", "403", "404", "422", "429", "503"]),
    ("admin_revoke_session", &["204", "401", "403", "404", "429", "503"]),
    ("admin_revoke_matching", &["200", "400", "401", "403", "404", "413", "422", "429", "503"]),
];

/// Forward-auth's, on each of its methods.
const VERIFY_STATUSES: &[&str] = &["200", "400", "401", "403", "429", "503"];

/// The order in which `Allow` lists methods.
const METHOD_ORDER: &[&str] = &["get", "head", "post", "put", "patch", "delete"];

/// The methods the proxy routes forward (TRACE and CONNECT never are; HEAD and OPTIONS are forwarded
/// too, and left implicit as usual).
const PROXY_METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// The document as served at `/openapi.json`: `raw` (poem-openapi's) refined.
pub fn openapi_json(raw: &str) -> String {
    let mut document: Value = serde_json::from_str(raw).expect("poem-openapi writes valid JSON");
    refine(&mut document);
    serde_json::to_string_pretty(&document).expect("a JSON value serializes")
}

/// Adds to poem-openapi's document what its derives cannot express (see the module's doc).
fn refine(document: &mut Value) {
    name_forward_auth_operations(document);
    close_objects(document);
    require_always_sent(document);
    bound_metadata(document);
    revocation_one_of(document);
    keep_real_statuses(document);
    document_cache_control(document);
    add_proxy_routes(document);
}

fn schemas(document: &mut Value) -> &mut Map<String, Value> {
    document["components"]["schemas"].as_object_mut().expect("the document has component schemas")
}

/// Every component object is closed: request bodies are read with `deny_unknown_fields` (an unknown
/// field is 422), and answers carry exactly their declared fields.
fn close_objects(document: &mut Value) {
    for schema in schemas(document).values_mut() {
        if schema.get("properties").is_some() {
            schema["additionalProperties"] = Value::Bool(false);
        }
    }
}

/// Answer fields that are always sent, null or not: poem-openapi calls every `Option` field optional.
/// (`Scope` and `Limits` are request bodies too, where their fields are optional.)
const ALWAYS_SENT: &[(&str, &str)] = &[
    ("IssuedSession", "subject"),
    ("Session", "subject"),
    ("Remaining", "requests"),
    ("Remaining", "tokens"),
];

fn require_always_sent(document: &mut Value) {
    let schemas = schemas(document);
    for (schema, field) in ALWAYS_SENT {
        let schema = &mut schemas[*schema];
        assert!(schema["properties"][*field].is_object(), "{field} is a field");
        if let Some(required) = schema["required"].as_array_mut() {
            required.push(Value::from(*field));
        } else {
            schema["required"] = json!([field]);
        }
    }
}

/// `metadata`'s values are at most 256 characters (keys too, which OpenAPI 3.0 cannot bound).
fn bound_metadata(document: &mut Value) {
    let metadata = &mut schemas(document)["IssueSessionRequest"]["properties"]["metadata"];
    metadata["additionalProperties"] = json!({"type": "string", "maxLength": 256});
}

/// `POST /v1/admin/revocations` takes exactly one of `secret_key_id` and `subject`.
fn revocation_one_of(document: &mut Value) {
    let request = &mut schemas(document)["RevocationRequest"];
    let properties = request["properties"].clone();
    let only = |field: &str, title: &str| {
        json!({
            "type": "object",
            "title": title,
            "required": [field],
            "properties": {field: properties[field].clone()},
            "additionalProperties": false,
        })
    };
    let variants = vec![only("secret_key_id", "RevokeBySecretKeyId"), only("subject", "RevokeBySubject")];
    let description = request["description"].clone();
    *request = json!({
        "title": "RevocationRequest",
        "description": description,
        "oneOf": variants,
    });
}

/// Each operation documents the statuses it can answer ([`STATUSES`]), no more.
fn keep_real_statuses(document: &mut Value) {
    for_each_operation(document, |operation| {
        let Some(id) = operation["operationId"].as_str() else { return };
        let Some((_, kept)) = STATUSES.iter().find(|(name, _)| *name == id) else { return };
        if let Some(responses) = operation["responses"].as_object_mut() {
            responses.retain(|status, _| kept.contains(&status.as_str()));
        }
    });
}

/// Every answer under `/v1/` carries `Cache-Control: no-store` (the middleware adds it; a token or a
/// session must never be cached).
fn document_cache_control(document: &mut Value) {
    let Some(paths) = document["paths"].as_object_mut() else { return };
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            let Some(responses) = operation["responses"].as_object_mut() else { continue };
            for response in responses.values_mut() {
                response["headers"]["Cache-Control"] = json!({
                    "description": "`no-store`: never cached.",
                    "required": true,
                    "schema": {"type": "string", "enum": ["no-store"]},
                });
            }
        }
    }
}

/// Forward-auth is one handler served on several methods, which poem-openapi lists under each method
/// without an `operationId` (it allows one per handler). Generated clients name their functions after
/// these: the GET is `verify_token`, the others `verify_token_<method>`.
fn name_forward_auth_operations(document: &mut Value) {
    let Some(item) = document["paths"]["/v1/auth/verify"].as_object_mut() else { return };
    for (method, operation) in item.iter_mut() {
        let id = if method == "get" { "verify_token".to_owned() } else { format!("verify_token_{method}") };
        operation["operationId"] = Value::from(id);
    }
}

fn for_each_operation(document: &mut Value, mut visit: impl FnMut(&mut Value)) {
    let Some(paths) = document["paths"].as_object_mut() else { return };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            visit(operation);
        }
    }
}

/// A problem+json answer with a description, and its headers.
fn problem(description: &str, headers: Value) -> Value {
    let mut answer = json!({
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    });
    if headers.as_object().is_some_and(|headers| !headers.is_empty()) {
        answer["headers"] = headers;
    }
    answer
}

/// `/v1/proxy/{upstream}/{path}` and `/v1/chatkit/{path}`: any method but TRACE and CONNECT, the upstream's
/// answer passed unchanged, and sidekey's own refusals.
fn add_proxy_routes(document: &mut Value) {
    if let Some(tags) = document["tags"].as_array_mut() {
        tags.push(json!({
            "name": "proxy",
            "description": "The protected proxy: the session token in, the real key out, bodies streamed \
                            both ways.",
        }));
    }
    let upstream = json!({
        "name": "upstream",
        "in": "path",
        "required": true,
        "description": "The configured upstream's name (`[[upstreams]] name`).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    });
    let path = json!({
        "name": "path",
        "in": "path",
        "required": true,
        "description": "The path below the upstream's `base_url`, forwarded as sent: segments \
                        separated by `/` (OpenAPI 3.0 can only say \"a string\"). An encoded slash, \
                        backslash or percent sign, a dot segment in any encoding, or an empty segment \
                        is refused (400 `invalid_path`).",
        "schema": {"type": "string"},
    });
    let routes = [
        ("/v1/proxy/{upstream}/{path}", "proxy", vec![upstream, path.clone()]),
        ("/v1/chatkit/{path}", "chatkit", vec![path]),
    ];
    let paths = document["paths"].as_object_mut().expect("the document has paths");
    for (route, name, parameters) in routes {
        let mut item = Map::new();
        for method in PROXY_METHODS {
            item.insert((*method).to_owned(), proxy_operation(name, method, &parameters));
        }
        paths.insert(route.to_owned(), Value::Object(item));
    }
}

fn proxy_operation(name: &str, method: &str, parameters: &[Value]) -> Value {
    let challenge = json!({"WWW-Authenticate": {
        "description": "The RFC 6750 challenge.",
        "required": true,
        "schema": {"type": "string"},
    }});
    let retry_after = |required: bool| {
        json!({"Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": required,
            "schema": {"type": "integer", "minimum": 1},
        }})
    };
    let (summary, target) = match name {
        "chatkit" => ("Call the ChatKit upstream", "the upstream named `chatkit`"),
        _ => ("Call an upstream", "the upstream named `{upstream}`"),
    };
    let mut operation = json!({
        "tags": ["proxy"],
        "summary": summary,
        "description": format!(
            "Forwards the method, path, query and body to {target}, with the real key injected \
             (by default `Authorization: Bearer <real key>`), the client's credential removed, hop-by-hop \
             headers dropped and `X-Sidekey-Subject` / `X-Sidekey-Session-Id` added. Any method but TRACE \
             and CONNECT is forwarded. The upstream's answer is passed unchanged, streamed (server-sent \
             events arrive as they are sent). A limited session's answers carry \
             `X-Sidekey-Requests-Remaining` and `X-Sidekey-Tokens-Remaining`. Refusals are checked in \
             this order, none contacting the upstream: token (401), upstream (404), key allowed there \
             (403 `forbidden`), path (400 `invalid_path`), route (403 `route_not_allowed`), origin \
             (403 `origin_not_allowed`), body size (413), model (403 `model_not_allowed`), rate \
             (429 `rate_limited`), budgets (429 `quota_exceeded`). Every refusal sidekey itself answers \
             also carries the `error` member the OpenAI and Anthropic SDKs read."
        ),
        "operationId": format!("{name}_{method}"),
        "parameters": parameters,
        "security": [{"sessionToken": []}],
        "responses": {
            "default": {
                "description": "The upstream's answer, passed unchanged (any status, any content).",
                "headers": {
                    "X-Sidekey-Requests-Remaining": {
                        "description": "Requests the session may still make (limited sessions).",
                        "required": false,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                    "X-Sidekey-Tokens-Remaining": {
                        "description": "Tokens the session may still use (limited sessions).",
                        "required": false,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                },
                "content": {"*/*": {"schema": {}}},
            },
            "400": problem("`invalid_path` (an ambiguous path), or `invalid_request` (an unreadable body \
                            or one a model rule cannot read).", json!({})),
            "401": problem("`missing_token` or `invalid_token`, with an RFC 6750 challenge.", challenge),
            "403": problem("`forbidden` (the key may not go to this upstream, or the scope does not name \
                            it), `route_not_allowed`, `origin_not_allowed` or `model_not_allowed`.", json!({})),
            "404": problem("`not_found`: no upstream of that name.", json!({})),
            "413": problem("`payload_too_large`: the body is over the upstream's limit.", json!({})),
            "422": problem("`validation_failed`: a body a model rule must read is not valid JSON of \
                            the expected shape.", json!({})),
            "429": problem("`rate_limited` (the per-minute rate, or failed requests from this address) or \
                            `quota_exceeded` (a budget is used up); `Retry-After` when a window will reset.",
                           retry_after(false)),
            "502": problem("`upstream_error`: the upstream refused, reset or closed the connection.", json!({})),
            "503": problem("`store_unavailable`: a metered request cannot be counted (fail closed).",
                           retry_after(true)),
            "504": problem("`upstream_timeout`: the upstream did not answer in time.", json!({})),
        },
    });
    if method != "get" && method != "delete" {
        operation["requestBody"] = json!({
            "description": "Forwarded as sent (streamed unless a model rule or a token budget needs to read it).",
            "required": false,
            "content": {"*/*": {"schema": {}}},
        });
    }
    operation
}

/// The methods each documented path answers, read back from the document, for the `Allow` header of a
/// 405.
#[derive(Debug, Clone)]
pub struct AllowedMethods {
    /// Each path template's segments (`{…}` for a parameter) and its `Allow` value.
    routes: Vec<(Vec<String>, String)>,
}

/// The methods of the served document's paths, computed once.
pub fn allowed_methods() -> &'static AllowedMethods {
    static ALLOWED: std::sync::LazyLock<AllowedMethods> =
        std::sync::LazyLock::new(|| AllowedMethods::of(&crate::openapi_json()));
    &ALLOWED
}

impl AllowedMethods {
    /// The methods of every path of `document` (the refined document's JSON). HEAD is listed wherever
    /// GET is, since the server answers it there; a path template ending in `{path}` matches any number
    /// of segments (the proxy's catch-all).
    pub fn of(document: &str) -> Self {
        let document: Value = serde_json::from_str(document).unwrap_or_default();
        let mut routes = Vec::new();
        if let Some(paths) = document["paths"].as_object() {
            for (path, item) in paths {
                let Some(item) = item.as_object() else { continue };
                // HEAD wherever GET is: the server answers it there.
                let methods: Vec<String> = METHOD_ORDER
                    .iter()
                    .filter(|method| {
                        item.contains_key(**method) || (**method == "head" && item.contains_key("get"))
                    })
                    .map(|method| method.to_uppercase())
                    .collect();
                let segments = path.split('/').map(str::to_owned).collect();
                routes.push((segments, methods.join(", ")));
            }
        }
        Self { routes }
    }

    /// The `Allow` value for a request to `path`, when a documented path matches it.
    pub fn allow(&self, path: &str) -> Option<&str> {
        let segments: Vec<&str> = path.split('/').collect();
        self.routes.iter().find(|(template, _)| matches(template, &segments)).map(|(_, allow)| allow.as_str())
    }
}

fn matches(template: &[String], segments: &[&str]) -> bool {
    let catch_all = template.last().is_some_and(|last| last == "{path}");
    if catch_all {
        let fixed = &template[..template.len() - 1];
        // `/v1/chatkit` itself is the chatkit upstream's root too.
        return segments.len() >= fixed.len() && fixed_match(fixed, &segments[..fixed.len()]);
    }
    template.len() == segments.len() && fixed_match(template, segments)
}

fn fixed_match(template: &[String], segments: &[&str]) -> bool {
    template.iter().zip(segments).all(|(expected, segment)| {
        if expected.starts_with('{') { !segment.is_empty() } else { expected == segment }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> String {
        crate::openapi_json()
    }

    #[test]
    fn every_component_object_is_closed() {
        let document: Value = serde_json::from_str(&document()).unwrap();
        for (name, schema) in document["components"]["schemas"].as_object().unwrap() {
            if schema.get("properties").is_some() {
                assert_eq!(schema["additionalProperties"], false, "{name} is open");
            }
        }
    }

    #[test]
    fn allow_lists_the_documented_methods_of_the_matching_path() {
        let allowed = AllowedMethods::of(&document());
        assert_eq!(allowed.allow("/v1/session"), Some("GET, HEAD, DELETE"));
        assert_eq!(allowed.allow("/v1/sessions"), Some("POST"));
        assert_eq!(allowed.allow("/v1/admin/sessions/abc"), Some("DELETE"));
        assert_eq!(
            allowed.allow("/v1/proxy/openai/v1/chat/completions"),
            Some("GET, HEAD, POST, PUT, PATCH, DELETE")
        );
        assert_eq!(allowed.allow("/v1/chatkit"), Some("GET, HEAD, POST, PUT, PATCH, DELETE"));
        assert_eq!(allowed.allow("/v1/nothing"), None);
        assert_eq!(allowed.allow("/v1/admin/sessions/"), None);
    }

    #[test]
    fn each_operation_keeps_only_the_statuses_it_can_answer() {
        let document: Value = serde_json::from_str(&document()).unwrap();
        let verify = document["paths"]["/v1/auth/verify"]["get"]["responses"].as_object().unwrap();
        let statuses: Vec<&str> = verify.keys().map(String::as_str).collect();
        assert_eq!(statuses, ["200", "400", "401", "403", "429", "503"]);
    }
}
