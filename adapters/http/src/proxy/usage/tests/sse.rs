use proptest::prelude::*;

use super::super::sse::{SseItem, SseParser};
use super::samples::{ANTHROPIC_STREAM, CHAT_STREAM, RESPONSES_STREAM, with_line_ends};

/// What a parser reports, with offsets made absolute, for `stream` cut at `splits`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Event { end: usize, name: String, data: String },
    Empty { end: usize },
    Tail { end: usize },
    Overflow,
    Trailing { name: String, data: String },
}

fn parse(stream: &[u8], splits: &[usize], limit: usize) -> Vec<Seen> {
    let mut parser = SseParser::new(limit);
    let mut seen = Vec::new();
    let mut from = 0;
    for &to in splits.iter().chain([stream.len()].iter()) {
        parser.feed(&stream[from..to], &mut |item| {
            seen.push(match item {
                SseItem::EventEnd { end, event: Some(event) } => Seen::Event {
                    end: from + end,
                    name: String::from_utf8_lossy(event.name).into_owned(),
                    data: String::from_utf8_lossy(event.data).into_owned(),
                },
                SseItem::EventEnd { end, event: None } => Seen::Empty { end: from + end },
                SseItem::TerminatorTail { end } => Seen::Tail { end: from + end },
                SseItem::Overflow => Seen::Overflow,
            });
        });
        from = to;
    }
    parser.finish(&mut |event| {
        seen.push(Seen::Trailing {
            name: String::from_utf8_lossy(event.name).into_owned(),
            data: String::from_utf8_lossy(event.data).into_owned(),
        });
    });
    seen
}

/// Name and data of each dispatched event, offsets aside.
fn events(stream: &str) -> Vec<(String, String)> {
    parse(stream.as_bytes(), &[], 1 << 20)
        .into_iter()
        .filter_map(|seen| match seen {
            Seen::Event { name, data, .. } | Seen::Trailing { name, data } => Some((name, data)),
            _ => None,
        })
        .collect()
}

fn pair(name: &str, data: &str) -> (String, String) {
    (name.to_owned(), data.to_owned())
}

#[test]
fn parses_fields_as_the_whatwg_standard_does() {
    let stream = concat!(
        ": a comment, then an event without data\n",
        "event: ignored\n",
        "\n",
        "data:no space\n",
        "\n",
        "data:  two spaces keep one\n",
        "\n",
        "data: first\n",
        "id: 7\n",
        "retry: 10\n",
        "unknown: x\n",
        "data\n",
        "data: third\n",
        "\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n",
        "\n",
        "data:\n",
        "\n",
        "Data: not data\n",
        "\n",
    );
    assert_eq!(
        events(stream),
        [
            pair("message", "no space"),
            pair("message", " two spaces keep one"),
            pair("message", "first\n\nthird"),
            pair("message_stop", r#"{"type":"message_stop"}"#),
            pair("message", ""),
        ]
    );
}

#[test]
fn every_line_end_frames_the_same_events() {
    for sample in [CHAT_STREAM, RESPONSES_STREAM, ANTHROPIC_STREAM] {
        let expected = events(sample);
        assert!(expected.len() >= 4);
        for line_end in ["\r\n", "\r"] {
            assert_eq!(events(&with_line_ends(sample, line_end)), expected, "{line_end:?}");
        }
        // A `\r` is always followed by `\r\n` here, so no two line ends merge into one.
        let line_ends = ["\r\n", "\n", "\r"].into_iter().cycle();
        let mixed: String =
            sample.split('\n').zip(line_ends).map(|(line, end)| format!("{line}{end}")).collect();
        assert_eq!(events(&mixed), expected);
    }
}

#[test]
fn drops_a_byte_order_mark_at_the_start_only() {
    assert_eq!(events("\u{feff}data: a\n\n\u{feff}data: b\n\n"), [pair("message", "a")]);
    assert_eq!(events("\u{feff}data: cut"), [pair("message", "cut")]);
}

#[test]
fn reports_where_each_event_ends_and_the_lf_of_a_split_crlf() {
    let stream = b"data: a\r\n\r\n: c\r\n\r\n";
    let expected = vec![
        Seen::Event { end: 10, name: "message".into(), data: "a".into() },
        Seen::Tail { end: 11 },
        Seen::Empty { end: 17 },
        Seen::Tail { end: 18 },
    ];
    assert_eq!(parse(stream, &[], 100), expected);
    for split in 1..stream.len() {
        assert_eq!(parse(stream, &[split], 100), expected, "split at {split}");
    }
    // A `\n` after a `\r` that ended a line, not an event, is part of that event.
    assert_eq!(
        parse(b"data: a\r\n\n", &[8], 100),
        [Seen::Event { end: 10, name: "message".into(), data: "a".into() }]
    );
}

#[test]
fn an_event_cut_before_its_blank_line_is_reported_at_the_end() {
    assert_eq!(events("data: a\n\ndata: b\ndata: c"), [pair("message", "a"), pair("message", "b\nc")]);
    assert_eq!(events("data: a\n\nevent: x\n"), [pair("message", "a")]);
}

#[test]
fn an_event_over_the_limit_stops_the_parser_for_good() {
    let stream = b"data: 0123456789\n\ndata: 0123456789012345678901234567890123456789\n\ndata: b\n\n";
    let seen = parse(stream, &[], 30);
    assert_eq!(
        seen,
        [Seen::Event { end: 18, name: "message".into(), data: "0123456789".into() }, Seen::Overflow]
    );
    for split in 1..stream.len() {
        assert_eq!(parse(stream, &[split], 30), seen, "split at {split}");
    }
    // A line that never ends is bounded as well.
    assert_eq!(parse(&[b'x'; 100], &[10, 50], 30), [Seen::Overflow]);
}

proptest! {
    /// However the network cuts a stream, the parser reports the same items at the same offsets.
    #[test]
    fn any_chunking_reports_the_same_items(
        sample in prop::sample::select(vec![CHAT_STREAM, RESPONSES_STREAM, ANTHROPIC_STREAM]),
        line_end in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        limit in prop::sample::select(vec![1 << 20, 300, 120]),
    ) {
        let stream = with_line_ends(sample, line_end).into_bytes();
        let mut splits: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len())).filter(|s| *s > 0).collect();
        splits.sort_unstable();
        splits.dedup();
        prop_assert_eq!(parse(&stream, &splits, limit), parse(&stream, &[], limit));
    }
}
