//! The JSON log line, written straight into the line buffer: the same shape as
//! `tracing-subscriber`'s flattened JSON (`timestamp`, `level`, the event's fields in order,
//! `target`), without its per-field serde machinery. Events inside a span, or forwarded from the
//! `log` crate, are handed to `tracing-subscriber`'s own JSON formatter, which knows how to print
//! span lists and normalised `log` metadata.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Datelike, Timelike};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use super::access::AccessRecord;

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
        (&b"\",\"team\":\""[..], r.team),
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

/// As `serde_json` writes an `f64` (it uses `zmij` too): `null` when not finite.
fn write_f64(out: &mut impl Line, value: f64) {
    if value.is_finite() {
        out.push_str(zmij::Buffer::new().format_finite(value));
    } else {
        out.push_str("null");
    }
}

/// `ms` as [`write_f64`] writes it. A latency is usually the double nearest to a whole number
/// of nanoseconds (`front` measures a `Duration`); then those digits are the shortest that read
/// back as `ms`, and writing them is cheaper than `zmij`'s general search.
fn write_millis(out: &mut Vec<u8>, ms: f64) {
    let Some(nanos) = whole_nanos(ms) else {
        return write_f64(out, ms);
    };
    out.extend_from_slice(itoa::Buffer::new().format(nanos / 1_000_000).as_bytes());
    let mut fraction = *b".000000";
    fraction[1..].copy_from_slice(&six_digits(nanos % 1_000_000));
    // At least one digit after the point, as `zmij` writes `1.0`.
    let end = fraction[2..]
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(2, |last| last + 3);
    out.extend_from_slice(&fraction[..end]);
}

/// The number of nanoseconds `ms` is the nearest double to, if there is one. Division of two
/// exact doubles rounds correctly, so the test is exact; below 1e9 ms a double's spacing is far
/// under a nanosecond, so no shorter decimal reads back as `ms` either. From 1e-3 ms (below it,
/// `zmij` may switch to an exponent).
fn whole_nanos(ms: f64) -> Option<u64> {
    if !(1e-3..1e9).contains(&ms) {
        return None;
    }
    let nanos = (ms * 1e6).round() as u64;
    (nanos as f64 / 1e6 == ms).then_some(nanos)
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

thread_local! {
    /// The last second formatted, and its `YYYY-MM-DDTHH:MM:SS` text: one date computation
    /// per second and thread instead of one per line.
    static SECOND: Cell<(i64, [u8; 19])> = const { Cell::new((i64::MIN, [0; 19])) };
}

/// RFC 3339 in UTC with microseconds, as `tracing-subscriber`'s `SystemTime` timer writes it.
fn write_timestamp(out: &mut impl Line, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = second_text(secs);
        SECOND.set((secs, text));
    }
    let mut micros = *b".000000Z";
    micros[1..7].copy_from_slice(&six_digits(since.subsec_micros().into()));
    out.push_ascii(&text);
    out.push_ascii(&micros);
}

/// `value` (below a million) in six digits with leading zeros: `itoa` writes two digits a step,
/// and a leading 1 pads it to a fixed length.
fn six_digits(value: u64) -> [u8; 6] {
    let mut digits = [b'0'; 6];
    let mut buffer = itoa::Buffer::new();
    let padded = buffer.format(value % 1_000_000 + 1_000_000).as_bytes();
    digits.copy_from_slice(&padded[1..]);
    digits
}

