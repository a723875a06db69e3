//! Directory mode's Lease: a JSON file in a directory every replica shares, with the API
//! server's rules (a create fails when it exists, a replace when its `resourceVersion`
//! moved on) kept by an exclusive lock held around each read-check-write.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;

use super::store::{LeaseStore, StoreError};

/// A Lease kept as `<dir>/lease-<name>.json`.
#[derive(Clone)]
pub struct FileLeases {
    path: PathBuf,
    lock: PathBuf,
}

impl FileLeases {
    /// The Lease `name` in `dir` (created when needed).
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            path: dir.join(format!("lease-{name}.json")),
            lock: dir.join(format!("lease-{name}.lock")),
        }
    }

    /// Runs `f` on the Lease while holding the lock; writes what it returns.
    fn locked(
        &self,
        f: impl FnOnce(Option<Lease>) -> Result<Option<Lease>, StoreError>,
    ) -> Result<Option<Lease>, StoreError> {
        let failed = |what: &str, e: std::io::Error| {
            StoreError::Failed(format!("{what} {}: {e}", self.path.display()))
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| failed("creating the directory of", e))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| failed("locking", e))?;
        lock.lock().map_err(|e| failed("locking", e))?;
        let current = match std::fs::read(&self.path) {
            Ok(bytes) => Some(serde_json::from_slice::<Lease>(&bytes).map_err(|e| {
                StoreError::Failed(format!(
                    "{}: not a Lease ({e}); delete it and the replicas elect afresh",
                    self.path.display()
                ))
            })?),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(failed("reading", e)),
        };
        let written = f(current.clone())?;
        if let Some(lease) = &written {
            let text = serde_json::to_vec_pretty(lease)
                .map_err(|e| StoreError::Failed(format!("encoding the Lease: {e}")))?;
            let tmp = self.path.with_extension("json.tmp");
            std::fs::write(&tmp, text).map_err(|e| failed("writing", e))?;
            std::fs::rename(&tmp, &self.path).map_err(|e| failed("writing", e))?;
        }
        drop::<File>(lock);
        Ok(written.or(current))
    }

    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileLeases) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let me = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&me))
                .await
                .map_err(|e| StoreError::Failed(format!("lease file task: {e}")))?
        })
    }
}

/// `lease` as written after `current` (its `resourceVersion` one on).
fn next_version(lease: &Lease, current: Option<&Lease>) -> Lease {
    let n = current
        .and_then(|c| c.metadata.resource_version.as_deref())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let mut lease = lease.clone();
    lease.metadata.resource_version = Some((n + 1).to_string());
    lease
}

impl LeaseStore for FileLeases {
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, StoreError>> {
        self.blocking(|me| me.locked(|_| Ok(None)))
    }

    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), StoreError>> {
        let lease = lease.clone();
        self.blocking(move |me| {
            me.locked(|current| match current {
                Some(_) => Err(StoreError::Conflict),
                None => Ok(Some(next_version(&lease, None))),
            })
            .map(|_| ())
        })
    }

    fn replace<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), StoreError>> {
        let lease = lease.clone();
        self.blocking(move |me| {
            me.locked(|current| match current {
                Some(c) if c.metadata.resource_version == lease.metadata.resource_version => {
                    Ok(Some(next_version(&lease, Some(&c))))
                }
                _ => Err(StoreError::Conflict),
            })
            .map(|_| ())
        })
    }

    fn describe(&self) -> String {
        format!("lease file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::watch;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::leader::{LeaderElector, LeaseConfig, holder_address};

    fn config(identity: &str) -> LeaseConfig {
        LeaseConfig {
            renew_every: Duration::from_millis(50),
            retry_every: Duration::from_millis(20),
            address: Some(format!("{identity}.example:8443")),
            ..LeaseConfig::new("braid-system", identity)
        }
    }

    #[tokio::test]
    async fn writes_follow_the_api_servers_rules() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLeases::new(dir.path(), "braid-operator");
        assert!(store.get().await.unwrap().is_none());
        let lease = Lease::default();
        store.create(&lease).await.unwrap();
        assert!(matches!(
            store.create(&lease).await,
            Err(StoreError::Conflict)
        ));
        let read = store.get().await.unwrap().unwrap();
        assert_eq!(read.metadata.resource_version.as_deref(), Some("1"));
        store.replace(&read).await.unwrap();
        // A second replace from the same read is stale.
        assert!(matches!(
            store.replace(&read).await,
            Err(StoreError::Conflict)
        ));
        assert_eq!(
            store
                .get()
                .await
                .unwrap()
                .unwrap()
                .metadata
                .resource_version
                .as_deref(),
            Some("2")
        );
    }

    #[tokio::test]
    async fn two_replicas_given_one_identity_do_not_both_lead() {
        let dir = tempfile::tempdir().unwrap();
        let store = || Arc::new(FileLeases::new(dir.path(), "braid-operator"));
        let mut a = config("same");
        a.address = Some("10.0.0.1:8443".into());
        let mut b = config("same");
        b.address = Some("10.0.0.2:8443".into());
        let first = LeaderElector::with_store(store(), a);
        assert!(first.step(false).await.unwrap());
        let second = LeaderElector::with_store(store(), b);
        let err = second.step(false).await.unwrap_err();
        assert!(err.to_string().contains("--pod-name"), "{err}");
        // The first goes on leading.
        assert!(first.step(true).await.unwrap());
    }

    #[tokio::test]
    async fn of_two_replicas_one_leads_and_the_other_takes_over_when_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let elector = |id: &str| {
            LeaderElector::with_store(
                Arc::new(FileLeases::new(dir.path(), "braid-operator")),
                config(id),
            )
        };
        let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
        let (a_tx, mut a) = watch::channel(false);
        let (b_tx, b) = watch::channel(false);
        let task_a = tokio::spawn(elector("a").run(a_tx, stop_a.clone()));
        a.wait_for(|l| *l).await.unwrap();
        let task_b = tokio::spawn(elector("b").run(b_tx, stop_b.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(*a.borrow() && !*b.borrow(), "exactly one leads");
        let store = FileLeases::new(dir.path(), "braid-operator");
        let lease = store.get().await.unwrap().unwrap();
        assert_eq!(holder_address(&lease), Some("a.example:8443"));
        // a stops and releases the Lease: b leads at once, not after 15 s.
        stop_a.cancel();
        task_a.await.unwrap();
        let mut b = b;
        tokio::time::timeout(Duration::from_secs(2), b.wait_for(|l| *l))
            .await
            .expect("b takes over a released lease")
            .unwrap();
        let lease = store.get().await.unwrap().unwrap();
        assert_eq!(holder_address(&lease), Some("b.example:8443"));
        stop_b.cancel();
        task_b.await.unwrap();
    }
}
