//! Reload on a change of the config file, besides SIGHUP: the file is watched as the secret
//! files are ([`crate::credentials::watch`]: its directory, events naming it or kubelet's symlink
//! swap, an editor's rename, a debounce, a poll every 30 s), and a change reloads only when the
//! file's content differs from the last read by any reload ([`Reload::reload_if_changed`]), so
//! that the poll, a touch, or a change SIGHUP already reloaded reload nothing.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Reload;
use crate::credentials::watch;

/// Watches the config file at `path` and reloads through `reloader` when its content changes,
/// until `shutdown` resolves. The file is watched before this returns: a change made once the
/// gateway has started is never missed.
pub fn watch_config_file(
    path: PathBuf,
    reloader: Arc<dyn Reload>,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    let (changes, signals) = mpsc::channel(1);
    let watcher = watch::watch_files(std::slice::from_ref(&path), changes);
    let reload = move || {
        let (path, reloader) = (path.clone(), reloader.clone());
        async move {
            if let Some(outcome) = reloader.reload_if_changed().await {
                let outcome = outcome.label();
                tracing::info!(file = %path.display(), outcome, "config file changed");
            }
        }
    };
    async move {
        // Kept until the loop ends: dropping the watcher stops it.
        let _watcher = watcher;
        watch::reload_on_change(
            signals,
            watch::POLL_INTERVAL,
            watch::DEBOUNCE,
            reload,
            shutdown,
        )
        .await;
    }
}
