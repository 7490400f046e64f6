//! Watching secret files for rotation: which filesystem events are changes, the debounce, and
//! the loop that reloads on a change and every [`POLL_INTERVAL`] in any case.
//!
//! The directory of each secret file is watched (inotify), since kubelet rotates a secret volume
//! by swapping the `..data` symlink inside it. Only events that end a change are asked for: a
//! file written and closed, created, removed, renamed, its metadata changed (a `chmod` may make an
//! unreadable file readable), and the directory itself removed or moved; never an open, a read or
//! a single write. A file kept open and written line by line (a log next to the config file)
//! therefore costs the watcher nothing, where a watch on writes woke it at every flush; a change
//! written without a close is read at the next poll. Of those events, only the ones naming a
//! watched file, or kubelet's `..`-prefixed entries, count. A burst of changes (kubelet's rename
//! and create, an editor's write and rename) is read once, [`DEBOUNCE`] after its first event.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, sleep, Instant, MissedTickBehavior};

/// How often file-based secrets are re-read even when no change was signalled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);

/// How long after the first change of a burst the files are read: the rest of a rotation
/// (kubelet's rename and create, an editor's truncate and write) lands within it. At most one
/// reload per this interval, however many events arrive.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// The events a watched directory reports: each ends a change of an entry in it (or of the
/// directory). No `OPEN`, `ACCESS`, `MODIFY` or `CLOSE_NOWRITE`: reads are not changes, and a
/// write is one only once its file is closed.
const CHANGES: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF);

/// The events that report a change: [`CHANGES`] (watched for, reported with the same bits), an
/// overflow of the queue (events lost), and the end of a watch.
const CHANGED: EventMask = EventMask::from_bits_truncate(CHANGES.bits())
    .union(EventMask::Q_OVERFLOW)
    .union(EventMask::IGNORED);

/// Whether an event (its mask and the name of the entry it is about, if any) may have changed a
/// watched file (by their names, `names`): one of [`CHANGES`] (or events lost in an overflow of
/// the queue, or the watch ended) about a watched file, an entry of kubelet's atomic writer
/// (`..data`, `..2024_…`, through which a mounted Secret's or ConfigMap's files change), or the
/// directory itself.
pub fn is_change(mask: EventMask, name: Option<&OsStr>, names: &BTreeSet<OsString>) -> bool {
    mask.intersects(CHANGED)
        && name
            .is_none_or(|name| names.contains(name) || name.as_encoded_bytes().starts_with(b".."))
}

/// The directories of `files` (each once) and the files' names.
fn dirs_and_names(files: &[PathBuf]) -> (Vec<PathBuf>, BTreeSet<OsString>) {
    let mut dirs: Vec<PathBuf> = files
        .iter()
        .map(|f| match f.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => Path::new(".").to_path_buf(),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    let names = files
        .iter()
        .filter_map(|f| f.file_name().map(OsString::from))
        .collect();
    (dirs, names)
}

/// Watches `files` (their directories) and runs `reload` on each change, [`DEBOUNCE`] after
/// it, and every [`POLL_INTERVAL`] in any case, until `shutdown` resolves: what every
/// file-backed setting (secrets, team tokens, TLS certificates, the config file) does.
pub(crate) async fn watch_and_reload<F, R>(
    files: &[PathBuf],
    reload: F,
    shutdown: impl Future<Output = ()>,
) where
    F: FnMut() -> R,
    R: Future<Output = ()>,
{
    let (changes, signals) = mpsc::channel(1);
    // Kept until the loop ends: dropping the watcher stops it.
    let _watcher = watch_files(files, changes);
    reload_on_change(signals, POLL_INTERVAL, DEBOUNCE, reload, shutdown).await;
}

/// A watcher of `files` (their directories) that sends on `changes` when an event
/// [`is_change`] for them (or the watcher fails). The channel should hold one signal: one that
/// comes while another is pending is merged into it. The directories are watched before this
/// returns; the events are read by a task of the current runtime, which ends when the watcher
/// is dropped. `None`, after a warning, when they cannot be watched: polling only.
pub(crate) fn watch_files(files: &[PathBuf], changes: mpsc::Sender<()>) -> Option<FileWatcher> {
    let (dirs, names) = dirs_and_names(files);
    let watched = Inotify::init().and_then(|inotify| {
        for dir in &dirs {
            inotify.watches().add(dir, CHANGES)?;
        }
        // Room for several events, each with a name of up to NAME_MAX bytes.
        inotify.into_event_stream(vec![0; 4096])
    });
    match watched {
        Ok(events) => Some(FileWatcher(tokio::spawn(signal_changes(
            events, names, changes,
        )))),
        Err(error) => {
            tracing::warn!(%error, "cannot watch secret directories; polling only");
            None
        }
    }
}

/// Watches files while it lives ([`watch_files`]).
pub(crate) struct FileWatcher(JoinHandle<()>);

impl Drop for FileWatcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Signals on `changes` when one of `events` [`is_change`]. A failed read is signalled too (the
/// files are read then, and polled from there on), and ends the watch.
async fn signal_changes(
    mut events: EventStream<Vec<u8>>,
    names: BTreeSet<OsString>,
    changes: mpsc::Sender<()>,
) {
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if is_change(event.mask, event.name.as_deref(), &names) {
                    let _ = changes.try_send(());
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read secret directory events; polling only");
                break;
            }
        }
    }
    let _ = changes.try_send(());
}

