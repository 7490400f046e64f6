//! Structured logs with `tracing`: JSON for machines, human for terminals. `RUST_LOG`, when set,
//! overrides `log.level`. Nothing on the request path logs a body, a token or a secret.
//!
//! Lines go to stderr through [`LogWriter`]: the request path only appends the formatted line to
//! a memory buffer; a background thread writes the buffer out in batches. One `write(2)` per
//! batch instead of one per request line, and a slow stderr reader never stalls a request
//! (unless it falls [`MAX_BUFFERED`] behind: then the line is written in place, so none is lost).
//! The [`LogGuard`] returned by [`init`] flushes everything when dropped, at exit.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub mod access;
mod json;

pub use self::json::FastJson;

/// How long the writer thread lets lines gather after the first one before writing them: at
/// most this much delay before a line reaches stderr; at most 1/this writes per second.
pub const FLUSH_DELAY: Duration = Duration::from_millis(5);

/// Buffered bytes over which a line is written in place (backpressure instead of loss).
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;

/// Installs the global subscriber (once; later calls are no-ops, which suits tests). Keep the
/// guard for as long as the program runs: dropping it flushes every buffered line.
pub fn init(format: LogFormat, level: &str) -> LogGuard {
    init_to(format, level, Box::new(io::stderr()))
}

/// [`init`], with the lines going to `out` instead of stderr (benchmarks send them to
/// `io::sink()` to pay for every log line without printing it).
pub fn init_to(format: LogFormat, level: &str, out: Box<dyn Write + Send>) -> LogGuard {
    let writer = LogWriter::new(out);
    let guard = writer.guard();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone());
    match format {
        LogFormat::Json => {
            let installed = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .event_format(FastJson::new(json_format()))
                .try_init();
            if installed.is_ok() {
                access::write_directly_to(writer);
            }
        }
        LogFormat::Human => {
            let _ = builder.try_init();
        }
    }
    guard
}

/// `tracing-subscriber`'s JSON format as the gateway configures it: one flat object per line.
fn json_format() -> tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json> {
    tracing_subscriber::fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(false)
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the buffer turns non-empty, and at close.
    wake: Condvar,
    /// Held while writing to the output, so that batches reach it in order.
    out: Mutex<Box<dyn Write + Send>>,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes out whatever is buffered now.
    fn flush(&self, spare: &mut Vec<u8>) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut self.pending().bytes, spare);
        // Nowhere to report a failed log write; the line is dropped like stderr would drop it.
        let _ = out.write_all(spare).and_then(|()| out.flush());
        spare.clear();
    }

    fn run(&self) {
        let mut spare = Vec::new();
        loop {
            let mut pending = self.pending();
            while pending.bytes.is_empty() && !pending.closed {
                pending = self
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let closed = pending.closed;
            drop(pending);
            if !closed {
                std::thread::sleep(FLUSH_DELAY);
            }
            self.flush(&mut spare);
            if closed {
                return;
            }
        }
    }
}

