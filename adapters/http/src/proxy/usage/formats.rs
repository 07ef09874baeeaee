//! What each API's answers say about token usage, checked against the official SDKs' types
//! (openai-node `CompletionUsage`, `ResponseUsage`, `ChatCompletionChunk`, `ResponseCompletedEvent`;
//! anthropic-sdk-typescript `Usage`, `MessageDeltaUsage`, `RawMessageStreamEvent`):
//!
//! - chat and legacy completions: JSON `usage.prompt_tokens` / `usage.completion_tokens`; in a stream,
//!   the last chunk before `data: [DONE]`, with `"choices": []` and a non-null `usage` (the other chunks
//!   carry `"usage": null` when `include_usage` is on);
//! - responses: JSON `usage.input_tokens` / `usage.output_tokens`; in a stream, `response.usage` of
//!   `response.completed` (or `.incomplete`, `.failed`);
//! - anthropic messages: JSON `usage.input_tokens` + `cache_creation_input_tokens` +
//!   `cache_read_input_tokens` (all billed input) / `usage.output_tokens`; in a stream, `message.usage`
//!   of `message_start`, then `usage` of `message_delta` (cumulative; newer API versions repeat the
//!   input counts there), and `message_stop` ends it.
//!
//! Stream events are told apart by the JSON `type` member, not the SSE `event:` name, which some
//! compatible upstreams and the SDKs' own fixtures leave out.

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{Endpoint, MAX_PLAUSIBLE_TOKENS, Usage, UsageFormat, UsageReport};

/// How an answer names its usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// `prompt_tokens` / `completion_tokens`.
    OpenAiChat,
    /// `input_tokens` / `output_tokens`.
    OpenAiResponses,
    /// `input_tokens` (+ cache counts) / `output_tokens`.
    Anthropic,
}

impl Dialect {
    /// The dialect to read, or `None` when nothing is read. The endpoint decides, not the upstream's
    /// format: Anthropic's OpenAI-compatible `/v1/chat/completions` answers in OpenAI's shape.
    pub fn of(format: UsageFormat, endpoint: Endpoint) -> Option<Dialect> {
        if format == UsageFormat::None {
            return None;
        }
        match endpoint {
            Endpoint::ChatCompletions | Endpoint::LegacyCompletions => Some(Dialect::OpenAiChat),
            Endpoint::Responses => Some(Dialect::OpenAiResponses),
            Endpoint::AnthropicMessages => Some(Dialect::Anthropic),
            // Other paths are retrievals (`GET /v1/responses/{id}` repeats a usage already counted),
            // listings, or APIs billed otherwise: reading them would count twice or guess.
            Endpoint::Other => None,
        }
    }
}

/// A token count: a non-negative integer no larger than [`MAX_PLAUSIBLE_TOKENS`]. `Ok(None)` when
/// absent or `null`; `Err` when it is anything else (a string, a negative, a fraction, an absurd size).
fn count(usage: &Value, name: &str) -> Result<Option<u64>, Unreadable> {
    match usage.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_u64().filter(|n| *n <= MAX_PLAUSIBLE_TOKENS).map(Some).ok_or(Unreadable),
    }
}

fn required(usage: &Value, name: &str) -> Result<u64, Unreadable> {
    count(usage, name)?.ok_or(Unreadable)
}

/// The usage object was not what its API documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unreadable;

/// The counts of an Anthropic usage object, each kept apart so that a later, larger copy of one of
/// them replaces it rather than adding to it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct AnthropicCounts {
    input: Option<u64>,
    cache_creation: Option<u64>,
    cache_read: Option<u64>,
    output: Option<u64>,
}

impl AnthropicCounts {
    fn read(usage: &Value) -> Result<Self, Unreadable> {
        if !usage.is_object() {
            return Err(Unreadable);
        }
        Ok(Self {
            input: count(usage, "input_tokens")?,
            cache_creation: count(usage, "cache_creation_input_tokens")?,
            cache_read: count(usage, "cache_read_input_tokens")?,
            output: count(usage, "output_tokens")?,
        })
    }

    /// Keeps the larger of each count: every count Anthropic sends is cumulative.
    fn merge(&mut self, later: Self) {
        let larger = |a: Option<u64>, b: Option<u64>| a.max(b);
        self.input = larger(self.input, later.input);
        self.cache_creation = larger(self.cache_creation, later.cache_creation);
        self.cache_read = larger(self.cache_read, later.cache_read);
        self.output = larger(self.output, later.output);
    }

