use bytes::Bytes;
use proptest::prelude::*;

use super::super::{
    Endpoint, MAX_EVENT_BYTES, MAX_JSON_ANSWER_BYTES, Usage, UsageFormat, UsageMeter, UsageReport, fuzz_one,
    realtime_usage,
};
use super::samples::*;

const SSE: Option<&str> = Some("text/event-stream");
const JSON: Option<&str> = Some("application/json");

/// One way to meter an answer.
#[derive(Debug, Clone, Copy)]
struct Setup {
    format: UsageFormat,
    endpoint: Endpoint,
    content_type: Option<&'static str>,
    strip: bool,
}

const CHAT: Setup = Setup {
    format: UsageFormat::OpenAi,
    endpoint: Endpoint::ChatCompletions,
    content_type: SSE,
    strip: false,
};
const CHAT_STRIPPED: Setup = Setup { strip: true, ..CHAT };
const RESPONSES: Setup = Setup { endpoint: Endpoint::Responses, ..CHAT };
const ANTHROPIC: Setup = Setup {
    format: UsageFormat::Anthropic,
    endpoint: Endpoint::AnthropicMessages,
    content_type: SSE,
    strip: false,
};

impl Setup {
    fn json(self) -> Self {
        Setup { content_type: JSON, ..self }
    }

    fn meter(self) -> UsageMeter {
        UsageMeter::new(self.format, self.endpoint, self.content_type, self.strip)
    }

    /// Feeds `input` cut at `splits`, then finishes: everything forwarded, and the report.
    fn run(self, input: &[u8], splits: &[usize]) -> (Vec<u8>, UsageReport) {
        let mut meter = self.meter();
        let mut out = Vec::new();
        let mut from = 0;
        for &to in splits.iter().chain([input.len()].iter()) {
            out.extend_from_slice(&meter.feed(Bytes::copy_from_slice(&input[from..to])));
            from = to;
        }
        out.extend_from_slice(&meter.finish());
        (out, meter.report())
    }

    /// The report of `input` in one chunk, after checking that every two-chunk cut gives the same
    /// report and the same forwarded bytes.
    fn report_at_every_cut(self, input: &str) -> (Vec<u8>, UsageReport) {
        let input = input.as_bytes();
        let whole = self.run(input, &[]);
        for split in 1..input.len() {
            assert_eq!(self.run(input, &[split]), whole, "cut at {split} with {self:?}");
        }
        whole
    }
}

fn complete(input_tokens: u64, output_tokens: u64) -> UsageReport {
    UsageReport { usage: Some(Usage { input_tokens, output_tokens }), complete: true, unreadable: false }
}

fn partial(usage: Option<(u64, u64)>) -> UsageReport {
    UsageReport {
        usage: usage.map(|(input_tokens, output_tokens)| Usage { input_tokens, output_tokens }),
        complete: false,
        unreadable: false,
    }
}

const UNREADABLE: UsageReport = UsageReport { usage: None, complete: false, unreadable: true };

#[test]
fn reads_the_usage_of_every_json_answer() {
    let cases = [
        (CHAT.json(), CHAT_JSON, complete(19, 10)),
        (Setup { endpoint: Endpoint::LegacyCompletions, ..CHAT.json() }, CHAT_JSON, complete(19, 10)),
        (RESPONSES.json(), RESPONSES_JSON, complete(36, 87)),
        // Input is every billed input: 21 uncached + 188086 written to the cache + 0 read from it.
        (ANTHROPIC.json(), ANTHROPIC_JSON, complete(188_107, 393)),
    ];
    for (setup, answer, expected) in cases {
        let (out, report) = setup.report_at_every_cut(answer);
        assert_eq!(report, expected, "{setup:?}");
        assert_eq!(out, answer.as_bytes());
    }
}

#[test]
fn reads_the_usage_of_every_stream_with_any_line_end() {
    let cases = [
        (CHAT, CHAT_STREAM, complete(17, 10)),
        (RESPONSES, RESPONSES_STREAM, complete(10, 25)),
        (ANTHROPIC, ANTHROPIC_STREAM, complete(11, 6)),
        // Input: the larger uncached count (3001, from `message_delta`) + 0 written + 2048 read.
        (ANTHROPIC, ANTHROPIC_STREAM_CACHED, complete(5049, 89)),
    ];
    for (setup, stream, expected) in cases {
        for line_end in ["\n", "\r\n", "\r"] {
            let stream = with_line_ends(stream, line_end);
            let (out, report) = setup.report_at_every_cut(&stream);
            assert_eq!(report, expected, "{setup:?} {line_end:?}");
            assert_eq!(out, stream.as_bytes(), "not stripping forwards the stream unchanged");
        }
    }
}

