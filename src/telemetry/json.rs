//! The JSON log line, written straight into the line buffer: the same shape as
//! `tracing-subscriber`'s flattened JSON (`timestamp`, `level`, the event's fields in order,
//! `target`), without its per-field serde machinery. Events inside a span, or forwarded from the
//! `log` crate, are handed to `tracing-subscriber`'s own JSON formatter, which knows how to print
//! span lists and normalised `log` metadata.

use std::cell::Cell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Datelike, Timelike};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_str(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.out.write_char(',')?;
            write_str(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| write_str(w, value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, |w| write_f64(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// As `serde_json` writes an `f64`: `null` when not finite, a `.0` on whole numbers.
fn write_f64(w: &mut Writer<'_>, value: f64) -> fmt::Result {
    if !value.is_finite() {
        return w.write_str("null");
    }
    if value.fract() == 0.0 && value.abs() < 1e16 {
        write!(w, "{value:.1}")
    } else {
        write!(w, "{value}")
    }
}

/// A JSON string, quoted and escaped.
fn write_str(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what it is given as JSON string content, as `serde_json` does.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

/// The bytes JSON strings must escape: `"`, `\\` and the control characters.
const fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

impl Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let bytes = s.as_bytes();
        // The usual case (ids, names, labels): nothing to escape, one write.
        if !bytes.iter().any(|&b| needs_escape(b)) {
            return self.0.write_str(s);
        }
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
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

thread_local! {
    /// The last second formatted, and its `YYYY-MM-DDTHH:MM:SS` text: one date computation
    /// per second and thread instead of one per line.
    static SECOND: Cell<(i64, [u8; 19])> = const { Cell::new((i64::MIN, [0; 19])) };
}

/// RFC 3339 in UTC with microseconds, as `tracing-subscriber`'s `SystemTime` timer writes it.
fn write_timestamp(w: &mut Writer<'_>, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = second_text(secs);
        SECOND.set((secs, text));
    }
    // Only ASCII digits and separators were written.
    w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)?;
    write!(w, ".{:06}Z", since.subsec_micros())
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

    fn render(f: impl FnOnce(&mut Writer<'_>) -> fmt::Result) -> String {
        let mut s = String::new();
        f(&mut Writer::new(&mut s)).unwrap();
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
    fn floats_are_written_like_serde_json() {
        for v in [0.680922, 1.0, 0.0, 12.5, 1234.0625] {
            let ours = render(|w| write_f64(w, v));
            assert_eq!(ours, serde_json::to_string(&v).unwrap(), "{v}");
        }
        assert_eq!(render(|w| write_f64(w, f64::NAN)), "null");
    }
}
