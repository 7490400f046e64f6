//! The JSON log line, written straight into the line buffer: the same shape as
//! `tracing-subscriber`'s flattened JSON (`timestamp`, `level`, the event's fields in order,
//! `target`), without its per-field serde machinery. Events inside a span, or forwarded from the
//! `log` crate, are handed to `tracing-subscriber`'s own JSON formatter, which knows how to print
//! span lists and normalised `log` metadata.

use std::fmt;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use self::numbers::{write_f64, write_millis, write_timestamp};
use super::access::AccessRecord;

mod numbers;

/// The request path's JSON event format.
pub struct FastJson {
    /// For events in a span or from the `log` crate.
    fallback: Format<Json>,
}

impl FastJson {
    /// `fallback` must be configured like the fast path (flattened event, no current span).
    pub fn new(fallback: Format<Json>) -> Self {
        FastJson { fallback }
    }
}

impl<S, N> FormatEvent<S, N> for FastJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let in_span = event.parent().is_some() || ctx.lookup_current().is_some();
        let meta = event.metadata();
        if in_span || meta.fields().field("log.target").is_some() {
            return self.fallback.format_event(ctx, writer, event);
        }
        // The line is built in a plain `String` and handed over in one call: `Writer` is a
        // `dyn fmt::Write`, and a call per fragment cost more than the formatting itself.
        let mut line = String::with_capacity(LINE_CAPACITY);
        line.push_str("{\"timestamp\":\"");
        write_timestamp(&mut line, SystemTime::now());
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        event.record(&mut Fields(&mut line));
        line.push_str(",\"target\":");
        write_str(&mut line, meta.target());
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Room for a request line without growing.
const LINE_CAPACITY: usize = 384;

/// Appends the access log line for `r` at `now` to `out`: the bytes [`FastJson`] writes for
/// `front`'s `request` event. The field names are constants with nothing to escape, so each one
/// is part of a fixed fragment with the quotes around it.
pub(super) fn write_access_line(out: &mut Vec<u8>, r: &AccessRecord<'_>, now: SystemTime) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    write_timestamp(out, now);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":\"");
    write_str_body(out, r.request_id);
    for (name, value) in [
        (&b"\",\"trace_id\":\""[..], r.trace_id),
        (b"\",\"team\":\"", r.team),
        (b"\",\"route\":\"", r.route),
        (b"\",\"method\":\"", r.method),
    ] {
        out.extend_from_slice(name);
        write_str_body(out, value);
    }
    out.extend_from_slice(b"\",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(r.status).as_bytes());
    out.extend_from_slice(b",\"attempts\":\"");
    write_str_body(out, r.attempts);
    for (name, value) in [
        (&b"\",\"dedup\":\""[..], r.dedup),
        (b"\",\"error\":\"", r.error),
    ] {
        out.extend_from_slice(name);
        write_str_body(out, value);
    }
    out.extend_from_slice(b"\",\"latency_ms\":");
    write_millis(out, r.latency_ms);
    out.extend_from_slice(b",\"target\":\"idenfy_gateway::front\"}\n");
}

/// What a JSON line is built in: a `String` for `tracing`'s writer, or the log buffer's bytes.
trait Line {
    fn push_str(&mut self, s: &str);
    /// `bytes` are ASCII.
    fn push_ascii(&mut self, bytes: &[u8]);
}

impl Line for String {
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s);
    }

    fn push_ascii(&mut self, bytes: &[u8]) {
        String::push_str(self, std::str::from_utf8(bytes).unwrap_or_default());
    }
}

impl Line for Vec<u8> {
    fn push_str(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }

    fn push_ascii(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn name(&mut self, field: &Field) {
        let name = field.name();
        if needs_escape(name.as_bytes()) {
            self.0.push(',');
            write_str(self.0, name);
            self.0.push(':');
        } else {
            self.0.push_str(",\"");
            self.0.push_str(name);
            self.0.push_str("\":");
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.name(field);
        write_str(self.0, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.0.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.0.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.name(field);
        write_f64(self.0, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.name(field);
        let text = format!("{value:?}");
        write_str(self.0, &text);
    }
}

/// A JSON string, quoted and escaped as `serde_json` escapes it.
fn write_str(out: &mut impl Line, s: &str) {
    out.push_ascii(b"\"");
    write_str_body(out, s);
    out.push_ascii(b"\"");
}

/// The inside of a JSON string: `s` escaped as `serde_json` escapes it.
#[inline]
fn write_str_body(out: &mut impl Line, s: &str) {
    // The usual case (ids, names, labels): nothing to escape, one copy, inlined at each of the
    // access line's seven strings; the escaping loop stays out of line, where its registers
    // are saved only when it runs.
    if needs_escape(s.as_bytes()) {
        write_escaped(out, s);
    } else {
        out.push_str(s);
    }
}

#[cold]
#[inline(never)]
fn write_escaped(out: &mut impl Line, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_ascii(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Whether any byte is one JSON strings must escape (`"`, `\\`, below 0x20), eight bytes at a
/// time: log values are mostly ids and names with nothing to escape. A tail shorter than a word
/// is read as the last eight (or two overlapping fours) bytes, one test instead of a byte loop.
fn needs_escape(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n < 4 {
        return bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    }
    if n < 8 {
        let halves = u64::from(u32_at(bytes, 0)) | u64::from(u32_at(bytes, n - 4)) << 32;
        return word_needs_escape(halves);
    }
    let mut words = bytes.chunks_exact(8);
    if words.any(|w| word_needs_escape(u64_at(w, 0))) {
        return true;
    }
    // Some of the last eight bytes were tested already, which does no harm.
    !words.remainder().is_empty() && word_needs_escape(u64_at(bytes, n - 8))
}

/// Whether any of the eight bytes in `w` must be escaped; exact (Hacker's Delight, "has a byte
/// less than n" / "has a zero byte").
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH != 0;
    let has_byte = |w: u64, b: u8| has_below(w ^ (ONES * u64::from(b)), 1);
    has_below(w, 0x20) || has_byte(w, b'"') || has_byte(w, b'\\')
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `f` writes into an empty line (also for `numbers`' tests).
    pub(super) fn render(f: impl FnOnce(&mut String)) -> String {
        let mut s = String::new();
        f(&mut s);
        s
    }

    #[test]
    fn strings_are_escaped_like_serde_json() {
        for s in [
            "plain",
            "q\"b\\s",
            "nl\ncr\rtab\t",
            "\u{1}\u{8}\u{c}\u{1f}",
            "ünï",
        ] {
            let ours = render(|w| write_str(w, s));
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn finds_every_byte_that_needs_escaping_at_any_position() {
        let special = [b'"', b'\\', 0x00, 0x01, 0x1f, b'\n'];
        let plain = [b'a', b' ', 0x20, 0x7f, 0x80, 0xff, b'~', b'!'];
        for len in 0..20 {
            let base = vec![b'x'; len];
            assert!(!needs_escape(&base));
            for at in 0..len {
                for &b in &special {
                    let mut s = base.clone();
                    s[at] = b;
                    assert!(needs_escape(&s), "{b:#x} at {at} of {len}");
                }
                for &b in &plain {
                    let mut s = base.clone();
                    s[at] = b;
                    assert!(!needs_escape(&s), "{b:#x} at {at} of {len}");
                }
            }
        }
    }
}
