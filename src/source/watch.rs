//! Watching a course folder: any change wakes the reconciler, so an edited
//! file applies in well under a resync. Events are debounced: an editor's
//! save (write, rename, chmod…) becomes one wake.

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

/// Quiet time after the last change before waking.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Watches `folder` (recursively) and calls `wake` after each burst of
/// changes. Keep the returned watcher alive for as long as it should watch.
/// Needs a tokio runtime.
pub fn watch_folder(
    folder: &Path,
    wake: impl Fn() + Send + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let interesting = event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_)));
        if interesting {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(folder, RecursiveMode::Recursive)?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Swallow the rest of the burst: wake once it has been quiet.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {}
            wake();
        }
    });
    Ok(watcher)
}
