//! Watching secret files for rotation: which filesystem events are changes, the debounce, and
//! the loop that reloads on a change and every [`POLL_INTERVAL`] in any case.
//!
//! The directory of each secret file is watched, since kubelet rotates a secret volume by
//! swapping the `..data` symlink inside it. The gateway's own reads of the files are events in
//! that directory too (open, access, close without writing): they are not changes, or every
//! read would cause the next. Nor is a change of another file in the directory (a log written
//! next to the config file): only events naming a watched file, or kubelet's `..`-prefixed
//! entries, count. A burst of changes (truncate, write, close; rename and create) is read once,
//! [`DEBOUNCE`] after its first event.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{interval_at, sleep, Instant, MissedTickBehavior};

/// How often file-based secrets are re-read even when no change was signalled.
pub const POLL_INTERVAL: Duration = Duration::from_secs(30);

/// How long after the first change of a burst the files are read: the rest of a rotation
/// (kubelet's rename and create, an editor's truncate and write) lands within it. At most one
/// reload per this interval, however many events arrive.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Whether a filesystem event may have changed a secret: content written (or a written file
/// closed), a file created, renamed or removed, metadata other than access times (a `chmod` may
/// make an unreadable file readable), events lost by the watcher (a rescan), or an event the
/// platform cannot classify. Never a read: an open, an access, a close without writing.
pub fn is_change(event: &Event) -> bool {
    match &event.kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Other => event.need_rescan(),
    }
}

/// Whether an event concerns one of the watched files (by their names, `names`): it names one,
/// or an entry of kubelet's atomic writer (`..data`, `..2024_…`, through which a mounted
/// Secret's or ConfigMap's files change), or no file at all (a rescan, an unclassified event).
pub fn concerns(event: &Event, names: &BTreeSet<OsString>) -> bool {
    event.paths.is_empty()
        || event.need_rescan()
        || event.paths.iter().any(|path| {
            path.file_name().is_some_and(|name| {
                names.contains(name) || name.as_encoded_bytes().starts_with(b"..")
            })
        })
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
/// [`is_change`] and [`concerns`] them (or the watcher fails). The channel should hold one
/// signal: one that comes while another is pending is merged into it. `None`, after a warning,
/// when the platform cannot watch them: polling only.
pub(crate) fn watch_files(
    files: &[PathBuf],
    changes: mpsc::Sender<()>,
) -> Option<RecommendedWatcher> {
    let (dirs, names) = dirs_and_names(files);
    let signal = move |event: notify::Result<Event>| {
        if event
            .as_ref()
            .map_or(true, |e| is_change(e) && concerns(e, &names))
        {
            let _ = changes.try_send(());
        }
    };
    let watcher = notify::recommended_watcher(signal).and_then(|mut watcher| {
        for dir in &dirs {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        Ok(watcher)
    });
    watcher
        .inspect_err(|error| {
            tracing::warn!(%error, "cannot watch secret directories; polling only");
        })
        .ok()
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
    use notify::event::{CreateKind, DataChange, Flag, RemoveKind, RenameMode};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn only_events_of_the_watched_files_or_kubelets_swaps_concern_them() {
        let (dirs, names) = dirs_and_names(&[
            PathBuf::from("/etc/gw/config.toml"),
            PathBuf::from("/etc/gw/key"),
            PathBuf::from("secret"),
        ]);
        assert_eq!(dirs, [PathBuf::from("/etc/gw"), PathBuf::from(".")]);
        let at = |paths: &[&str]| {
            let mut event = Event::new(EventKind::Modify(ModifyKind::Any));
            for path in paths {
                event = event.add_path(PathBuf::from(path));
            }
            concerns(&event, &names)
        };
        assert!(at(&["/etc/gw/config.toml"]));
        assert!(at(&["/etc/gw/.config.toml.swp", "/etc/gw/config.toml"]));
        assert!(at(&["/etc/gw/..data"]));
        assert!(at(&["/etc/gw/..2026_12_02_18_00_00.123"]));
        assert!(at(&["./secret"]));
        assert!(at(&[]));
        assert!(!at(&["/etc/gw/gateway.log"]));
        assert!(!at(&[
            "/etc/gw/config.toml.bak",
            "/etc/gw/.config.toml.swp"
        ]));
    }

    #[test]
    fn only_changes_trigger_a_reload() {
        let change = |kind| is_change(&Event::new(kind));
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Remove(RemoveKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Permissions)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Any,
        ] {
            assert!(change(kind), "{kind:?} is a change");
        }
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Any),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
            EventKind::Other,
        ] {
            assert!(!change(kind), "{kind:?} is not a change");
        }
        assert!(is_change(
            &Event::new(EventKind::Other).set_flag(Flag::Rescan)
        ));
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