/// Calls `reload` `debounce` after a signal on `changes` (the signals that come meanwhile are
/// covered by that one reload), and `poll` after the last reload when no signal came, until
/// `shutdown`. Reloads are at most one per `debounce`, however many signals arrive.
pub(crate) async fn reload_on_change<F, R>(
    mut changes: mpsc::Receiver<()>,
    poll: Duration,
    debounce: Duration,
    mut reload: F,
    shutdown: impl Future<Output = ()>,
) where
    F: FnMut() -> R,
    R: Future<Output = ()>,
{
    // The secrets were read at start: the first poll is one period away.
    let mut polls = interval_at(Instant::now() + poll, poll);
    polls.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = polls.tick() => {}
            Some(()) = changes.recv() => {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = sleep(debounce) => {}
                }
                while changes.try_recv().is_ok() {}
            }
        }
        reload().await;
        polls.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn only_changes_of_the_watched_files_or_kubelets_swaps_count() {
        let (dirs, names) = dirs_and_names(&[
            PathBuf::from("/etc/gw/config.toml"),
            PathBuf::from("/etc/gw/key"),
            PathBuf::from("secret"),
        ]);
        assert_eq!(dirs, [PathBuf::from("/etc/gw"), PathBuf::from(".")]);
        let at =
            |name: Option<&str>| is_change(EventMask::CLOSE_WRITE, name.map(OsStr::new), &names);
        assert!(at(Some("config.toml")));
        assert!(at(Some("key")));
        assert!(at(Some("secret")));
        assert!(at(Some("..data")));
        assert!(at(Some("..2026_12_02_18_00_00.123")));
        // The directory itself.
        assert!(at(None));
        assert!(!at(Some("gateway.log")));
        assert!(!at(Some("config.toml.bak")));
        assert!(!at(Some(".config.toml.swp")));
    }

    #[test]
    fn only_events_that_end_a_change_count() {
        let names = BTreeSet::from([OsString::from("key")]);
        let change = |mask| is_change(mask, Some(OsStr::new("key")), &names);
        for mask in [
            EventMask::CLOSE_WRITE,
            EventMask::CREATE,
            EventMask::DELETE,
            EventMask::MOVED_FROM,
            EventMask::MOVED_TO,
            EventMask::ATTRIB,
            EventMask::CREATE | EventMask::ISDIR,
        ] {
            assert!(change(mask), "{mask:?} is a change");
        }
        for mask in [
            EventMask::OPEN,
            EventMask::ACCESS,
            EventMask::MODIFY,
            EventMask::CLOSE_NOWRITE,
        ] {
            assert!(!change(mask), "{mask:?} is not a change");
        }
        for mask in [
            EventMask::Q_OVERFLOW,
            EventMask::IGNORED,
            EventMask::DELETE_SELF,
            EventMask::MOVE_SELF,
        ] {
            assert!(is_change(mask, None, &names), "{mask:?} is a change");
        }
    }

    /// Whether no signal is pending on `signals` once the watcher's task has read what the
    /// kernel queued: the file operations queue their events before this is called, and the
    /// yields let the runtime poll the watcher's descriptor and run its task.
    async fn quiet(signals: &mut mpsc::Receiver<()>) -> bool {
        for _ in 0..200 {
            tokio::task::yield_now().await;
        }
        signals.try_recv().is_err()
    }

    /// Waits for a signal (up to 5 s).
    async fn signalled(signals: &mut mpsc::Receiver<()>) -> bool {
        tokio::time::timeout(Duration::from_secs(5), signals.recv())
            .await
            .is_ok_and(|signal| signal.is_some())
    }

    #[tokio::test]
    async fn a_file_written_next_to_a_watched_one_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "v1").unwrap();
        let (changes, mut signals) = mpsc::channel(1);
        let _watcher = watch_files(std::slice::from_ref(&key), changes).expect("inotify");

        // A log beside it, kept open and written line by line, and the key read: no signal.
        let mut log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        for line in 0..1000 {
            writeln!(log, "line {line}").unwrap();
        }
        let _ = std::fs::read(&key).unwrap();
        assert!(quiet(&mut signals).await, "writes and reads are no change");

        // The key written in place (write and close): a change.
        std::fs::write(&key, "v2").unwrap();
        assert!(signalled(&mut signals).await);
        // Replaced by a rename, as an editor or kubelet does: the new file written beside it is
        // no change of the key, the rename is.
        std::fs::write(dir.path().join(".key.tmp"), "v3").unwrap();
        assert!(quiet(&mut signals).await);
        std::fs::rename(dir.path().join(".key.tmp"), &key).unwrap();
        assert!(signalled(&mut signals).await);
    }

    /// Runs [`reload_on_change`] in the background, counting its reloads; the sender, the count
    /// and the task (stopped by aborting it).
    fn counted() -> (
        mpsc::Sender<()>,
        Arc<AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::channel(1);
        let reloads = Arc::new(AtomicUsize::new(0));
        let count = reloads.clone();
        let reload = move || {
            count.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        };
        let task = tokio::spawn(reload_on_change(
            rx,
            POLL_INTERVAL,
            DEBOUNCE,
            reload,
            std::future::pending(),
        ));
        (tx, reloads, task)
    }

    /// Lets the loop run for `d` of paused time.
    async fn run_for(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_is_read_once_after_the_debounce() {
        let (tx, reloads, task) = counted();
        let start = Instant::now();
        // 1,000 signals 1 ms apart, as a watcher would send them (the channel holds one).
        for _ in 0..1000 {
            let _ = tx.try_send(());
            run_for(Duration::from_millis(1)).await;
        }
        run_for(DEBOUNCE).await;
        // One reload per debounce interval at most (about 1 s of signals: 5 reloads, not 1,000).
        let intervals = start.elapsed().as_millis() / DEBOUNCE.as_millis();
        let after_burst = reloads.load(Ordering::SeqCst);
        assert!(
            (1..=intervals as usize).contains(&after_burst),
            "{after_burst} reloads in {intervals} intervals"
        );
        let _ = tx.try_send(());
        run_for(DEBOUNCE / 2).await;
        assert_eq!(
            reloads.load(Ordering::SeqCst),
            after_burst,
            "not before the debounce"
        );
        run_for(DEBOUNCE).await;
        assert_eq!(reloads.load(Ordering::SeqCst), after_burst + 1);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn without_changes_the_files_are_read_every_poll_interval() {
        let (_tx, reloads, task) = counted();
        run_for(POLL_INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(
            reloads.load(Ordering::SeqCst),
            0,
            "the start read the files"
        );
        run_for(POLL_INTERVAL * 3).await;
        assert_eq!(reloads.load(Ordering::SeqCst), 3);
        task.abort();
    }
}
