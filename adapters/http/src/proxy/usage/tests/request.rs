use proptest::prelude::*;
use serde_json::{Value, json};

use super::super::{
    BodyError, Endpoint, PreparedRequest, RequestRules, UsageFormat, model_from_query, models_from_query,
    prepare_request,
};

fn rules(endpoint: Endpoint, max_output_tokens: Option<u32>, inject_include_usage: bool) -> RequestRules {
    RequestRules { endpoint, format: UsageFormat::OpenAi, max_output_tokens, inject_include_usage }
}

fn prepare(body: &str, rules: &RequestRules) -> Result<PreparedRequest, BodyError> {
    prepare_request(body.as_bytes(), rules)
}

/// The body that would be forwarded, as text.
fn forwarded(body: &str, rules: &RequestRules) -> String {
    let prepared = prepare(body, rules).expect("a valid body");
    match prepared.body {
        Some(changed) => String::from_utf8(changed.to_vec()).expect("UTF-8"),
        None => body.to_owned(),
    }
}

#[test]
fn endpoint_of_classifies_a_path_by_its_ending() {
    use Endpoint::*;
    use UsageFormat::{Anthropic, None as Unmetered, OpenAi};
    let cases = [
        ("/v1/chat/completions", OpenAi, ChatCompletions),
        ("/openai/v1/chat/completions", OpenAi, ChatCompletions),
        ("/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21", OpenAi, ChatCompletions),
        ("/v1/chat/completions/", OpenAi, ChatCompletions),
        ("/v1/Chat/Completions", OpenAi, ChatCompletions),
        ("/v1/chat/completion%73", OpenAi, ChatCompletions),
        ("/v1/chat/completions", Anthropic, ChatCompletions),
        ("/v1/responses", OpenAi, Responses),
        ("/v1/responses/resp_123", OpenAi, Other),
        ("/v1/completions", OpenAi, LegacyCompletions),
        ("/v1/messages", Anthropic, AnthropicMessages),
        ("/anthropic/v1/messages", Anthropic, AnthropicMessages),
        ("/v1/messages", Unmetered, AnthropicMessages),
        ("/v1/messages", OpenAi, Other),
        ("/v1/messages/count_tokens", Anthropic, Other),
        ("/v1/threads/thread_abc/messages", Unmetered, Other),
        ("/v1/embeddings", OpenAi, Other),
        ("/v1/realtime", OpenAi, Other),
        ("", OpenAi, Other),
        ("/", OpenAi, Other),
        ("/v1/chat/completionsx", OpenAi, Other),
        ("/v1/é/responses", OpenAi, Responses),
    ];
    for (path, format, expected) in cases {
        assert_eq!(Endpoint::of(path, format), expected, "{path} with {format:?}");
    }
}

#[test]
fn usage_format_reads_its_lowercase_names_and_defaults_to_openai() {
    for (name, format) in
        [("openai", UsageFormat::OpenAi), ("anthropic", UsageFormat::Anthropic), ("none", UsageFormat::None)]
    {
        assert_eq!(serde_json::from_value::<UsageFormat>(json!(name)).unwrap(), format);
        assert_eq!(serde_json::to_value(format).unwrap(), json!(name));
    }
    assert!(serde_json::from_value::<UsageFormat>(json!("OpenAI")).is_err());
    assert_eq!(UsageFormat::default(), UsageFormat::OpenAi);
}

