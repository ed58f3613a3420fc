//! Seeing the config file change, however it is changed.
//!
//! The *directory* is watched (inotify through the `notify` crate), not the file: an editor
//! that saves by writing a temp file and renaming it over the config replaces the inode a
//! file watch would follow, and a Kubernetes ConfigMap volume swaps a `..data` symlink in the
//! directory while the config's own path (a symlink through `..data`) never changes. Any
//! event in the directory counts as "maybe changed"; after a short quiet period (an editor's
//! save, or the kubelet's swap, is several events) the file is read and compared with the text
//! last seen, so only a real change of content reloads, and events about other files in the
//! directory cost one read.
//!
//! When the watch cannot be set up (no inotify instances left, say) the daemon logs it and
//! runs without: `SIGHUP` (`systemctl reload`) still reloads.

use notify::Watcher as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long events must pause before the file is read.
const SETTLE: Duration = Duration::from_millis(300);

pub struct ConfigWatch {
    path: PathBuf,
    /// The content last loaded or seen.
    last: Option<Vec<u8>>,
    events: Option<mpsc::Receiver<()>>,
    /// Kept alive for as long as events are wanted.
    _watcher: Option<notify::RecommendedWatcher>,
}

impl ConfigWatch {
    /// Watch `path`'s directory; `text` is what was loaded at start.
    pub fn start(path: &Path, text: &str) -> ConfigWatch {
        let (tx, rx) = mpsc::channel(1);
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                // Full means a wake-up is pending already: the events coalesce.
                let _ = tx.try_send(());
            }
        })
        .and_then(|mut w| {
            w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        let (watcher, events) = match watcher {
            Ok(w) => (Some(w), Some(rx)),
            Err(e) => {
                tracing::warn!(
                    dir = %dir.display(),
                    "cannot watch the config's directory ({e}); reload with SIGHUP instead"
                );
                (None, None)
            }
        };
        ConfigWatch {
            path: path.to_path_buf(),
            last: Some(text.as_bytes().to_vec()),
            events,
            _watcher: watcher,
        }
    }

    /// No file to watch (flag mode): [`ConfigWatch::changed`] never resolves.
    pub fn disabled() -> ConfigWatch {
        ConfigWatch {
            path: PathBuf::new(),
            last: None,
            events: None,
            _watcher: None,
        }
    }

    /// Resolves when the file's content differs from the last one seen (never, without a
    /// watch).
    pub async fn changed(&mut self) {
        let Some(events) = self.events.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            if events.recv().await.is_none() {
                return std::future::pending().await;
            }
            // Let the burst of one save or swap pass.
            loop {
                tokio::select! {
                    more = events.recv() => if more.is_none() { break },
                    _ = tokio::time::sleep(SETTLE) => break,
                }
            }
            let now = read(&self.path).await;
            if now != self.last {
                self.last = now;
                return;
            }
        }
    }

    /// A reload (by signal or by a change) read the file: what it holds now counts as seen.
    pub async fn loaded(&mut self) {
        self.last = read(&self.path).await;
    }
}

/// The file's bytes; `None` while it cannot be read (between a kubelet's swap steps, say):
/// a config that vanishes and comes back unchanged is then one reload, which is harmless.
async fn read(path: &Path) -> Option<Vec<u8>> {
    tokio::fs::read(path).await.ok()
}
