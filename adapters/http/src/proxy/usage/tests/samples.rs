//! Short real answers, one per format. Sources: the OpenAI API reference examples and openai-node's
//! stream fixtures (`tests/lib/__snapshots__`), a Responses stream as the API sends it (with `event:`
//! lines and `"usage":null` until the end), anthropic-sdk-typescript's `tests/lib/fixtures/
//! basic_response.txt`, and the Anthropic API reference. Ids shortened; shapes and numbers as sent.

/// `POST /v1/chat/completions`, JSON.
pub const CHAT_JSON: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {"role": "assistant", "content": "Hello! How can I assist you today?", "refusal": null, "annotations": []},
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default"
}"#;

/// The usage-only chunk of [`CHAT_STREAM`], its blank line included: what stripping removes.
pub const CHAT_USAGE_EVENT: &str = concat!(
    r#"data: {"id":"chatcmpl-9tZXFsqeQ","object":"chat.completion.chunk","created":1723031665,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_845eaabc1f","choices":[],"usage":{"prompt_tokens":17,"completion_tokens":10,"total_tokens":27}}"#,
    "\n\n",
);

/// `POST /v1/chat/completions` with `"stream": true, "stream_options": {"include_usage": true}`.
pub const CHAT_STREAM: &str = concat!(
    r#"data: {"id":"chatcmpl-9tZXFsqeQ","object":"chat.completion.chunk","created":1723031665,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_845eaabc1f","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-9tZXFsqeQ","object":"chat.completion.chunk","created":1723031665,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_845eaabc1f","choices":[{"index":0,"delta":{"content":"San Francisco"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x3Q"}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-9tZXFsqeQ","object":"chat.completion.chunk","created":1723031665,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_845eaabc1f","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-9tZXFsqeQ","object":"chat.completion.chunk","created":1723031665,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_845eaabc1f","choices":[],"usage":{"prompt_tokens":17,"completion_tokens":10,"total_tokens":27}}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// `POST /v1/responses`, JSON.
pub const RESPONSES_JSON: &str = r#"{"id":"resp_67ccd2bed1ec8190","object":"response","created_at":1741476542,"status":"completed","error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_67ccd2bf17f0819081ff","status":"completed","role":"assistant","content":[{"type":"output_text","text":"In a peaceful grove beneath a silver moon...","annotations":[]}]}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"}},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123},"user":null,"metadata":{}}"#;

/// `POST /v1/responses` with `"stream": true`.
pub const RESPONSES_STREAM: &str = concat!(
    "event: response.created\n",
    r#"data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_6867f1ca","object":"response","created_at":1751642570,"status":"in_progress","model":"gpt-4o-2024-08-06","output":[],"usage":null,"metadata":{}}}"#,
    "\n\n",
    "event: response.output_text.delta\n",
    r#"data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"The solution is 42."}"#,
    "\n\n",
    "event: response.output_text.done\n",
    r#"data: {"type":"response.output_text.done","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"text":"The solution is 42."}"#,
    "\n\n",
    "event: response.completed\n",
    r#"data: {"type":"response.completed","sequence_number":8,"response":{"id":"resp_6867f1ca","object":"response","created_at":1751642570,"status":"completed","model":"gpt-4o-2024-08-06","output":[{"id":"msg_1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"text":"The solution is 42."}],"role":"assistant"}],"usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":0},"output_tokens":25,"output_tokens_details":{"reasoning_tokens":16},"total_tokens":35},"user":null,"metadata":{}}}"#,
    "\n\n",
);

/// `POST /v1/messages`, JSON, with prompt caching.
pub const ANTHROPIC_JSON: &str = r#"{"id":"msg_013Zva2CMHLNnXjNJJKqJ2EF","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hi! My name is Claude."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":21,"cache_creation_input_tokens":188086,"cache_read_input_tokens":0,"output_tokens":393,"service_tier":"standard"}}"#;

/// `POST /v1/messages` with `"stream": true` (the SDK's `basic_response.txt`).
pub const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"msg_4QpJur2dWWDjF6C758FbBw5vm12BaVipnK","type":"message","role":"assistant","content":[],"model":"claude-opus-4-8","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":1}}}"#,
    "\n\n",
    "event: content_block_start\n",
    r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    "\n\n",
    "event: ping\n",
    r#"data: {"type": "ping"}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello there!"}}"#,
    "\n\n",
    "event: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":0}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":6}}"#,
    "\n\n",
    "event: message_stop\n",
    r#"data: {"type":"message_stop"}"#,
    "\n\n",
);

/// A stream of a newer API version: cache counts at the start, input counts repeated (and grown, as
/// with server tools) in `message_delta`.
pub const ANTHROPIC_STREAM_CACHED: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":2,"service_tier":"standard"}}}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":3001,"cache_creation_input_tokens":null,"cache_read_input_tokens":2048,"output_tokens":89,"server_tool_use":{"web_search_requests":1}}}"#,
    "\n\n",
    "event: message_stop\n",
    r#"data: {"type":"message_stop"}"#,
    "\n\n",
);

/// An Anthropic error event, as sent mid-stream when the API is overloaded.
pub const ANTHROPIC_ERROR_EVENT: &str = concat!(
    "event: error\n",
    r#"data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    "\n\n",
);

/// An OpenAI Realtime `response.done` server event.
pub const REALTIME_DONE: &str = r#"{"type":"response.done","event_id":"event_3132","response":{"id":"resp_001","object":"realtime.response","status":"completed","status_details":null,"output":[{"id":"msg_006","object":"realtime.item","type":"message","status":"completed","role":"assistant","content":[{"type":"text","text":"Sure, how can I assist you today?"}]}],"usage":{"total_tokens":275,"input_tokens":127,"output_tokens":148,"input_token_details":{"cached_tokens":0,"text_tokens":119,"audio_tokens":8},"output_token_details":{"text_tokens":36,"audio_tokens":112}}}}"#;

/// The same stream with its line ends rewritten (the samples' JSON holds no raw line breaks).
pub fn with_line_ends(stream: &str, line_end: &str) -> String {
    stream.replace('\n', line_end)
}