    /// All billed input (uncached, written to and read from the cache) and the output. Each count is
    /// at most `MAX_PLAUSIBLE_TOKENS`, so the sum cannot overflow.
    fn usage(self) -> Usage {
        let input = [self.input, self.cache_creation, self.cache_read].into_iter().flatten().sum();
        Usage { input_tokens: input, output_tokens: self.output.unwrap_or(0) }
    }
}

/// Reads a `usage` object of `dialect`.
fn read_usage(dialect: Dialect, usage: &Value) -> Result<Usage, Unreadable> {
    match dialect {
        Dialect::OpenAiChat => Ok(Usage {
            input_tokens: required(usage, "prompt_tokens")?,
            output_tokens: required(usage, "completion_tokens")?,
        }),
        Dialect::OpenAiResponses => Ok(Usage {
            input_tokens: required(usage, "input_tokens")?,
            output_tokens: required(usage, "output_tokens")?,
        }),
        Dialect::Anthropic => {
            let counts = AnthropicCounts::read(usage)?;
            if counts.input.is_none() || counts.output.is_none() {
                return Err(Unreadable);
            }
            Ok(counts.usage())
        }
    }
}

/// `Some(value)` when the member is present, even as `null`; the default (`None`) when absent.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// The usage of a complete JSON answer.
pub(super) fn json_answer(dialect: Dialect, body: &[u8]) -> UsageReport {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default, deserialize_with = "present")]
        usage: Option<Value>,
        #[serde(default)]
        error: Option<IgnoredAny>,
    }
    let unreadable = UsageReport { usage: None, complete: false, unreadable: true };
    let Ok(answer) = serde_json::from_slice::<Answer>(body) else { return unreadable };
    match answer.usage {
        // An error answer (`{"error": ...}`, Anthropic's `{"type": "error", "error": ...}`) has none.
        None if answer.error.is_some() => UsageReport::default(),
        None => unreadable,
        // `null`: nothing used yet, as a `background` response that is still queued says.
        Some(Value::Null) => UsageReport::default(),
        Some(usage) => match read_usage(dialect, &usage) {
            Ok(usage) => UsageReport { usage: Some(usage), complete: true, unreadable: false },
            Err(Unreadable) => unreadable,
        },
    }
}

/// The `type` member of a stream event.
#[derive(Deserialize)]
struct Typed {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// The usage state of one answer stream, fed its events in order.
#[derive(Debug)]
pub(super) enum StreamReader {
    Chat(ChatStream),
    Responses(ResponsesStream),
    Anthropic(AnthropicStream),
}

impl StreamReader {
    pub fn new(dialect: Dialect) -> Self {
        match dialect {
            Dialect::OpenAiChat => StreamReader::Chat(ChatStream::default()),
            Dialect::OpenAiResponses => StreamReader::Responses(ResponsesStream::default()),
            Dialect::Anthropic => StreamReader::Anthropic(AnthropicStream::default()),
        }
    }

    /// Reads one event's data; whether it is the chat stream's usage-only chunk. `cut` is set for an
    /// event the stream ended inside of: its data not parsing then says nothing about the format.
    pub fn on_event(&mut self, data: &[u8], cut: bool) -> bool {
        let outcome = match self {
            StreamReader::Chat(chat) => chat.on_event(data),
            StreamReader::Responses(responses) => responses.on_event(data).map(|()| false),
            StreamReader::Anthropic(anthropic) => anthropic.on_event(data).map(|()| false),
        };
        outcome.unwrap_or_else(|Unreadable| {
            if !cut {
                self.mark_unreadable();
            }
            false
        })
    }

    /// Whether nothing more can be stripped (`data: [DONE]` was seen).
    pub fn past_the_end(&self) -> bool {
        matches!(self, StreamReader::Chat(chat) if chat.done)
    }

    fn mark_unreadable(&mut self) {
        match self {
            StreamReader::Chat(chat) => chat.unreadable = true,
            StreamReader::Responses(responses) => responses.unreadable = true,
            StreamReader::Anthropic(anthropic) => anthropic.unreadable = true,
        }
    }

