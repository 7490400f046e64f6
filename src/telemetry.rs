//! Structured logs with `tracing`: JSON for machines, human for terminals. `RUST_LOG`, when set,
//! overrides `log.level`. Nothing on the request path logs a body, a token or a secret.
//!
//! Lines go to stderr through [`LogWriter`]: the request path only appends the formatted line to
//! a memory buffer; a background thread writes the buffer out in batches. One `write(2)` per
//! batch instead of one per request line, and a slow stderr reader never stalls a request: once
//! it falls [`MAX_BUFFERED`] behind, new lines are dropped and counted in
//! `idenfy_gateway_log_lines_dropped_total` ([`log_lines_dropped`]) until the writer catches up.
//! The [`LogGuard`] returned by [`init`] flushes everything when dropped, at exit.
//!
//! Why not `tracing-appender`'s lossy non-blocking writer: it sends every line through a channel
//! as a `Vec` of its own and writes it with one `write(2)`; the access line here is formatted
//! straight into the shared buffer (`access`), and a batch is one `write(2)`.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::IntCounter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub mod access;
mod demo;
mod json;
#[cfg(feature = "otlp")]
pub mod otlp;

pub use self::demo::DemoFormat;
pub use self::json::FastJson;

/// How long the writer thread lets lines gather after the first one before writing them: at
/// most this much delay before a line reaches stderr; at most 1/this writes per second.
pub const FLUSH_DELAY: Duration = Duration::from_millis(5);

/// Buffered bytes over which a new line is dropped (and counted) rather than waited for.
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;

/// Log lines dropped because the output fell [`MAX_BUFFERED`] behind: one counter for the
/// process, as the log output is; `metrics::registry` registers it.
static LOG_LINES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "idenfy_gateway_log_lines_dropped_total",
        "Log lines dropped because the log output (stderr) did not keep up",
    )
    .expect("a valid metric name")
});

/// The process's `idenfy_gateway_log_lines_dropped_total`.
pub fn log_lines_dropped() -> IntCounter {
    LOG_LINES_DROPPED.clone()
}

/// Installs the global subscriber (once; later calls are no-ops, which suits tests). Keep the
/// guard for as long as the program runs: dropping it flushes every buffered line.
pub fn init(format: LogFormat, level: &str) -> LogGuard {
    init_to(format, level, Box::new(io::stderr()))
}

/// Whether the human format may colour its lines: only on a terminal, and not when `NO_COLOR`
/// is set (no escape codes in a file, a pipe or a container log).
pub fn stderr_wants_colour() -> bool {
    use std::io::IsTerminal;
    io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The log of `idenfy-gateway demo`: one line a person reads per request ([`DemoFormat`]),
/// and warnings; `RUST_LOG` overrides which.
pub fn init_demo() -> LogGuard {
    let writer = LogWriter::stderr();
    let guard = writer.guard();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn,idenfy_gateway::front=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(stderr_wants_colour())
        .event_format(DemoFormat)
        .try_init();
    guard
}

/// [`init`], with the lines going to `out` instead of stderr (benchmarks send them to
/// `io::sink()` to pay for every log line without printing it).
pub fn init_to(format: LogFormat, level: &str, out: Box<dyn Write + Send>) -> LogGuard {
    let writer = LogWriter::new(out);
    let guard = writer.guard();
    let from_env = EnvFilter::try_from_default_env().ok();
    let overridden = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(stderr_wants_colour())
        .with_writer(writer.clone());
    match format {
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .event_format(FastJson::new(json_format()))
                .with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                access::write_directly_to(writer);
                remember_level(overridden, move |f| handle.reload(f));
            }
        }
        LogFormat::Human => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                remember_level(overridden, move |f| handle.reload(f));
            }
        }
    }
    guard
}

/// Sets the filter of the installed subscriber (a config reload's `log.level`), when
/// [`init`] installed it and `RUST_LOG` did not set it.
type SetFilter =
    Box<dyn Fn(EnvFilter) -> Result<(), tracing_subscriber::reload::Error> + Send + Sync>;

static LEVEL: OnceLock<(bool, SetFilter)> = OnceLock::new();

