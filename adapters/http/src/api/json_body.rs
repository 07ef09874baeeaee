//! A JSON request body with the contract's errors instead of poem-openapi's.
//!
//! poem-openapi's `Json` answers a wrong type with a 400 that does not name the field, reads bodies of any
//! size, and answers a wrong content type with 415. This payload keeps its OpenAPI schema (from the type's
//! `Object` derive) but reads the body with a size limit (413 `payload_too_large`), tells malformed JSON
//! (400 `invalid_request`) from well-formed JSON with an invalid field (422 `validation_failed`, naming
//! the field's path), and is parsed by serde, so `#[serde(deny_unknown_fields)]` refuses typos.

use poem::{Request, RequestBody};
use poem_openapi::impl_apirequest_for_payload;
use poem_openapi::payload::{ParsePayload, Payload};
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde::de::DeserializeOwned;

use crate::HttpSettings;
use crate::problem::{ApiError, ErrorCode};

/// A JSON request body of type `T`, limited to the configured size.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        // application/json, with or without parameters (charset), and any application/*+json.
        let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        essence == "application/json"
            || essence.strip_prefix("application/").is_some_and(|subtype| subtype.ends_with("+json"))
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + DeserializeOwned> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let limit = request.data::<HttpSettings>().map_or(HttpSettings::DEFAULT_BODY_LIMIT, |s| s.body_limit);
        let too_large =
            || ApiError::new(ErrorCode::PayloadTooLarge, format!("the body must be at most {limit} bytes"));
        // Refuse a declared oversize body before reading a byte of it.
        let declared = request
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.parse::<u64>().ok());
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(too_large().into());
        }
        let bytes = body
            .take()
            .map_err(|_| ApiError::new(ErrorCode::InvalidRequest, "the body was already read"))?
            .into_bytes_limit(limit)
            .await
            .map_err(|error| match error {
                poem::error::ReadBodyError::PayloadTooLarge => too_large(),
                _ => ApiError::new(ErrorCode::InvalidRequest, "the body could not be read"),
            })?;
        parse_json(&bytes).map(JsonBody).map_err(Into::into)
    }
}

impl_apirequest_for_payload!(JsonBody<T>, T: Type + DeserializeOwned);

/// Parses `bytes` as a `T`, telling malformed JSON (400) from invalid fields (422). Public for the fuzz
/// targets.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde reads a struct from an array positionally: `["openai-prod"]` would pass as a session request,
    // and an array longer than the struct would be called malformed (the fuzzer found that one). The
    // contract's bodies are objects: any other well-formed JSON is refused whole.
    if bytes.trim_ascii_start().first() != Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::new(ErrorCode::ValidationFailed, "the body must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    let value = match parsed {
        Ok(value) => value,
        Err(error) => {
            let path = error.path().to_string();
            let inner = error.into_inner();
            // serde_json calls a number too large for any type (`1e400`) a syntax error, but the JSON is
            // well-formed: it is the field's value that is invalid.
            let out_of_range = inner.to_string().starts_with("number out of range");
            return Err(match inner.classify() {
                serde_json::error::Category::Data => {
                    // serde's own message names an unknown or missing field; the path names a mistyped one.
                    let message = strip_position(&inner.to_string());
                    let detail =
                        if path == "." || path.is_empty() { message } else { format!("{path}: {message}") };
                    ApiError::new(ErrorCode::ValidationFailed, detail)
                }
                _ if out_of_range => {
                    ApiError::new(ErrorCode::ValidationFailed, format!("{path}: number out of range"))
                }
                _ => ApiError::new(ErrorCode::InvalidRequest, format!("malformed JSON: {}", inner)),
            });
        }
    };
    deserializer
        .end()
        .map_err(|error| ApiError::new(ErrorCode::InvalidRequest, format!("malformed JSON: {error}")))?;
    Ok(value)
}

/// serde_json appends " at line L column C" to data errors; for a field error the path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(index) => message[..index].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        ttl_seconds: Option<u64>,
    }

    #[test]
    fn malformed_json_is_an_invalid_request() {
        for body in [&b"{"[..], b"not json", b"", b"{\"name\":\"a\"} trailing"] {
            let error = parse_json::<Sample>(body).unwrap_err();
            assert_eq!(error.code(), ErrorCode::InvalidRequest, "{body:?}");
        }
    }

    #[test]
    fn a_mistyped_unknown_or_missing_field_is_a_validation_failure_naming_it() {
        let cases = [
            (&br#"{"name":"a","ttl_seconds":"soon"}"#[..], "ttl_seconds"),
            (br#"{"name":"a","ttl_seconds":-5}"#, "ttl_seconds"),
            (br#"{"name":"a","ttl_seconds":1e300}"#, "ttl_seconds"),
            (br#"{"name":"a","ttl_seconds":1e400}"#, "ttl_seconds"),
            (br#"{"name":"a","ttl_seconds":99999999999999999999999}"#, "ttl_seconds"),
            (br#"{"name":"a","colour":"red"}"#, "colour"),
            (br#"{"ttl_seconds":5}"#, "name"),
            (br#"[1,2]"#, "JSON object"),
            (br#"42"#, "JSON object"),
            // Found by the json_bodies fuzz target: longer than the struct, it was called malformed.
            (br#"["","nrd","nr"]"#, "JSON object"),
            // Positional and complete: it used to pass as a Sample.
            (br#"["a", 5]"#, "JSON object"),
            (br#" "a""#, "JSON object"),
        ];
        for (body, field) in cases {
            let error = parse_json::<Sample>(body).unwrap_err();
            assert_eq!(error.code(), ErrorCode::ValidationFailed, "{}", String::from_utf8_lossy(body));
            assert!(format!("{error:?}").contains(field), "{error:?} should name {field}");
        }
    }

    #[test]
    fn content_types_are_checked_by_essence() {
        assert!(JsonBody::<String>::check_content_type("application/json"));
        assert!(JsonBody::<String>::check_content_type("Application/JSON; charset=utf-8"));
        assert!(JsonBody::<String>::check_content_type("application/merge-patch+json"));
        assert!(!JsonBody::<String>::check_content_type("text/plain"));
        assert!(!JsonBody::<String>::check_content_type("application/x-www-form-urlencoded"));
    }
}