#[test]
fn prepare_reads_model_and_stream_and_leaves_an_unchanged_body_alone() {
    let body = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let prepared = prepare(body, &rules(Endpoint::ChatCompletions, None, false)).unwrap();
    assert_eq!(prepared.model.as_deref(), Some("gpt-4o-mini"));
    assert!(prepared.stream);
    assert!(!prepared.include_usage_injected);
    assert_eq!(prepared.body, None);

    let prepared =
        prepare(r#"{"stream":"true","input":"x"}"#, &rules(Endpoint::Responses, None, false)).unwrap();
    assert_eq!(prepared.model, None);
    assert!(!prepared.stream, "only the JSON `true` is a stream");
}

#[test]
fn prepare_decodes_an_escaped_model() {
    let prepared =
        prepare(r#"{"mod\u0065l":"gpt-4o\u002dmini"}"#, &rules(Endpoint::Other, None, false)).unwrap();
    assert_eq!(prepared.model.as_deref(), Some("gpt-4o-mini"));
}

#[test]
fn prepare_refuses_a_body_that_is_not_a_json_object() {
    let any = rules(Endpoint::ChatCompletions, Some(10), true);
    for body in ["", "   ", "{", r#"{"model":"a",}"#, "{\"model\":\"a\"} x", "\u{feff}{}", "nul"] {
        assert!(matches!(prepare(body, &any), Err(BodyError::NotJson(_))), "{body:?}");
    }
    for body in ["[]", "\"text\"", "42", "null", " [ {\"model\": \"a\"} ]"] {
        assert!(matches!(prepare(body, &any), Err(BodyError::NotAnObject)), "{body:?}");
    }
}

#[test]
fn prepare_refuses_a_model_that_is_not_a_string() {
    for model in ["null", "42", "[\"a\"]", "{\"name\":\"a\"}", "true"] {
        let body = format!(r#"{{"model":{model}}}"#);
        assert!(matches!(
            prepare(&body, &rules(Endpoint::Other, None, false)),
            Err(BodyError::InvalidField("model"))
        ));
    }
}

#[test]
fn prepare_refuses_a_member_it_reads_given_twice() {
    let cases = [
        (r#"{"model":"gpt-4o-mini","model":"gpt-5"}"#, "model"),
        (r#"{"model":"gpt-4o-mini","mod\u0065l":"gpt-5"}"#, "model"),
        (r#"{"stream":false,"stream":true}"#, "stream"),
        (r#"{"max_tokens":1,"max_tokens":100000}"#, "max_tokens"),
        (r#"{"stream":true,"stream_options":{},"stream_options":null}"#, "stream_options"),
        (
            r#"{"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#,
            "stream_options.include_usage",
        ),
    ];
    for (body, field) in cases {
        let refused = prepare(body, &rules(Endpoint::ChatCompletions, Some(10), true));
        assert!(matches!(refused, Err(BodyError::DuplicateField(name)) if name == field), "{body}");
    }
    // A duplicate of a member sidekey does not read is the upstream's business.
    assert!(
        prepare(r#"{"temperature":1,"temperature":2}"#, &rules(Endpoint::ChatCompletions, None, false))
            .is_ok()
    );
}

#[test]
fn prepare_clamps_a_ceiling_above_the_limit_and_keeps_every_other_byte() {
    let body = "{ \"model\" : \"gpt-4o\",\n  \"seed\": 123456789012345678901234567890,\n  \"max_tokens\":  4096 ,\n  \
                \"temperature\": 0.1000000000000000055511151231257827, \"z\": \"\\u00e9\\n\", \"a\": 1e999 }";
    let expected = body.replace("4096", "256");
    assert_eq!(forwarded(body, &rules(Endpoint::ChatCompletions, Some(256), false)), expected);
}

#[test]
fn prepare_clamps_every_ceiling_member_present() {
    let body = r#"{"max_tokens":5000,"max_completion_tokens":300,"max_output_tokens":9000}"#;
    assert_eq!(
        forwarded(body, &rules(Endpoint::ChatCompletions, Some(1000), false)),
        r#"{"max_tokens":1000,"max_completion_tokens":300,"max_output_tokens":1000}"#
    );
}

#[test]
fn prepare_keeps_a_ceiling_at_or_below_the_limit() {
    for value in ["0", "1", "999", "1000"] {
        let body = format!(r#"{{"model":"m","max_completion_tokens":{value}}}"#);
        let prepared = prepare(&body, &rules(Endpoint::ChatCompletions, Some(1000), false)).unwrap();
        assert_eq!(prepared.body, None, "{value}");
    }
}

#[test]
fn prepare_replaces_a_null_ceiling_with_the_limit() {
    assert_eq!(
        forwarded(r#"{"max_output_tokens":null}"#, &rules(Endpoint::Responses, Some(64), false)),
        r#"{"max_output_tokens":64}"#
    );
}

#[test]
fn prepare_clamps_a_ceiling_too_long_for_any_integer_type() {
    let body = r#"{"max_tokens":340282366920938463463374607431768211457}"#;
    assert_eq!(forwarded(body, &rules(Endpoint::AnthropicMessages, Some(1), false)), r#"{"max_tokens":1}"#);
    let body = r#"{"max_tokens":4294967296}"#;
    assert_eq!(
        forwarded(body, &rules(Endpoint::AnthropicMessages, Some(u32::MAX), false)),
        r#"{"max_tokens":4294967295}"#
    );
}

#[test]
fn prepare_refuses_a_ceiling_that_is_not_a_non_negative_integer() {
    for value in ["-1", "-0", "1.5", "1.0", "1e3", "\"100\"", "true", "[100]", "{}"] {
        for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            let body = format!(r#"{{"{field}":{value}}}"#);
            let refused = prepare(&body, &rules(Endpoint::Other, Some(10), false));
            assert!(matches!(refused, Err(BodyError::InvalidField(name)) if name == field), "{body}");
        }
    }
    // Without a limit the ceilings are not read at all.
    assert!(prepare(r#"{"max_tokens":"lots"}"#, &rules(Endpoint::Other, None, false)).is_ok());
}

#[test]
fn prepare_adds_the_endpoints_own_ceiling_when_it_is_missing() {
    let cases = [
        (Endpoint::ChatCompletions, r#"{"model":"m","max_completion_tokens":50}"#),
        (Endpoint::Responses, r#"{"model":"m","max_output_tokens":50}"#),
        (Endpoint::AnthropicMessages, r#"{"model":"m","max_tokens":50}"#),
        (Endpoint::LegacyCompletions, r#"{"model":"m","max_tokens":50}"#),
        (Endpoint::Other, r#"{"model":"m"}"#),
    ];
    for (endpoint, expected) in cases {
        assert_eq!(
            forwarded(r#"{"model":"m"}"#, &rules(endpoint, Some(50), false)),
            expected,
            "{endpoint:?}"
        );
    }
    assert_eq!(forwarded("{ }", &rules(Endpoint::AnthropicMessages, Some(7), false)), r#"{"max_tokens":7 }"#);
    assert_eq!(
        forwarded("{\"a\":[1,{\"b\":\"}\"}] \n}", &rules(Endpoint::AnthropicMessages, Some(7), false)),
        "{\"a\":[1,{\"b\":\"}\"}],\"max_tokens\":7 \n}"
    );
}

#[test]
fn prepare_accepts_either_chat_ceiling_as_the_chat_ceiling() {
    let body = r#"{"model":"m","max_tokens":20}"#;
    assert_eq!(prepare(body, &rules(Endpoint::ChatCompletions, Some(50), false)).unwrap().body, None);
}

#[test]
fn prepare_adds_the_responses_ceiling_beside_a_ceiling_responses_does_not_read() {
    assert_eq!(
        forwarded(r#"{"max_tokens":20}"#, &rules(Endpoint::Responses, Some(50), false)),
        r#"{"max_tokens":20,"max_output_tokens":50}"#
    );
}

#[test]
fn prepare_asks_an_openai_chat_stream_for_its_usage() {
    let chat = rules(Endpoint::ChatCompletions, None, true);
    let cases = [
        (r#"{"stream":true}"#, r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
        (
            r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#,
            r#"{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true}}"#,
        ),
        (
            r#"{"stream":true,"stream_options":{"include_usage":false,"x":1}}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true,"x":1}}"#,
        ),
        (
            r#"{"stream":true,"stream_options":null}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
        ),
        (
            r#"{"stream":true,"stream_options":{ }}"#,
            r#"{"stream":true,"stream_options":{"include_usage":true }}"#,
        ),
    ];
    for (body, expected) in cases {
        let prepared = prepare(body, &chat).unwrap();
        assert!(prepared.include_usage_injected, "{body}");
        assert_eq!(prepared.body.as_deref(), Some(expected.as_bytes()), "{body}");
    }
}

#[test]
fn prepare_leaves_include_usage_alone_where_it_does_not_apply() {
    let cases = [
        (
            r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            rules(Endpoint::ChatCompletions, None, true),
        ),
        (r#"{"stream":false}"#, rules(Endpoint::ChatCompletions, None, true)),
        (r#"{"model":"m"}"#, rules(Endpoint::ChatCompletions, None, true)),
        (r#"{"stream":true}"#, rules(Endpoint::ChatCompletions, None, false)),
        (r#"{"stream":true}"#, rules(Endpoint::Responses, None, true)),
        (r#"{"stream":true}"#, rules(Endpoint::LegacyCompletions, None, true)),
        (
            r#"{"stream":true}"#,
            RequestRules { format: UsageFormat::Anthropic, ..rules(Endpoint::ChatCompletions, None, true) },
        ),
        (
            r#"{"stream":true}"#,
            RequestRules { format: UsageFormat::None, ..rules(Endpoint::ChatCompletions, None, true) },
        ),
    ];
    for (body, rules) in cases {
        let prepared = prepare(body, &rules).unwrap();
        assert!(!prepared.include_usage_injected, "{body} {rules:?}");
        assert_eq!(prepared.body, None, "{body} {rules:?}");
    }
}

#[test]
fn prepare_refuses_stream_options_that_is_not_an_object() {
    for value in ["true", "[]", "\"include_usage\"", "1"] {
        let body = format!(r#"{{"stream":true,"stream_options":{value}}}"#);
        let refused = prepare(&body, &rules(Endpoint::ChatCompletions, None, true));
        assert!(matches!(refused, Err(BodyError::InvalidField("stream_options"))), "{body}");
    }
}

#[test]
fn prepare_adds_a_ceiling_and_include_usage_to_the_same_body() {
    let prepared =
        prepare(r#"{"model":"m","stream":true}"#, &rules(Endpoint::ChatCompletions, Some(9), true)).unwrap();
    assert!(prepared.include_usage_injected);
    assert_eq!(
        prepared.body.as_deref(),
        Some(&br#"{"model":"m","stream":true,"max_completion_tokens":9,"stream_options":{"include_usage":true}}"#[..])
    );
}

#[test]
fn prepared_request_debug_shows_the_body_length_only() {
    let prepared =
        prepare(r#"{"stream":true,"secret":"hunter2"}"#, &rules(Endpoint::ChatCompletions, None, true))
            .unwrap();
    let debug = format!("{prepared:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("body_len: Some("), "{debug}");
}

#[test]
fn body_errors_name_the_field_and_never_the_body() {
    let error = prepare(r#"{"model":["sk-live-secret"]}"#, &rules(Endpoint::Other, None, false)).unwrap_err();
    assert_eq!(error.to_string(), "`model` has an invalid value");
    let error = prepare(r#"{"model":"sk-live-secret""#, &rules(Endpoint::Other, None, false)).unwrap_err();
    assert!(!error.to_string().contains("sk-live"), "{error}");
}

#[test]
fn model_from_query_decodes_the_form_encoding() {
    assert_eq!(model_from_query("model=gpt-4o-realtime-preview").as_deref(), Some("gpt-4o-realtime-preview"));
    assert_eq!(model_from_query("?model=gpt%2D4o+mini&x=1").as_deref(), Some("gpt-4o mini"));
    assert_eq!(model_from_query("a=1&mod%65l=gpt-5").as_deref(), Some("gpt-5"));
    assert_eq!(model_from_query("model=100%&x").as_deref(), Some("100%"));
    assert_eq!(model_from_query("model=%zz%4").as_deref(), Some("%zz%4"));
    assert_eq!(model_from_query("model=%ff").as_deref(), Some("\u{fffd}"));
    assert_eq!(model_from_query("model").as_deref(), Some(""));
    assert_eq!(model_from_query("models=a&xmodel=b"), None);
    assert_eq!(model_from_query(""), None);
}

#[test]
fn models_from_query_returns_every_value_in_order() {
    assert_eq!(model_from_query("model=a&model=b").as_deref(), Some("a"));
    assert_eq!(models_from_query("model=a&x=1&model=b"), ["a", "b"]);
    assert!(models_from_query("x=1").is_empty());
}

/// Values for generated bodies: awkward for an in-place editor (nesting, escapes, big numbers).
fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("123456789012345678901234567890".to_owned()),
        Just("-1.5e-300".to_owned()),
        Just(r#""a \"quoted\" \\ }]{[ \u00e9""#.to_owned()),
        Just(r#"{"nested":[1,{"k":"v"},[]],"e":{}}"#.to_owned()),
        any::<u32>().prop_map(|n| n.to_string()),
        "[a-z ]{0,8}".prop_map(|text| format!("\"{text}\"")),
    ]
}

fn member() -> impl Strategy<Value = (String, String)> {
    let ceiling = prop_oneof![
        Just("null".to_owned()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        Just("99999999999999999999".to_owned())
    ];
    prop_oneof![
        ("[a-z_]{1,6}", json_value()),
        "[a-z0-9-]{1,12}".prop_map(|model| ("model".to_owned(), format!("\"{model}\""))),
        any::<bool>().prop_map(|stream| ("stream".to_owned(), stream.to_string())),
        (prop::sample::select(vec!["max_tokens", "max_completion_tokens", "max_output_tokens"]), ceiling)
            .prop_map(|(name, value)| (name.to_owned(), value)),
        prop_oneof![
            Just("null".to_owned()),
            Just("{}".to_owned()),
            Just(r#"{"include_usage":false}"#.to_owned()),
            Just(r#"{"include_obfuscation":false}"#.to_owned()),
        ]
        .prop_map(|options| ("stream_options".to_owned(), options)),
    ]
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop::sample::select(vec![
        Endpoint::ChatCompletions,
        Endpoint::Responses,
        Endpoint::AnthropicMessages,
        Endpoint::LegacyCompletions,
        Endpoint::Other,
    ])
}

proptest! {
    /// The forwarded body means what the client sent with exactly the rules' changes, and preparing it
    /// again changes nothing.
    #[test]
    fn prepare_changes_only_what_the_rules_ask(
        members in prop::collection::vec(member(), 0..8),
        spaces in prop::sample::select(vec!["", " ", "\n  "]),
        endpoint in endpoint(),
        limit in prop::option::of(0u32..5000),
        inject in any::<bool>(),
    ) {
        let mut seen = std::collections::HashSet::new();
        let members: Vec<_> = members.into_iter().filter(|(name, _)| seen.insert(name.clone())).collect();
        let body = format!(
            "{{{spaces}{}{spaces}}}",
            members.iter().map(|(name, value)| format!("\"{name}\"{spaces}:{spaces}{value}")).collect::<Vec<_>>().join(",")
        );
        let rules = rules(endpoint, limit, inject);
        let prepared = prepare(&body, &rules).expect("generated bodies are valid");
        let original: Value = serde_json::from_str(&body).unwrap();
        let forwarded_text = prepared.body.clone().map_or(body.clone(), |b| String::from_utf8(b.to_vec()).unwrap());
        let forwarded: Value = serde_json::from_str(&forwarded_text).expect("the forwarded body is JSON");

        let mut expected = original.clone();
        let object = expected.as_object_mut().unwrap();
        if let Some(limit) = limit {
            let mut honoured = false;
            for field in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
                if let Some(value) = object.get_mut(field) {
                    if value.is_null() || value.as_u64().is_none_or(|n| n > u64::from(limit)) {
                        *value = json!(limit);
                    }
                    honoured |= match endpoint {
                        Endpoint::ChatCompletions => field != "max_output_tokens",
                        Endpoint::Responses => field == "max_output_tokens",
                        Endpoint::AnthropicMessages | Endpoint::LegacyCompletions => field == "max_tokens",
                        Endpoint::Other => true,
                    };
                }
            }
            let own = match endpoint {
                Endpoint::ChatCompletions => Some("max_completion_tokens"),
                Endpoint::Responses => Some("max_output_tokens"),
                Endpoint::AnthropicMessages | Endpoint::LegacyCompletions => Some("max_tokens"),
                Endpoint::Other => None,
            };
            if let (false, Some(own)) = (honoured, own) {
                object.insert(own.to_owned(), json!(limit));
            }
        }
        let streaming = object.get("stream") == Some(&json!(true));
        let should_inject = inject && endpoint == Endpoint::ChatCompletions && streaming
            && object.get("stream_options").and_then(|o| o.get("include_usage")) != Some(&json!(true));
        if should_inject {
            let options = object.entry("stream_options").or_insert(json!({}));
            if options.is_null() {
                *options = json!({});
            }
            options.as_object_mut().unwrap().insert("include_usage".to_owned(), json!(true));
        }
        prop_assert_eq!(&forwarded, &expected);
        prop_assert_eq!(prepared.include_usage_injected, should_inject);
        prop_assert_eq!(prepared.body.is_some(), forwarded_text != body);
        prop_assert_eq!(prepared.model.as_deref(), original.get("model").and_then(Value::as_str));
        prop_assert_eq!(prepared.stream, streaming);

        let again = prepare(&forwarded_text, &rules).unwrap();
        prop_assert_eq!(again.body, None);
    }
}
