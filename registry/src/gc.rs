//! Garbage collection of blobs: deleting the bytes that no function version and no model
//! version of any tenant uses any more, and never a blob that one still uses.
//!
//! A reference to a blob is only ever created by a write transaction that finds the blob owned
//! by the tenant (`tenant_blobs`). Collection therefore goes in three steps:
//! 1. in one write transaction, pick the unused blobs and *mark* them: their owners are
//!    forgotten, so from the commit on nothing can come to use them (a deploy or model push
//!    naming one answers "not found", an upload of the same bytes answers 409 until step 3);
//! 2. delete the bytes from the blob store;
//! 3. forget the marked blob.
//!
//! A crash between the steps leaves a marked blob, which the next collection finishes. A blob
//! that a tenant uploaded (or uploaded again) within the grace period is spared, so that an
//! upload followed by a deploy never loses its blob in between.

use crate::{Registry, RegistryError, now};

/// Blobs one collection marks at most (the next collection takes the rest).
const BATCH: usize = 1000;

impl Registry {
    /// Collects unused blobs (see the module doc) and returns the sha256 of those deleted. Safe
    /// to run on many nodes at once.
    pub async fn collect_garbage(&self) -> Result<Vec<String>, RegistryError> {
        let grace = self.inner.blob_gc_grace;
        let marked = self
            .db()
            .write(move |sql| {
                let now = now();
                // Recorded at or after this -> spared.
                let spare_from = if grace.is_zero() {
                    i64::MAX
                } else {
                    now.saturating_sub(i64::try_from(grace.as_secs()).unwrap_or(i64::MAX))
                };
                // Left marked by an earlier collection that did not finish.
                let mut marked = sql.blobs_being_deleted()?;
                for sha256 in sql.unused_blobs(spare_from, BATCH)? {
                    sql.mark_blob_deleting(&sha256, now)?;
                    marked.push(sha256);
                }
                Ok(marked)
            })
            .await?;
        let mut collected = Vec::with_capacity(marked.len());
        for sha256 in marked {
            if let Err(error) = self.blobs().delete(&sha256).await {
                tracing::warn!(sha256, %error, "cannot delete an unused blob; the next collection retries");
                continue;
            }
            let forget = sha256.clone();
            self.db().write(move |sql| sql.forget_blob(&forget)).await?;
            tracing::info!(sha256, "collected unused blob");
            collected.push(sha256);
        }
        Ok(collected)
    }
}
