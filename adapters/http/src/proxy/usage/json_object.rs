//! Where each member of a JSON object lies in the text, so that a request body can be edited in place.
//!
//! Why not `serde_json::Value` and re-serialise: without serde_json's `preserve_order` feature a `Value`
//! object is a `BTreeMap` (member order lost), and without `arbitrary_precision` an integer beyond 64 bits
//! or a long decimal comes back changed. Both features are global to the build (they would change every
//! `Value` in the workspace), and an upstream may sign, cache or compare the body it receives. Editing
//! the bytes of the few members that change keeps everything else exactly as the client sent it.
//!
//! The text must already be known to be valid JSON (`prepare_request` checks it with serde_json first),
//! so this scanner only finds boundaries; it still never indexes out of bounds and answers `None` when
//! the text is not what it expects.

use std::ops::Range;

/// The members of one object, in text order.
pub(super) struct ObjectSpans {
    /// Where a new member goes: just after the last member's value, or just after `{` when empty.
    pub insert_at: usize,
    /// Whether a new member needs a leading comma.
    pub has_members: bool,
    pub members: Vec<MemberSpan>,
}

/// One member: its decoded name and the byte range of its value.
pub(super) struct MemberSpan {
    pub name: String,
    pub value: Range<usize>,
}

impl ObjectSpans {
    /// The members named `name` (a duplicated name is legal JSON, so there may be several).
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a MemberSpan> + 'a {
        self.members.iter().filter(move |member| member.name == name)
    }
}

/// Scans the object whose `{` is at `open`.
pub(super) fn object_spans(text: &[u8], open: usize) -> Option<ObjectSpans> {
    if text.get(open) != Some(&b'{') {
        return None;
    }
    let mut members = Vec::new();
    let mut insert_at = open + 1;
    let mut at = skip_whitespace(text, open + 1);
    if text.get(at) == Some(&b'}') {
        return Some(ObjectSpans { insert_at, has_members: false, members });
    }
    loop {
        let name_end = skip_string(text, at)?;
        let name = decode_name(text.get(at..name_end)?)?;
        at = skip_whitespace(text, name_end);
        if text.get(at) != Some(&b':') {
            return None;
        }
        let value_start = skip_whitespace(text, at + 1);
        let value_end = skip_value(text, value_start)?;
        members.push(MemberSpan { name, value: value_start..value_end });
        insert_at = value_end;
        at = skip_whitespace(text, value_end);
        match text.get(at)? {
            b',' => at = skip_whitespace(text, at + 1),
            b'}' => return Some(ObjectSpans { insert_at, has_members: true, members }),
            _ => return None,
        }
    }
}

/// The offset of the first byte at or after `at` that is not JSON whitespace.
pub(super) fn skip_whitespace(text: &[u8], mut at: usize) -> usize {
    while matches!(text.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// `quoted` is a whole JSON string, quotes included. Names without escapes (nearly all) skip serde.
fn decode_name(quoted: &[u8]) -> Option<String> {
    let inner = quoted.get(1..quoted.len().checked_sub(1)?)?;
    if memchr::memchr(b'\\', inner).is_none() {
        return std::str::from_utf8(inner).ok().map(str::to_owned);
    }
    // Escapes must be decoded: `"mod\u0065l"` is `model` to every upstream, so it is `model` here too.
    serde_json::from_slice(quoted).ok()
}

/// The offset just past the string whose opening quote is at `at`.
fn skip_string(text: &[u8], at: usize) -> Option<usize> {
    if text.get(at) != Some(&b'"') {
        return None;
    }
    let mut from = at + 1;
    loop {
        let found = from + memchr::memchr2(b'"', b'\\', text.get(from..)?)?;
        if text[found] == b'\\' {
            from = found + 2;
        } else {
            return Some(found + 1);
        }
    }
}

/// The offset just past the value that starts at `at`. Iterative, so deep nesting cannot overflow the
/// stack (serde_json has already refused anything nested beyond its limit of 128).
fn skip_value(text: &[u8], at: usize) -> Option<usize> {
    match text.get(at)? {
        b'"' => skip_string(text, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = at;
            loop {
                match text.get(at)? {
                    b'"' => {
                        at = skip_string(text, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            // A number, `true`, `false` or `null`: it ends where the next delimiter or space starts.
            let mut end = at;
            while !matches!(text.get(end), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                end += 1;
            }
            (end > at).then_some(end)
        }
    }
}
