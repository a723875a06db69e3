//! Directory mode: statuses as files, `<dir>/.status/<kind>.<namespace>.<name>.yaml`
//! (the source ignores dot-directories), and events as log lines.

use std::path::PathBuf;

use futures::future::BoxFuture;

use super::{Event, StatusError, StatusSink, StatusUpdate};
use crate::registry::{Kind, ObjectKey};

/// Writes each status to its own YAML file.
pub struct FileSink {
    dir: PathBuf,
}

impl FileSink {
    /// Writes into `dir`, creating it when needed.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The file holding one resource's status.
    pub fn path(&self, kind: Kind, key: &ObjectKey) -> PathBuf {
        self.dir.join(braid_api::debug::status_file_name(
            kind.as_str(),
            &key.namespace,
            &key.name,
        ))
    }
}

impl StatusSink for FileSink {
    fn apply<'a>(&'a self, update: &'a StatusUpdate) -> BoxFuture<'a, Result<(), StatusError>> {
        Box::pin(async move {
            let path = self.path(update.kind, &update.key);
            let err = |message: String| StatusError {
                what: path.display().to_string(),
                message,
            };
            let doc = serde_json::json!({
                "kind": update.kind.as_str(),
                "metadata": {"namespace": update.key.namespace, "name": update.key.name},
                "status": update.status,
            });
            let text = serde_norway::to_string(&doc).map_err(|e| err(e.to_string()))?;
            tokio::fs::create_dir_all(&self.dir)
                .await
                .map_err(|e| err(e.to_string()))?;
            // Write then rename, so a reader never sees half a file.
            let tmp = path.with_extension("yaml.tmp");
            tokio::fs::write(&tmp, text)
                .await
                .map_err(|e| err(e.to_string()))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| err(e.to_string()))
        })
    }

    fn read<'a>(
        &'a self,
        kind: Kind,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StatusError>> {
        Box::pin(async move {
            let path = self.path(kind, key);
            let err = |message: String| StatusError {
                what: path.display().to_string(),
                message,
            };
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(err(e.to_string())),
            };
            let mut doc: serde_json::Value =
                serde_norway::from_str(&text).map_err(|e| err(e.to_string()))?;
            Ok(doc.get_mut("status").map(serde_json::Value::take))
        })
    }

    fn forget<'a>(&'a self, kind: Kind, key: &'a ObjectKey) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let _ = tokio::fs::remove_file(self.path(kind, key)).await;
        })
    }

    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), StatusError>> {
        if event.warning {
            tracing::warn!(kind = %event.kind, resource = %event.key, reason = %event.reason, "{}", event.note);
        } else {
            tracing::info!(kind = %event.kind, resource = %event.key, reason = %event.reason, "{}", event.note);
        }
        Box::pin(async { Ok(()) })
    }
}
