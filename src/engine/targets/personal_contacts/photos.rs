//! Source photos for one run: fetched from the source tenant (`GET /users/{id}/photo/$value`) once per person and
//! kept for the run, so a photo uploaded to 200 mailboxes is read once. Graph's users delta does not track photos
//! (docs/microsoft-facts.md §2), so photos are read for people whose entry changed and, on a full reconcile, for everyone;
//! the snapshot keeps each photo's hash so an unchanged photo is never uploaded again.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::engine::entry::parse_anchor;
use crate::engine::ports::SourceDirectory;
use crate::m365::{GraphClient, GraphError};

/// Photo bytes by anchor (`None`: the person has no photo).
pub struct PhotoCache {
    source: GraphClient,
    /// A source that keeps its objects' photos itself (a mailbox folder's contacts), asked instead of `source`.
    own_photos: Option<Arc<dyn SourceDirectory>>,
    bytes: Mutex<HashMap<String, Option<Arc<Vec<u8>>>>>,
}

impl PhotoCache {
    pub fn new(source: GraphClient) -> Self {
        PhotoCache {
            source,
            own_photos: None,
            bytes: Mutex::new(HashMap::new()),
        }
    }

    /// Reads photos from `port` when it keeps them itself ([`SourceDirectory::keeps_photos`]).
    pub fn with_source(mut self, port: Arc<dyn SourceDirectory>) -> Self {
        self.own_photos = port.keeps_photos().then_some(port);
        self
    }

    /// The photo of the person behind `anchor` (read once per run).
    pub async fn get(&self, anchor: &str) -> Result<Option<Arc<Vec<u8>>>, GraphError> {
        if let Some(known) = self.bytes.lock().await.get(anchor) {
            return Ok(known.clone());
        }
        let Some((_, user_id)) = parse_anchor(anchor) else {
            return Ok(None);
        };
        let photo = match &self.own_photos {
            Some(port) => port
                .photo(user_id)
                .await
                .map_err(|error| GraphError::Decode {
                    path: "contact photo".into(),
                    message: error.to_string(),
                })?
                .map(Arc::new),
            None => self.source.user_photo(user_id).await?.map(Arc::new),
        };
        self.bytes
            .lock()
            .await
            .insert(anchor.to_owned(), photo.clone());
        Ok(photo)
    }

    /// Photos held (for memory figures).
    pub async fn held_bytes(&self) -> usize {
        self.bytes
            .lock()
            .await
            .values()
            .flatten()
            .map(|photo| photo.len())
            .sum()
    }
}
