//! What sidekey reads from, and changes in, a proxied request body before forwarding it: the `model`
//! (for the session's model scope), `stream`, the output-token ceiling (clamped or added) and, for OpenAI
//! chat streams, `stream_options.include_usage` (so that the answer reports its usage).
//!
//! The body is edited in place (see `json_object`): only the bytes of a changed value, or one inserted
//! member, differ from what the client sent; member order, spacing, numbers and escapes stay as they were.
//! A body that needs no change is not copied at all ([`PreparedRequest::body`] is `None`).

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use super::json_object::{MemberSpan, ObjectSpans, object_spans, skip_whitespace};

/// How an upstream reports token usage (its `usage` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UsageFormat {
    /// OpenAI's APIs, and the many upstreams that copy them.
    #[default]
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Usage is not read: requests are settled with their reservation.
    None,
}

/// The API a proxied path calls, as far as usage and output ceilings are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// OpenAI `POST /v1/chat/completions` (also Anthropic's OpenAI-compatible endpoint).
    ChatCompletions,
    /// OpenAI `POST /v1/responses`.
    Responses,
    /// Anthropic `POST /v1/messages`.
    AnthropicMessages,
    /// OpenAI's legacy `POST /v1/completions`.
    LegacyCompletions,
    /// Anything else: nothing is added to the body and no usage is read from the answer.
    Other,
}

impl Endpoint {
    /// Classifies `path`, the part below the upstream's name (`/v1/chat/completions`, or with a base
    /// path, `/openai/v1/chat/completions`). The ending decides, compared without regard to ASCII case
    /// and after percent-decoding, so that a spelling the upstream would still route (`/v1/Chat/...`,
    /// `%73`) cannot slip past the output ceiling. A query string, if any, is ignored.
    ///
    /// The method is not considered: `GET /v1/chat/completions` (listing stored completions) also
    /// classifies as [`Endpoint::ChatCompletions`]; callers classify only the methods that generate.
    #[must_use]
    pub fn of(path: &str, format: UsageFormat) -> Endpoint {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let decoded = percent_decode(path.as_bytes(), false);
        let path = decoded.trim_end_matches('/');
        let ends_with = |suffix: &str| {
            path.len() >= suffix.len()
                && path.is_char_boundary(path.len() - suffix.len())
                && path[path.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        };
        if ends_with("/chat/completions") {
            Endpoint::ChatCompletions
        } else if ends_with("/completions") {
            Endpoint::LegacyCompletions
        } else if ends_with("/responses") {
            Endpoint::Responses
        } else if format != UsageFormat::OpenAi && ends_with("/v1/messages") {
            // `/v1/messages` and not just `/messages`: OpenAI's `/v1/threads/{id}/messages` must not get
            // a `max_tokens` it would refuse.
            Endpoint::AnthropicMessages
        } else {
            Endpoint::Other
        }
    }

    /// The ceiling member this API honours when none is given.
    fn own_ceiling_field(self) -> Option<&'static str> {
        match self {
            Endpoint::ChatCompletions => Some("max_completion_tokens"),
            Endpoint::Responses => Some("max_output_tokens"),
            Endpoint::AnthropicMessages | Endpoint::LegacyCompletions => Some("max_tokens"),
            Endpoint::Other => None,
        }
    }

    /// Whether this API reads `field` as its output ceiling (chat completions reads both of its names).
    fn honours(self, field: &str) -> bool {
        match self {
            Endpoint::ChatCompletions => matches!(field, "max_completion_tokens" | "max_tokens"),
            _ => self.own_ceiling_field() == Some(field),
        }
    }
}

/// The output-ceiling members of the three API families, clamped wherever they appear.
const CEILING_FIELDS: [&str; 3] = ["max_tokens", "max_completion_tokens", "max_output_tokens"];

/// What to do to a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRules {
    /// The API the request calls ([`Endpoint::of`] its path).
    pub endpoint: Endpoint,
    /// The upstream's `usage` setting.
    pub format: UsageFormat,
    /// The session's `max_output_tokens_per_request`, if any.
    pub max_output_tokens: Option<u32>,
    /// Ask an OpenAI chat stream for its usage when the client did not (the meter then strips the
    /// usage-only chunk the client did not ask for).
    pub inject_include_usage: bool,
}

/// What was read from a request body, and the body to forward when it had to change.
#[derive(Clone, PartialEq, Eq)]
pub struct PreparedRequest {
    /// The top-level `model`, when present.
    pub model: Option<String>,
    /// Whether the top-level `stream` is `true`.
    pub stream: bool,
    /// Whether `stream_options.include_usage: true` was added: the answer's usage-only chunk must then
    /// be stripped (`UsageMeter::new(.., strip_usage_chunk: true)`).
    pub include_usage_injected: bool,
    /// The body to forward instead of the original, `Some` only when something changed.
    pub body: Option<Bytes>,
}

