//! Reload on a change of the config file, besides SIGHUP: the file's directory is watched as
//! the secret files' are ([`crate::credentials::watch`]: kubelet's symlink swap, an editor's
//! rename, a debounce, a poll every 30 s), and a change reloads only when the file's content
//! differs from the last seen (its hash), so that the poll and mere reads reload nothing.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::{config_hash, Reload};
use crate::credentials::watch;

/// Watches the config file at `path` and reloads through `reloader` when its content changes,
/// until `shutdown` resolves. The file is hashed and its directory watched before this returns:
/// a change made once the gateway has started is never missed.
pub fn watch_config_file(
    path: PathBuf,
    reloader: Arc<dyn Reload>,
    shutdown: impl Future<Output = ()>,
) -> impl Future<Output = ()> {
    let seen = Arc::new(Mutex::new(config_hash(Some(&path))));
    let (changes, signals) = mpsc::channel(1);
    let watcher = watch::watch_files(std::slice::from_ref(&path), changes);
    let reload = move || {
        let (path, seen, reloader) = (path.clone(), seen.clone(), reloader.clone());
        async move {
            let hash = hash_of(&path).await;
            let last = std::mem::replace(
                &mut *seen.lock().unwrap_or_else(PoisonError::into_inner),
                hash.clone(),
            );
            if last != hash {
                tracing::info!(file = %path.display(), "config file changed: reloading");
                reloader.reload().await;
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

/// [`config_hash`] of the file, read off the runtime's workers.
async fn hash_of(path: &Path) -> String {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || config_hash(Some(&path)))
        .await
        .unwrap_or_default()
}