    pub fn report(&self) -> UsageReport {
        match self {
            StreamReader::Chat(chat) => {
                UsageReport { usage: chat.usage, complete: chat.complete, unreadable: chat.unreadable }
            }
            StreamReader::Responses(responses) => UsageReport {
                usage: responses.usage,
                complete: responses.usage.is_some(),
                unreadable: responses.unreadable,
            },
            StreamReader::Anthropic(anthropic) => UsageReport {
                usage: anthropic.counts.map(AnthropicCounts::usage),
                complete: anthropic.stopped && anthropic.counts.is_some_and(|c| c.input.is_some()),
                unreadable: anthropic.unreadable,
            },
        }
    }
}

/// Chat (and legacy) completion chunks.
#[derive(Debug, Default)]
pub(super) struct ChatStream {
    usage: Option<Usage>,
    complete: bool,
    unreadable: bool,
    done: bool,
}

impl ChatStream {
    fn on_event(&mut self, data: &[u8]) -> Result<bool, Unreadable> {
        #[derive(Deserialize)]
        struct Chunk {
            #[serde(default)]
            choices: Option<Vec<IgnoredAny>>,
            #[serde(default)]
            usage: Option<Value>,
            #[serde(default)]
            moderation: Option<IgnoredAny>,
        }
        // The SDK stops reading at `[DONE]`; so does the meter.
        if self.done {
            return Ok(false);
        }
        if data == b"[DONE]" {
            self.done = true;
            // Some compatible upstreams put the usage on the last choice chunk instead of a chunk of
            // its own: the end of the stream makes the last one seen final.
            self.complete |= self.usage.is_some();
            return Ok(false);
        }
        let chunk: Chunk = serde_json::from_slice(data).map_err(|_| Unreadable)?;
        let Some(usage) = chunk.usage else { return Ok(false) };
        let no_choices = chunk.choices.as_ref().is_some_and(Vec::is_empty);
        // Stripped only when it carries nothing else the client could want (a moderated completion's
        // results may ride on the same chunk).
        let usage_only = no_choices && chunk.moderation.is_none();
        match read_usage(Dialect::OpenAiChat, &usage) {
            Ok(usage) => {
                self.usage = Some(usage);
                self.complete |= no_choices;
            }
            // Still the chunk the client did not ask for: stripped all the same.
            Err(Unreadable) => self.unreadable = true,
        }
        Ok(usage_only)
    }
}

/// Responses API events.
#[derive(Debug, Default)]
pub(super) struct ResponsesStream {
    usage: Option<Usage>,
    unreadable: bool,
}

impl ResponsesStream {
    fn on_event(&mut self, data: &[u8]) -> Result<(), Unreadable> {
        #[derive(Deserialize)]
        struct Final {
            response: FinalResponse,
        }
        #[derive(Deserialize)]
        struct FinalResponse {
            #[serde(default)]
            usage: Option<Value>,
        }
        // Not sent by the API, but by some compatible servers and the SDK's own test fixtures.
        if data == b"[DONE]" {
            return Ok(());
        }
        let Typed { kind } = serde_json::from_slice(data).map_err(|_| Unreadable)?;
        let kind = kind.unwrap_or_default();
        if !matches!(kind.as_str(), "response.completed" | "response.incomplete" | "response.failed") {
            return Ok(());
        }
        let event: Final = serde_json::from_slice(data).map_err(|_| Unreadable)?;
        match event.response.usage {
            Some(usage) => self.usage = Some(read_usage(Dialect::OpenAiResponses, &usage)?),
            // A failed response may have used nothing; a completed one always reports its usage.
            None if kind == "response.completed" => return Err(Unreadable),
            None => {}
        }
        Ok(())
    }
}

/// Anthropic Messages events.
#[derive(Debug, Default)]
pub(super) struct AnthropicStream {
    counts: Option<AnthropicCounts>,
    stopped: bool,
    unreadable: bool,
}

impl AnthropicStream {
    fn on_event(&mut self, data: &[u8]) -> Result<(), Unreadable> {
        #[derive(Deserialize)]
        struct Start {
            message: StartMessage,
        }
        #[derive(Deserialize)]
        struct StartMessage {
            usage: Value,
        }
        #[derive(Deserialize)]
        struct Delta {
            usage: Value,
        }
        let Typed { kind } = serde_json::from_slice(data).map_err(|_| Unreadable)?;
        let counts = match kind.as_deref() {
            Some("message_start") => {
                let start: Start = serde_json::from_slice(data).map_err(|_| Unreadable)?;
                let counts = AnthropicCounts::read(&start.message.usage)?;
                counts.input.ok_or(Unreadable)?;
                counts
            }
            Some("message_delta") => {
                let delta: Delta = serde_json::from_slice(data).map_err(|_| Unreadable)?;
                let counts = AnthropicCounts::read(&delta.usage)?;
                counts.output.ok_or(Unreadable)?;
                counts
            }
            Some("message_stop") => {
                self.stopped = true;
                return Ok(());
            }
            _ => return Ok(()),
        };
        self.counts.get_or_insert_default().merge(counts);
        Ok(())
    }
}
