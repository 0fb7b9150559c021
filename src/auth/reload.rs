//! One way to keep a value loaded from files (or a URL) current: the policy, the listener's TLS
//! configuration and the JWKS are each a [`Reloadable`], and one watcher refreshes them all on
//! an interval and on SIGHUP. A value that fails to load is logged and the one in force stays.

use std::{
    fmt::Display,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use tokio::time::Instant;
use tracing::{error, info};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type Loader<T, E> = Box<dyn Fn() -> BoxFuture<'static, Result<T, E>> + Send + Sync>;

/// When a value is due to be loaded again.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// When any of these files changes (or is replaced).
    Files(Vec<PathBuf>),
    /// Every period (a URL, which has no change to watch).
    Every(Duration),
}

/// What tells a changed file apart: modification time, inode and size. The time alone is
/// not enough: two writes within one clock tick share it, and an atomic replace (write a new
/// file, rename it over the old one) always changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    inode: u64,
    len: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        modified: meta.modified().ok(),
        inode: meta.ino(),
        len: meta.len(),
    })
}

/// What the last load saw, to tell whether the next one is due.
enum Seen {
    Files(Vec<Option<Fingerprint>>),
    At(Instant),
}

/// A value replaced whole when its source changes and still loads.
pub struct Reloadable<T, E> {
    what: &'static str,
    trigger: Trigger,
    load: Loader<T, E>,
    value: RwLock<Arc<T>>,
    seen: Mutex<Seen>,
}

impl<T: Send + Sync + 'static, E: Display + Send + 'static> Reloadable<T, E> {
    /// Loads the value once; fails when it cannot. `what` names it in log lines.
    pub async fn new<F, Fut>(what: &'static str, trigger: Trigger, load: F) -> Result<Self, E>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let load: Loader<T, E> = Box::new(move || Box::pin(load()));
        let seen = Mutex::new(observe(&trigger));
        let value = load().await?;
        Ok(Self {
            what,
            trigger,
            load,
            value: RwLock::new(Arc::new(value)),
            seen,
        })
    }

    pub fn get(&self) -> Arc<T> {
        Arc::clone(&self.value.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Loads again when due (or always, when `forced`); keeps the value in force when the new
    /// one does not load. A source that failed is not retried until it changes again.
    pub async fn refresh(&self, forced: bool) {
        let now = observe(&self.trigger);
        let due = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            let due = match (&*seen, &now, &self.trigger) {
                (Seen::Files(before), Seen::Files(after), _) => before != after,
                (Seen::At(at), _, Trigger::Every(period)) => at.elapsed() >= *period,
                _ => true,
            };
            if forced || due {
                *seen = now;
            }
            forced || due
        };
        if !due {
            return;
        }
        match (self.load)().await {
            Ok(value) => {
                *self.value.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(value);
                info!("{} reloaded", self.what);
            }
            Err(e) => error!(
                error = %e,
                "{} NOT reloaded: the new one is invalid; the one in force stays",
                self.what
            ),
        }
    }
}

fn observe(trigger: &Trigger) -> Seen {
    match trigger {
        Trigger::Files(paths) => Seen::Files(paths.iter().map(|p| fingerprint(p)).collect()),
        Trigger::Every(_) => Seen::At(Instant::now()),
    }
}

/// Anything the watcher keeps current.
pub trait Refresh: Send + Sync {
    fn refresh_now(&self, forced: bool) -> BoxFuture<'_, ()>;
}

impl<T: Send + Sync + 'static, E: Display + Send + 'static> Refresh for Reloadable<T, E> {
    fn refresh_now(&self, forced: bool) -> BoxFuture<'_, ()> {
        Box::pin(self.refresh(forced))
    }
}

/// Refreshes every item each `interval`, and all of them at once on SIGHUP. Runs for ever.
pub async fn watch(items: Vec<Arc<dyn Refresh>>, interval: Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    if items.is_empty() {
        return;
    }
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(interval);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                info!("SIGHUP received: reloading the policy, TLS files, JWKS and schedule");
                true
            }
        };
        for item in &items {
            item.refresh_now(forced).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    async fn counting(path: PathBuf) -> (Reloadable<String, String>, Arc<AtomicUsize>) {
        let loads = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&loads);
        let file = path.clone();
        let value = Reloadable::new("test file", Trigger::Files(vec![path]), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            async move {
                if text.starts_with("bad") {
                    Err("invalid".to_owned())
                } else {
                    Ok(text)
                }
            }
        })
        .await
        .unwrap();
        (value, loads)
    }

    #[tokio::test]
    async fn a_changed_file_is_loaded_again_and_a_broken_one_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let (value, loads) = counting(path.clone()).await;
        value.refresh(false).await;
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "unchanged: not loaded again"
        );
        std::fs::write(&path, "two!").unwrap();
        value.refresh(false).await;
        assert_eq!(*value.get(), "two!");
        std::fs::write(&path, "bad file").unwrap();
        value.refresh(false).await;
        assert_eq!(*value.get(), "two!", "the value in force stays");
        let before = loads.load(Ordering::SeqCst);
        value.refresh(false).await;
        assert_eq!(
            loads.load(Ordering::SeqCst),
            before,
            "not retried until it changes"
        );
        value.refresh(true).await;
        assert_eq!(loads.load(Ordering::SeqCst), before + 1, "forced");
    }
}