fn second_text(secs: i64) -> [u8; 19] {
    let mut text = *b"1970-01-01T00:00:00";
    let Some(t) = chrono::DateTime::from_timestamp(secs, 0) else {
        return text;
    };
    let year = u32::try_from(t.year()).unwrap_or(0).min(9999);
    let parts = [
        (0, 4, year),
        (5, 2, t.month()),
        (8, 2, t.day()),
        (11, 2, t.hour()),
        (14, 2, t.minute()),
        (17, 2, t.second()),
    ];
    for (at, width, mut value) in parts {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn render(f: impl FnOnce(&mut String)) -> String {
        let mut s = String::new();
        f(&mut s);
        s
    }

    #[test]
    fn timestamps_match_rfc3339_with_microseconds() {
        let t = UNIX_EPOCH + Duration::new(1_764_120_785, 417_032_999);
        assert_eq!(
            render(|w| write_timestamp(w, t)),
            "2025-11-26T01:33:05.417032Z"
        );
        let epoch = render(|w| write_timestamp(w, UNIX_EPOCH));
        assert_eq!(epoch, "1970-01-01T00:00:00.000000Z");
    }

    /// The timestamp as `chrono` writes RFC 3339 with microseconds, for comparison.
    fn reference(t: SystemTime) -> String {
        chrono::DateTime::<chrono::Utc>::from(t)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    /// Formats each time in turn on one thread (one cache), checking every line.
    fn check_in_order(times: &[SystemTime]) {
        for &t in times {
            assert_eq!(render(|w| write_timestamp(w, t)), reference(t), "{t:?}");
        }
    }

    #[test]
    fn cached_second_serves_later_lines_in_the_same_second() {
        let second = UNIX_EPOCH + Duration::from_secs(1_764_120_785);
        check_in_order(&[
            second + Duration::from_micros(1),
            second + Duration::from_micros(500_000),
            second,
        ]);
    }

    #[test]
    fn cache_moves_on_to_the_next_second_and_across_midnight_and_years() {
        let last = UNIX_EPOCH + Duration::new(1_767_225_599, 999_999_999); // 2025-12-31T23:59:59
        check_in_order(&[
            last - Duration::from_secs(1),
            last,
            last + Duration::from_nanos(1),
            last + Duration::from_secs(1),
            last + Duration::from_secs(86_400 * 59), // 2026-02-28T23:59:59
            last + Duration::from_secs(86_400 * 59 + 1),
        ]);
    }

    #[test]
    fn cache_follows_the_wall_clock_stepping_back() {
        let t = UNIX_EPOCH + Duration::new(1_764_120_785, 417_032_000);
        check_in_order(&[
            t,
            t - Duration::from_millis(1),
            t - Duration::from_millis(500),
            t - Duration::from_secs(3_600),
            t,
        ]);
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

    #[test]
    fn floats_are_written_like_serde_json() {
        // Exponents too: `ryu` writes 1e16 where `serde_json` writes 1e+16.
        for v in [0.680922, 1.0, 0.0, 12.5, 1234.0625, 1e-7, 1.5e16, -2.5e300] {
            let ours = render(|w| write_f64(w, v));
            assert_eq!(ours, serde_json::to_string(&v).unwrap(), "{v}");
        }
        assert_eq!(render(|w| write_f64(w, f64::NAN)), "null");
    }

    fn millis(ms: f64) -> String {
        let mut out = Vec::new();
        write_millis(&mut out, ms);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn latencies_are_written_like_any_float() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut whole = 0;
        for i in 0..200_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Durations as `front` makes them, across magnitudes from 1 µs to hours.
            let nanos = (seed >> 20) >> (i % 40);
            let ms = Duration::from_nanos(nanos).as_secs_f64() * 1000.0;
            whole += usize::from(whole_nanos(ms).is_some());
            assert_eq!(millis(ms), render(|w| write_f64(w, ms)), "{nanos} ns");
        }
        // The shortcut is taken for most of them, so the comparison above covers it.
        assert!(whole > 100_000, "{whole}");
        for ms in [
            0.001,
            0.0015,
            1.0,
            1.5,
            10.0,
            0.1,
            999_999_999.999_999,
            1e9,
            0.0,
            1e-7,
        ] {
            assert_eq!(millis(ms), render(|w| write_f64(w, ms)), "{ms}");
        }
        assert_eq!(millis(f64::INFINITY), "null");
    }
}
