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

    /// The newest figures of every other instance alive, by instance id: one `MGET` of the
    /// figures keys of the instances [`known`](super::liveness::Liveness::known), no scan.
    ///
    /// # Errors
    /// `Unavailable` when Redis cannot be reached.
    pub(crate) async fn figures_elsewhere(&self) -> Result<Vec<Arc<str>>, RegistryError> {
        let mut keys: Vec<String> = self
            .liveness
            .known()
            .await?
            .into_iter()
            .filter(|instance| *instance != self.instance)
            .map(|instance| self.keys.stats(instance))
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        keys.sort_unstable();
        let figures: Vec<Option<String>> =
            self.conn.clone().mget(&keys).await.map_err(unavailable)?;
        // An instance gone since it was listed has no figures key any more.
        Ok(figures.into_iter().flatten().map(Arc::from).collect())
    }
}
