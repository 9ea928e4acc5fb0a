//! Figures: each instance's newest figures for the admin console (see
//! [`backplane::figures`](crate::backplane)), under its own [`STATS`](super::keys::STATS) key.
//! The key expires [`LIVENESS`] after its last write, as the liveness key does, so an instance
//! that dies is forgotten within that time, and so is one that stops, its last figures saying
//! `draining` meanwhile (a drain is often over before the next period: removing the key would
//! hide it). They are read only by an open console's stream, and written once a second:
//! nothing of it travels on the bus.

use std::sync::Arc;

use redis::AsyncCommands;

use super::instance::Cluster;
use super::keys::{LIVENESS, unavailable};
use crate::registry::RegistryError;

impl Cluster {
    /// Keeps `figures` (JSON) as this instance's newest for another [`LIVENESS`].
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached.
    pub(crate) async fn report_figures(&self, figures: &str) -> Result<(), RegistryError> {
        redis::cmd("SET")
            .arg(self.keys.stats(self.instance))
            .arg(figures)
            .arg("PX")
            .arg(LIVENESS.as_millis() as u64)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    /// The newest figures of every other instance alive, by instance id.
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached.
    pub(crate) async fn figures_elsewhere(&self) -> Result<Vec<Arc<str>>, RegistryError> {
        let here = self.keys.stats(self.instance);
        let mut keys = self
            .conn
            .keys_matching(self.keys.all_stats())
            .await
            .map_err(unavailable)?;
        keys.retain(|key| *key != here);
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        keys.sort_unstable();
        let figures: Vec<Option<String>> =
            self.conn.clone().mget(&keys).await.map_err(unavailable)?;
        // A key that expired between the scan and the read is an instance gone meanwhile.
        Ok(figures.into_iter().flatten().map(Arc::from).collect())
    }
}