#[test]
fn reads_the_usage_of_anthropics_openai_compatible_chat_endpoint() {
    let setup = Setup { format: UsageFormat::Anthropic, ..CHAT };
    assert_eq!(setup.run(CHAT_STREAM.as_bytes(), &[]).1, complete(17, 10));
}

#[test]
fn a_usage_on_the_last_choice_chunk_is_final_at_done() {
    let stream = concat!(
        r#"data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );
    let (out, report) = CHAT_STRIPPED.report_at_every_cut(stream);
    assert_eq!(report, complete(5, 2));
    assert_eq!(out, stream.as_bytes(), "a chunk with choices is never stripped");
    assert_eq!(CHAT.run(&stream.as_bytes()[..stream.len() - 16], &[]).1, partial(Some((5, 2))));
}

#[test]
fn a_cut_anthropic_stream_reports_what_it_said_so_far() {
    let stream = ANTHROPIC_STREAM.as_bytes();
    let at = |marker: &str| ANTHROPIC_STREAM.find(marker).unwrap();
    assert_eq!(ANTHROPIC.run(&stream[..at("event: content_block_start")], &[]).1, partial(Some((11, 1))));
    assert_eq!(ANTHROPIC.run(&stream[..at("event: message_stop")], &[]).1, partial(Some((11, 6))));
    assert_eq!(ANTHROPIC.run(&stream[..at("\"usage\":{\"output_tokens\":6")], &[]).1, partial(Some((11, 1))));
    assert_eq!(ANTHROPIC.run(&stream[..40], &[]).1, partial(None));
    // Cut after its data line but before the blank line, `message_stop` still ends the answer.
    assert_eq!(ANTHROPIC.run(&stream[..stream.len() - 1], &[]).1, complete(11, 6));
}

#[test]
fn a_cut_stream_is_never_unreadable_and_complete_only_with_its_final_usage() {
    for (setup, stream, full) in [
        (CHAT, CHAT_STREAM, complete(17, 10)),
        (CHAT_STRIPPED, CHAT_STREAM, complete(17, 10)),
        (RESPONSES, RESPONSES_STREAM, complete(10, 25)),
        (ANTHROPIC, ANTHROPIC_STREAM, complete(11, 6)),
    ] {
        for cut in 0..stream.len() {
            let (out, report) = setup.run(&stream.as_bytes()[..cut], &[]);
            assert!(!report.unreadable, "{setup:?} cut at {cut}");
            if report.complete {
                assert_eq!(report, full, "{setup:?} cut at {cut}");
            }
            if !setup.strip {
                assert_eq!(out, &stream.as_bytes()[..cut]);
            }
        }
    }
    let before_usage = CHAT_STREAM.find(CHAT_USAGE_EVENT).unwrap();
    assert_eq!(CHAT.run(&CHAT_STREAM.as_bytes()[..before_usage], &[]).1, partial(None));
    let after_usage = before_usage + CHAT_USAGE_EVENT.len();
    assert_eq!(CHAT.run(&CHAT_STREAM.as_bytes()[..after_usage], &[]).1, complete(17, 10));
}

/// The stripped stream: `stream` without its usage-only chunk, for the given line end.
fn stripped(line_end: &str) -> (String, String) {
    let stream = with_line_ends(CHAT_STREAM, line_end);
    let expected = stream.replace(&with_line_ends(CHAT_USAGE_EVENT, line_end), "");
    assert_eq!(expected.len(), stream.len() - CHAT_USAGE_EVENT.len() - (line_end.len() - 1) * 2);
    (stream, expected)
}

#[test]
fn stripping_removes_exactly_the_usage_chunk_at_every_cut() {
    for line_end in ["\n", "\r\n", "\r"] {
        let (stream, expected) = stripped(line_end);
        let (out, report) = CHAT_STRIPPED.report_at_every_cut(&stream);
        assert_eq!(report, complete(17, 10));
        assert_eq!(String::from_utf8(out).unwrap(), expected, "{line_end:?}");
        let every_byte: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(CHAT_STRIPPED.run(stream.as_bytes(), &every_byte).0, expected.as_bytes(), "{line_end:?}");
    }
}

#[test]
fn stripping_never_holds_back_a_complete_event() {
    for line_end in ["\n", "\r\n", "\r"] {
        let (stream, expected) = stripped(line_end);
        let stream = stream.as_bytes();
        let blank_line = line_end.repeat(2);
        let event_ends: Vec<usize> = stream
            .windows(blank_line.len())
            .enumerate()
            .filter(|(_, w)| *w == blank_line.as_bytes())
            .map(|(at, _)| at + blank_line.len())
            .collect();
        let usage_event = with_line_ends(CHAT_USAGE_EVENT, line_end);
        let usage_start = String::from_utf8_lossy(stream).find(&usage_event).unwrap();
        let usage_end = usage_start + usage_event.len();
        for split in 1..stream.len() {
            let mut meter = CHAT_STRIPPED.meter();
            let now = meter.feed(Bytes::copy_from_slice(&stream[..split]));
            // Every event complete in what arrived is forwarded at once (minus the usage chunk).
            let complete_until = event_ends.iter().copied().filter(|end| *end <= split).max().unwrap_or(0);
            let at_least = complete_until - if usage_end <= complete_until { usage_event.len() } else { 0 };
            assert!(now.len() >= at_least, "{line_end:?} cut at {split}: {} < {at_least}", now.len());
            assert!(expected.as_bytes().starts_with(&now), "{line_end:?} cut at {split}");
            // What is held is only the incomplete event: it all comes with the rest.
            let mut out = now.to_vec();
            out.extend_from_slice(&meter.feed(Bytes::copy_from_slice(&stream[split..])));
            out.extend_from_slice(&meter.finish());
            assert_eq!(out, expected.as_bytes());
        }
    }
}

#[test]
fn stripping_forwards_whole_events_without_copying() {
    let mut meter = CHAT_STRIPPED.meter();
    let first_event_end = CHAT_STREAM.find("\n\n").unwrap() + 2;
    let chunk = Bytes::copy_from_slice(&CHAT_STREAM.as_bytes()[..first_event_end]);
    let out = meter.feed(chunk.clone());
    assert_eq!(out.as_ptr(), chunk.as_ptr(), "a chunk of whole events is forwarded as it is");
    assert_eq!(out.len(), chunk.len());
}

#[test]
fn stripping_applies_only_to_openai_chat_streams() {
    let cases = [
        (Setup { strip: true, ..RESPONSES }, RESPONSES_STREAM),
        (Setup { strip: true, ..ANTHROPIC }, ANTHROPIC_STREAM),
        (CHAT_STRIPPED.json(), CHAT_JSON),
        (Setup { format: UsageFormat::None, ..CHAT_STRIPPED }, CHAT_STREAM),
        (Setup { endpoint: Endpoint::Other, ..CHAT_STRIPPED }, CHAT_STREAM),
    ];
    for (setup, answer) in cases {
        assert_eq!(setup.run(answer.as_bytes(), &[]).0, answer.as_bytes(), "{setup:?}");
    }
}

#[test]
fn stripping_keeps_a_usage_chunk_that_carries_moderation_results() {
    const MODERATION: &str = r#""moderation":{"input":{"type":"moderation_results","model":"omni-moderation-latest","results":[]},"output":{"type":"moderation_results","model":"omni-moderation-latest","results":[]}},"#;
    let moderated = CHAT_USAGE_EVENT.replace(r#""choices":[],"#, &format!(r#""choices":[],{MODERATION}"#));
    let stream = CHAT_STREAM.replace(CHAT_USAGE_EVENT, &moderated);
    let (out, report) = CHAT_STRIPPED.run(stream.as_bytes(), &[]);
    assert_eq!(out, stream.as_bytes());
    assert_eq!(report, complete(17, 10));
}

#[test]
fn stripping_removes_a_usage_chunk_it_cannot_read_and_says_so() {
    let broken = CHAT_USAGE_EVENT.replace(r#""prompt_tokens":17"#, r#""prompt_tokens":"17""#);
    let stream = CHAT_STREAM.replace(CHAT_USAGE_EVENT, &broken);
    let (out, report) = CHAT_STRIPPED.run(stream.as_bytes(), &[]);
    assert_eq!(out, CHAT_STREAM.replace(CHAT_USAGE_EVENT, "").as_bytes());
    assert_eq!(report, UNREADABLE);
}

#[test]
fn an_event_over_the_limit_stops_reading_and_stripping_but_never_forwarding() {
    let huge_event =
        format!("data: {{\"choices\":[],\"x\":\"{}\"}}\n\n", "a".repeat(MAX_EVENT_BYTES + 200_000));
    let first_event_end = CHAT_STREAM.find("\n\n").unwrap() + 2;
    let stream =
        format!("{}{huge_event}{}", &CHAT_STREAM[..first_event_end], &CHAT_STREAM[first_event_end..]);
    let stream = stream.as_bytes();
    let mut meter = CHAT_STRIPPED.meter();
    let mut out = Vec::new();
    let mut overflowed_at = None;
    for (index, chunk) in stream.chunks(64 * 1024).enumerate() {
        let forwarded = meter.feed(Bytes::copy_from_slice(chunk));
        out.extend_from_slice(&forwarded);
        if meter.report().unreadable && overflowed_at.is_none() {
            overflowed_at = Some(index);
            // Once reading stops, nothing is held: all that arrived has gone on.
            assert_eq!(out, &stream[..out.len()]);
            assert_eq!(out.len(), (index + 1) * 64 * 1024);
        } else if overflowed_at.is_some() {
            assert_eq!(forwarded, chunk, "after the overflow every chunk goes on as it came");
        }
    }
    out.extend_from_slice(&meter.finish());
    assert!(overflowed_at.is_some());
    assert_eq!(out, stream, "nothing is stripped once reading has stopped");
    assert_eq!(meter.report(), UNREADABLE);
}

#[test]
fn a_json_answer_over_the_limit_is_unreadable_and_still_forwarded() {
    let mut meter = CHAT.json().meter();
    let padding = Bytes::from(vec![b' '; 1 << 20]);
    assert_eq!(
        meter.feed(Bytes::from_static(b"{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}")),
        &b"{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}"[..]
    );
    for _ in 0..=MAX_JSON_ANSWER_BYTES >> 20 {
        assert_eq!(meter.feed(padding.clone()), padding);
    }
    meter.feed(Bytes::from_static(b"}"));
    assert!(meter.finish().is_empty());
    assert_eq!(meter.report(), UNREADABLE);
}

#[test]
fn unreadable_usage_numbers_are_reported_never_guessed() {
    for count in ["-1", "1.5", "\"17\"", "1099511627777", "1e30", "null", "[17]", "18446744073709551616"] {
        let answer = CHAT_JSON.replace("\"prompt_tokens\": 19", &format!("\"prompt_tokens\": {count}"));
        assert_ne!(answer, CHAT_JSON);
        assert_eq!(CHAT.json().run(answer.as_bytes(), &[]).1, UNREADABLE, "{count}");
        let stream = CHAT_STREAM.replace("\"prompt_tokens\":17", &format!("\"prompt_tokens\":{count}"));
        let (out, report) = CHAT.run(stream.as_bytes(), &[]);
        assert_eq!(report, UNREADABLE, "{count}");
        assert_eq!(out, stream.as_bytes());
    }
    let answer = ANTHROPIC_JSON.replace(r#","output_tokens":393"#, "");
    assert_eq!(ANTHROPIC.json().run(answer.as_bytes(), &[]).1, UNREADABLE);
    let answer = ANTHROPIC_JSON.replace(r#""cache_read_input_tokens":0"#, r#""cache_read_input_tokens":-5"#);
    assert_eq!(ANTHROPIC.json().run(answer.as_bytes(), &[]).1, UNREADABLE);
}

#[test]
fn malformed_events_are_reported_and_forwarded() {
    let stream = format!("data: {{not json\n\n{CHAT_STREAM}");
    let (out, report) = CHAT_STRIPPED.run(stream.as_bytes(), &[]);
    assert_eq!(report, UsageReport { unreadable: true, ..complete(17, 10) });
    assert_eq!(out, format!("data: {{not json\n\n{}", CHAT_STREAM.replace(CHAT_USAGE_EVENT, "")).as_bytes());

    let garbage: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    for setup in [CHAT, CHAT_STRIPPED, RESPONSES, ANTHROPIC, CHAT.json()] {
        let (out, _) = setup.run(&garbage, &[100, 2000]);
        assert!(out.len() <= garbage.len(), "{setup:?}");
        if !setup.strip {
            assert_eq!(out, garbage, "{setup:?}");
        }
    }
}

#[test]
fn answers_of_another_format_are_never_complete() {
    let cases = [
        (CHAT.json(), ANTHROPIC_JSON, UNREADABLE),
        (RESPONSES.json(), CHAT_JSON, UNREADABLE),
        (ANTHROPIC.json(), CHAT_JSON, UNREADABLE),
        (CHAT, ANTHROPIC_STREAM, UNREADABLE),
        (ANTHROPIC, RESPONSES_STREAM, partial(None)),
        (RESPONSES, CHAT_STREAM, partial(None)),
        (CHAT.json(), CHAT_STREAM, UNREADABLE),
        (CHAT.json(), "", UNREADABLE),
        (CHAT.json(), "[1,2]", UNREADABLE),
        (CHAT.json(), r#"{"id":"x"}"#, UNREADABLE),
    ];
    for (setup, answer, expected) in cases {
        assert_eq!(setup.run(answer.as_bytes(), &[]).1, expected, "{setup:?} {answer:.40}");
    }
}

#[test]
fn error_answers_and_empty_usage_are_not_unreadable() {
    let openai_error = r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#;
    let anthropic_error = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    let queued =
        r#"{"id":"resp_1","object":"response","status":"queued","background":true,"output":[],"usage":null}"#;
    for (setup, answer) in
        [(CHAT.json(), openai_error), (ANTHROPIC.json(), anthropic_error), (RESPONSES.json(), queued)]
    {
        assert_eq!(setup.run(answer.as_bytes(), &[]).1, partial(None), "{answer}");
    }
    let cut_by_error = format!(
        "{}{ANTHROPIC_ERROR_EVENT}",
        &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: content_block_stop").unwrap()]
    );
    assert_eq!(ANTHROPIC.run(cut_by_error.as_bytes(), &[]).1, partial(Some((11, 1))));
    let chat_error =
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n";
    assert_eq!(CHAT.run(chat_error.as_bytes(), &[]).1, partial(None));
}

#[test]
fn the_final_responses_events_say_whether_usage_is_known() {
    let event = |kind: &str, usage: &str| {
        format!(
            "event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":9,\"response\":{{\"id\":\"resp_1\",\"status\":\"x\",\"usage\":{usage}}}}}\n\n"
        )
    };
    let usage = r#"{"input_tokens":7,"output_tokens":3,"total_tokens":10}"#;
    assert_eq!(RESPONSES.run(event("response.incomplete", usage).as_bytes(), &[]).1, complete(7, 3));
    assert_eq!(RESPONSES.run(event("response.failed", usage).as_bytes(), &[]).1, complete(7, 3));
    assert_eq!(RESPONSES.run(event("response.failed", "null").as_bytes(), &[]).1, partial(None));
    assert_eq!(RESPONSES.run(event("response.completed", "null").as_bytes(), &[]).1, UNREADABLE);
    let error = "event: error\ndata: {\"type\":\"error\",\"sequence_number\":2,\"error\":{\"code\":\"x\",\"message\":\"y\",\"param\":null}}\n\n";
    assert_eq!(RESPONSES.run(error.as_bytes(), &[]).1, partial(None));
}

#[test]
fn a_meter_without_usage_to_read_forwards_everything_and_reports_nothing() {
    for setup in [
        Setup { format: UsageFormat::None, ..CHAT },
        Setup { format: UsageFormat::None, ..ANTHROPIC.json() },
        Setup { endpoint: Endpoint::Other, ..CHAT.json() },
    ] {
        for answer in [CHAT_JSON, CHAT_STREAM, ANTHROPIC_JSON] {
            assert_eq!(
                setup.run(answer.as_bytes(), &[7]),
                (answer.as_bytes().to_vec(), UsageReport::default())
            );
        }
    }
}

#[test]
fn the_content_type_decides_between_stream_and_json() {
    for content_type in ["text/event-stream", "Text/Event-Stream; charset=utf-8", " text/event-stream ;"] {
        let setup = Setup { content_type: Some(content_type), ..CHAT };
        assert_eq!(setup.run(CHAT_STREAM.as_bytes(), &[]).1, complete(17, 10), "{content_type}");
    }
    for content_type in
        [None, Some("application/json"), Some("application/json; charset=utf-8"), Some("text/plain")]
    {
        let setup = Setup { content_type, ..CHAT };
        assert_eq!(setup.run(CHAT_JSON.as_bytes(), &[]).1, complete(19, 10), "{content_type:?}");
    }
}

#[test]
fn a_json_answer_is_read_at_finish_and_finishing_twice_changes_nothing() {
    let mut meter = CHAT.json().meter();
    meter.feed(Bytes::from_static(CHAT_JSON.as_bytes()));
    assert_eq!(meter.report(), partial(None));
    assert!(meter.finish().is_empty());
    assert_eq!(meter.report(), complete(19, 10));
    assert!(meter.finish().is_empty());
    assert_eq!(meter.feed(Bytes::from_static(b"late")), &b"late"[..]);
    assert_eq!(meter.report(), complete(19, 10));
}

#[test]
fn finish_returns_the_held_start_of_an_event_that_never_ended() {
    let mut meter = CHAT_STRIPPED.meter();
    assert!(meter.feed(Bytes::from_static(b"data: {\"choices\":[]")).is_empty());
    assert_eq!(meter.finish(), &b"data: {\"choices\":[]"[..]);
}

#[test]
fn meter_debug_shows_the_report_and_not_the_answer() {
    let mut meter = CHAT_STRIPPED.meter();
    meter.feed(Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\"private words\"}}]"));
    let debug = format!("{meter:?}");
    assert!(!debug.contains("private"), "{debug}");
    assert!(debug.contains("stream"), "{debug}");
}

#[test]
fn realtime_usage_reads_response_done_only() {
    assert_eq!(realtime_usage(REALTIME_DONE), Some(Usage { input_tokens: 127, output_tokens: 148 }));
    let cases = [
        r#"{"type":"response.created","response":{"usage":{"input_tokens":1,"output_tokens":1}}}"#,
        r#"{"type":"response.done","response":{"status":"cancelled","usage":null}}"#,
        r#"{"type":"response.done","response":{"usage":{"total_tokens":3}}}"#,
        r#"{"type":"response.done","response":{"usage":{"input_tokens":-1,"output_tokens":1}}}"#,
        r#"{"type":"response.done","response":{"usage":{"input_tokens":"1"}}}"#,
        r#"{"type":"response.done"}"#,
        r#"{"type":"response.done","response":[]}"#,
        "not json",
        "",
    ];
    for event in cases {
        assert_eq!(realtime_usage(event), None, "{event}");
    }
    assert_eq!(
        realtime_usage(r#"{"type":"response.done","response":{"usage":{"output_tokens":4}}}"#),
        Some(Usage { input_tokens: 0, output_tokens: 4 })
    );
}

#[test]
fn fuzz_one_holds_for_every_sample() {
    let samples = [
        CHAT_JSON,
        CHAT_STREAM,
        RESPONSES_JSON,
        RESPONSES_STREAM,
        ANTHROPIC_JSON,
        ANTHROPIC_STREAM,
        ANTHROPIC_STREAM_CACHED,
        REALTIME_DONE,
        r#"{"model":"gpt-4o","stream":true,"max_tokens":100000,"stream_options":null}"#,
        "",
        "\r",
        "data: [DONE]\r",
    ];
    for sample in samples {
        fuzz_one(sample.as_bytes());
        fuzz_one(with_line_ends(sample, "\r").as_bytes());
    }
}

proptest! {
    /// Random chunkings of every stream, stripped or not: the same bytes out, the same report.
    #[test]
    fn any_chunking_forwards_and_reports_the_same(
        case in prop::sample::select(vec![
            (CHAT, CHAT_STREAM),
            (CHAT_STRIPPED, CHAT_STREAM),
            (RESPONSES, RESPONSES_STREAM),
            (ANTHROPIC, ANTHROPIC_STREAM),
            (ANTHROPIC, ANTHROPIC_STREAM_CACHED),
        ]),
        line_end in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let (setup, stream) = case;
        let stream = with_line_ends(stream, line_end);
        let mut splits: Vec<usize> =
            cuts.iter().map(|cut| cut.index(stream.len())).filter(|s| *s > 0).collect();
        splits.sort_unstable();
        splits.dedup();
        prop_assert_eq!(setup.run(stream.as_bytes(), &splits), setup.run(stream.as_bytes(), &[]));
    }

    /// Whatever the bytes, the module's properties hold (what the libFuzzer target checks, briefly).
    #[test]
    fn fuzz_one_holds_for_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        fuzz_one(&data);
    }

    /// Mutated real streams: a byte changed here and there.
    #[test]
    fn fuzz_one_holds_for_mutated_streams(
        sample in prop::sample::select(vec![CHAT_STREAM, RESPONSES_STREAM, ANTHROPIC_STREAM]),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::sample::select(b"\r\n:{}\" 0a".to_vec())),
            1..6,
        ),
    ) {
        let mut data = sample.as_bytes().to_vec();
        for (at, byte) in edits {
            let at = at.index(data.len());
            data[at] = byte;
        }
        fuzz_one(&data);
    }
}