impl fmt::Debug for PreparedRequest {
    // The body holds the user's prompt: its length is enough for a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("model", &self.model)
            .field("stream", &self.stream)
            .field("include_usage_injected", &self.include_usage_injected)
            .field("body_len", &self.body.as_ref().map(Bytes::len))
            .finish()
    }
}

/// Why a request body cannot be forwarded. `NotJson` and `NotAnObject` are the contract's 400
/// `invalid_request`; `InvalidField` and `DuplicateField` are 422 `validation_failed` naming the field.
/// No variant carries any of the body's text.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is not well-formed JSON (serde_json's message gives only a line and column).
    #[error("the request body is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("the request body is not a JSON object")]
    NotAnObject,
    /// A member sidekey reads has the wrong type (`model` not a string, a token ceiling not a
    /// non-negative integer, `stream_options` not an object).
    #[error("`{0}` has an invalid value")]
    InvalidField(&'static str),
    /// A member sidekey reads appears twice. Upstreams disagree on which copy wins (most take the last),
    /// so sidekey could check one value while the upstream uses another: refused.
    #[error("`{0}` appears more than once")]
    DuplicateField(&'static str),
}

/// Reads `body` and applies `rules` to it.
///
/// # Errors
/// [`BodyError`]: not JSON, not an object, a member sidekey reads with a wrong type or given twice.
pub fn prepare_request(body: &[u8], rules: &RequestRules) -> Result<PreparedRequest, BodyError> {
    // Validates the whole text; `IgnoredAny` scans numbers without converting them, so `1e999` or a
    // 30-digit integer elsewhere in the body is accepted as the valid JSON it is.
    serde_json::from_slice::<IgnoredAny>(body).map_err(BodyError::NotJson)?;
    let open = skip_whitespace(body, 0);
    if body.get(open) != Some(&b'{') {
        return Err(BodyError::NotAnObject);
    }
    let object = object_spans(body, open).ok_or_else(unscannable)?;

    let model = match single(&object, "model")? {
        Some(member) => Some(
            serde_json::from_slice::<String>(&body[member.value.clone()])
                .map_err(|_| BodyError::InvalidField("model"))?,
        ),
        None => None,
    };
    let stream = single(&object, "stream")?.is_some_and(|member| &body[member.value.clone()] == b"true");

    let mut edits = Edits::default();
    let mut added_members: Vec<String> = Vec::new();

    if let Some(limit) = rules.max_output_tokens {
        let mut honoured_present = false;
        for field in CEILING_FIELDS {
            let Some(member) = single(&object, field)? else { continue };
            match clamped(&body[member.value.clone()], limit) {
                Ceiling::Keep => {}
                Ceiling::Replace => edits.replace(member.value.clone(), limit.to_string()),
                Ceiling::Invalid => return Err(BodyError::InvalidField(field)),
            }
            honoured_present |= rules.endpoint.honours(field);
        }
        // Adding the API's own member whenever it is missing (not only when no ceiling member at all is
        // present): a `max_tokens` sent to the Responses API is not a ceiling there.
        if !honoured_present && let Some(field) = rules.endpoint.own_ceiling_field() {
            added_members.push(format!("\"{field}\":{limit}"));
        }
    }

    let mut include_usage_injected = false;
    if rules.inject_include_usage
        && rules.format == UsageFormat::OpenAi
        && rules.endpoint == Endpoint::ChatCompletions
        && stream
    {
        include_usage_injected = match single(&object, "stream_options")? {
            None => {
                added_members.push(r#""stream_options":{"include_usage":true}"#.to_owned());
                true
            }
            Some(member) => ask_for_usage(body, member, &mut edits)?,
        };
    }

    if !added_members.is_empty() {
        let comma = if object.has_members { "," } else { "" };
        edits.insert(object.insert_at, format!("{comma}{}", added_members.join(",")));
    }
    Ok(PreparedRequest { model, stream, include_usage_injected, body: edits.apply(body)? })
}

/// Sets `include_usage: true` inside an existing `stream_options`; whether anything changed.
fn ask_for_usage(body: &[u8], stream_options: &MemberSpan, edits: &mut Edits) -> Result<bool, BodyError> {
    let value = stream_options.value.clone();
    match body[value.clone()].first() {
        Some(b'n') => {
            // `null`: the documented "no options".
            edits.replace(value, r#"{"include_usage":true}"#.to_owned());
            Ok(true)
        }
        Some(b'{') => {
            let options = object_spans(body, value.start).ok_or_else(unscannable)?;
            let mut include_usage = options.named("include_usage");
            let first = include_usage.next();
            if include_usage.next().is_some() {
                return Err(BodyError::DuplicateField("stream_options.include_usage"));
            }
            match first {
                Some(member) if &body[member.value.clone()] == b"true" => Ok(false),
                Some(member) => {
                    edits.replace(member.value.clone(), "true".to_owned());
                    Ok(true)
                }
                None => {
                    let comma = if options.has_members { "," } else { "" };
                    edits.insert(options.insert_at, format!(r#"{comma}"include_usage":true"#));
                    Ok(true)
                }
            }
        }
        _ => Err(BodyError::InvalidField("stream_options")),
    }
}

/// The member `name`, refusing a duplicate.
fn single<'a>(object: &'a ObjectSpans, name: &'static str) -> Result<Option<&'a MemberSpan>, BodyError> {
    let mut found = object.named(name);
    let first = found.next();
    if found.next().is_some() {
        return Err(BodyError::DuplicateField(name));
    }
    Ok(first)
}

enum Ceiling {
    Keep,
    Replace,
    Invalid,
}

/// Compares a ceiling value with `limit` on its digits, so an integer of any length keeps its meaning.
fn clamped(value: &[u8], limit: u32) -> Ceiling {
    if value == b"null" {
        // The APIs document `null` as "no ceiling": the session's ceiling takes its place.
        return Ceiling::Replace;
    }
    // The APIs' schemas say integer: `1.0`, `1e3` and `-0` are refused rather than interpreted.
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Ceiling::Invalid;
    }
    // Valid JSON has no leading zeros, so more than ten digits is above any u32.
    let above = value.len() > 10
        || std::str::from_utf8(value)
            .ok()
            .and_then(|digits| digits.parse::<u64>().ok())
            .is_none_or(|n| n > u64::from(limit));
    if above { Ceiling::Replace } else { Ceiling::Keep }
}

fn unscannable() -> BodyError {
    // Unreachable for text serde_json accepted; kept as an error rather than a panic all the same.
    BodyError::NotJson(<serde_json::Error as serde::de::Error>::custom("unexpected JSON layout"))
}

/// Replacements and insertions, applied in one pass over the original bytes.
#[derive(Default)]
struct Edits(Vec<(Range<usize>, String)>);

impl Edits {
    fn replace(&mut self, range: Range<usize>, text: String) {
        self.0.push((range, text));
    }

    fn insert(&mut self, at: usize, text: String) {
        self.0.push((at..at, text));
    }

    /// The edited text, `None` when there is no edit. Edits never overlap (each is a distinct member's
    /// value, or a place after one); were they to, this is an error rather than a body that silently
    /// lacks an edit.
    fn apply(mut self, original: &[u8]) -> Result<Option<Bytes>, BodyError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        // Stable: two insertions at one place keep the order they were made in.
        self.0.sort_by_key(|(range, _)| range.start);
        let extra: usize = self.0.iter().map(|(_, text)| text.len()).sum();
        let mut out = Vec::with_capacity(original.len() + extra);
        let mut copied = 0;
        for (range, text) in self.0 {
            out.extend_from_slice(original.get(copied..range.start).ok_or_else(unscannable)?);
            out.extend_from_slice(text.as_bytes());
            copied = range.end;
        }
        out.extend_from_slice(original.get(copied..).ok_or_else(unscannable)?);
        Ok(Some(Bytes::from(out)))
    }
}

/// The first `model` query parameter, decoded as a form (`+` is a space, `%XX` a byte; invalid UTF-8
/// becomes U+FFFD). The Realtime API names its model this way (`/v1/realtime?model=...`).
///
/// A query may name `model` more than once and upstreams differ on which one counts: a scope check
/// must check every value ([`models_from_query`]), not only this one.
#[must_use]
pub fn model_from_query(query: &str) -> Option<String> {
    query_values(query, "model").next()
}

/// Every `model` query parameter, decoded as in [`model_from_query`], in order.
#[must_use]
pub fn models_from_query(query: &str) -> Vec<String> {
    query_values(query, "model").collect()
}

fn query_values<'a>(query: &'a str, wanted: &'a str) -> impl Iterator<Item = String> + 'a {
    query.strip_prefix('?').unwrap_or(query).split('&').filter_map(move |pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(name.as_bytes(), true) == wanted).then(|| percent_decode(value.as_bytes(), true))
    })
}

/// Decodes `%XX` (and `+` when `plus_is_space`) into text, invalid UTF-8 replaced.
fn percent_decode(text: &[u8], plus_is_space: bool) -> String {
    String::from_utf8_lossy(&crate::proxy::encoded::percent_decode(text, plus_is_space)).into_owned()
}