fn remember_level(
    overridden: bool,
    set: impl Fn(EnvFilter) -> Result<(), tracing_subscriber::reload::Error> + Send + Sync + 'static,
) {
    let _ = LEVEL.set((overridden, Box::new(set)));
}

/// Changes the log filter to `level` (a `tracing` filter directive, as `log.level`): `Ok(true)`
/// when it now applies, `Ok(false)` when `RUST_LOG` overrides it or the gateway's subscriber is
/// not the one installed.
pub fn set_level(level: &str) -> Result<bool, String> {
    let Some((overridden, set)) = LEVEL.get() else {
        return Ok(false);
    };
    if *overridden {
        return Ok(false);
    }
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    set(filter).map(|()| true).map_err(|e| e.to_string())
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
    /// Lines dropped while the output was [`MAX_BUFFERED`] behind.
    dropped: IntCounter,
}

impl LogWriter {
    /// A writer in front of stderr.
    pub fn stderr() -> Self {
        LogWriter::new(Box::new(io::stderr()))
    }

    /// A writer in front of `out`, with its writer thread started, counting dropped lines in
    /// [`log_lines_dropped`].
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        LogWriter::counting_drops_in(out, log_lines_dropped())
    }

    /// [`LogWriter::new`], counting dropped lines in `dropped`.
    fn counting_drops_in(out: Box<dyn Write + Send>, dropped: IntCounter) -> Self {
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
            dropped,
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
    /// A line that takes the buffer past [`MAX_BUFFERED`] is taken back out and dropped (and
    /// counted): the caller never waits for the output. One that comes after the writer closed
    /// (at exit) is written in place after whatever was buffered before it.
    pub(crate) fn append_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.shared.pending();
        let start = pending.bytes.len();
        write(&mut pending.bytes);
        if pending.closed {
            let line = pending.bytes.split_off(start);
            drop(pending);
            self.write_in_place(&line);
            return;
        }
        if pending.bytes.len() > MAX_BUFFERED {
            pending.bytes.truncate(start);
            drop(pending);
            self.dropped.inc();
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

    /// An output whose writes park until it is released: a log pipe nobody reads.
    #[derive(Clone, Default)]
    struct Stalled {
        released: Arc<(Mutex<bool>, Condvar)>,
        written: Sink,
    }

    impl Stalled {
        fn release(&self) {
            *self.released.0.lock().unwrap() = true;
            self.released.1.notify_all();
        }
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (released, wake) = &*self.released;
            let mut released = released.lock().unwrap();
            while !*released {
                released = wake.wait(released).unwrap();
            }
            self.written.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_never_blocks_the_caller_and_counts_the_lines_it_drops() {
        let out = Stalled::default();
        let dropped = IntCounter::new("dropped", "dropped").unwrap();
        let writer = LogWriter::counting_drops_in(Box::new(out.clone()), dropped.clone());
        let guard = writer.guard();
        let mut line = vec![b'x'; 64 * 1024 - 1];
        line.push(b'\n');
        // Three times what the buffer holds.
        let lines = 3 * MAX_BUFFERED / line.len();
        let (done, finished) = std::sync::mpsc::channel();
        let logger = writer.clone();
        let written = line.clone();
        std::thread::spawn(move || {
            for _ in 0..lines {
                logger.make_writer().write_all(&written).unwrap();
            }
            let _ = done.send(());
        });
        // Bounded only so that a regression fails instead of hanging; no timing is asserted.
        let logged = finished.recv_timeout(Duration::from_secs(30));
        out.release();
        assert!(logged.is_ok(), "logging blocked on a stalled output");
        assert!(dropped.get() > 0);
        drop(guard);
        let reached = out.written.0.lock().unwrap().len();
        assert_eq!(reached % line.len(), 0, "only whole lines reach the output");
        assert_eq!(reached / line.len() + dropped.get() as usize, lines);
    }

    #[test]
    fn the_dropped_lines_counter_is_registered_in_the_gateways_registry() {
        let registry = crate::metrics::registry().unwrap();
        log_lines_dropped().inc_by(0);
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains("idenfy_gateway_log_lines_dropped_total "),
            "{text}"
        );
    }
}