/// The log output: a buffer in front of stderr (or any writer), written out by its own thread.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl LogWriter {
    /// A writer in front of stderr.
    pub fn stderr() -> Self {
        LogWriter::new(Box::new(io::stderr()))
    }

    /// A writer in front of `out`, with its writer thread started.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            out: Mutex::new(out),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || worker.run())
            .ok();
        if thread.is_none() {
            // No thread: every line is written in place.
            shared.pending().closed = true;
        }
        LogWriter {
            shared,
            thread: Arc::new(Mutex::new(thread)),
        }
    }

    /// The guard that flushes and stops the writer thread when dropped.
    pub fn guard(&self) -> LogGuard {
        LogGuard(self.clone())
    }

    fn append(&self, line: &[u8]) {
        self.append_with(|bytes| bytes.extend_from_slice(line));
    }

    /// Appends the line `write` formats, straight into the buffer: no line of its own, no copy.
    /// A line that takes the buffer past [`MAX_BUFFERED`], or comes after the writer closed, is
    /// taken back out and written in place after whatever was buffered before it.
    pub(crate) fn append_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.shared.pending();
        let start = pending.bytes.len();
        write(&mut pending.bytes);
        if pending.closed || pending.bytes.len() > MAX_BUFFERED {
            let line = pending.bytes.split_off(start);
            drop(pending);
            self.write_in_place(&line);
            return;
        }
        drop(pending);
        if start == 0 {
            self.shared.wake.notify_one();
        }
    }

    /// Writes `line` to the output now, after whatever is buffered, so lines stay in order.
    fn write_in_place(&self, line: &[u8]) {
        let mut out = self
            .shared
            .out
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let earlier = std::mem::take(&mut self.shared.pending().bytes);
        let _ = out.write_all(&earlier);
        let _ = out.write_all(line).and_then(|()| out.flush());
    }

    fn close(&self) {
        self.shared.pending().closed = true;
        self.shared.wake.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
        self.shared.flush(&mut Vec::new());
    }
}

/// Flushes every buffered line and stops the writer thread when dropped; later lines are written
/// in place.
pub struct LogGuard(LogWriter);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// What `tracing-subscriber` writes one formatted event into.
pub struct LineWriter<'a>(&'a LogWriter);

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records what reached it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Formats one request-like event with `format`, into a string.
    fn format_with<E>(format: E) -> String
    where
        E: for<'w> tracing_subscriber::fmt::FormatEvent<
                tracing_subscriber::Registry,
                tracing_subscriber::fmt::format::JsonFields,
            > + Send
            + Sync
            + 'static,
    {
        let text = format_event_with(format, || {
            tracing::info!(
                request_id = "abc",
                team = "app\"x",
                route = "/api/v2/status",
                status = 200u16,
                attempts = "1",
                ok = true,
                delta = -3i64,
                latency_ms = 0.25,
                "request"
            );
        });
        // The timestamps differ by when each line was written.
        let end = text.find("\",\"level\"").unwrap();
        text[end..].to_string()
    }

    /// What `format` writes for the events `emit` sends.
    pub(super) fn format_event_with<E>(format: E, emit: impl FnOnce()) -> String
    where
        E: for<'w> tracing_subscriber::fmt::FormatEvent<
                tracing_subscriber::Registry,
                tracing_subscriber::fmt::format::JsonFields,
            > + Send
            + Sync
            + 'static,
    {
        let sink = Sink::default();
        let out = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .event_format(format)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn fast_json_lines_equal_tracing_subscribers_json_lines() {
        assert_eq!(
            format_with(FastJson::new(json_format())),
            format_with(json_format())
        );
    }

    #[test]
    fn every_line_reaches_the_output_in_order_once_the_guard_drops() {
        let sink = Sink::default();
        let writer = LogWriter::new(Box::new(sink.clone()));
        let guard = writer.guard();
        let mut expected = Vec::new();
        for i in 0..1000 {
            let line = format!("line {i}\n");
            writer.make_writer().write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        drop(guard);
        assert_eq!(*sink.0.lock().unwrap(), expected);
        // After the guard: written in place, not lost.
        writer.make_writer().write_all(b"late\n").unwrap();
        assert!(sink.0.lock().unwrap().ends_with(b"line 999\nlate\n"));
    }

    #[test]
    fn a_full_buffer_writes_in_place_without_losing_or_reordering() {
        let sink = Sink::default();
        let writer = LogWriter::new(Box::new(sink.clone()));
        let guard = writer.guard();
        let big = vec![b'x'; MAX_BUFFERED / 2 + 1];
        for _ in 0..3 {
            writer.make_writer().write_all(&big).unwrap();
        }
        writer.make_writer().write_all(b"end").unwrap();
        drop(guard);
        let out = sink.0.lock().unwrap();
        assert_eq!(out.len(), 3 * big.len() + 3);
        assert!(out.ends_with(b"xend"));
    }
}
