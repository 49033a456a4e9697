//! Sending one mailbox's writes: `$batch` of 20 (one batch in flight per mailbox), booking each answer into the
//! records, re-creating a contact the owner deleted, photos in a second pass, and removing a departing mailbox's
//! contacts.

use std::collections::HashMap;

use serde_json::Value;

use super::contact::create_body;
use super::mailbox_sync::{Fanout, MailboxRun, Op, failure};
use super::records::MailboxState;
use crate::m365::batch::{BatchRequest, BatchResponse, MAX_BATCH_SIZE};
use crate::m365::{GraphClient, GraphError};
use crate::report::Failure;

/// Photo uploads per `$batch` (base64 bodies: keep batches well under Graph's request size limit).
const PHOTOS_PER_BATCH: usize = 4;

impl Fanout {
    /// Deletes every recorded contact of a mailbox leaving the selection; returns how many went.
    pub async fn remove_all(&self, mailbox: &str, state: &MailboxState) -> Result<u64, Failure> {
        remove_recorded(&self.graph, mailbox, state).await
    }
}

/// Deletes every contact recorded for a mailbox (a contact already gone counts as removed); returns how many went.
pub async fn remove_recorded(
    graph: &GraphClient,
    mailbox: &str,
    state: &MailboxState,
) -> Result<u64, Failure> {
    let as_failure = |kind: &str, reason: String| Failure {
        anchor: None,
        mailbox: Some(mailbox.to_owned()),
        kind: kind.into(),
        reason,
    };
    let requests: Vec<BatchRequest> = state
        .contacts
        .values()
        .enumerate()
        .map(|(index, record)| {
            BatchRequest::delete_contact(index.to_string(), mailbox, &record.contact_id)
        })
        .collect();
    let answers = match graph.batch(Some(mailbox), requests).await {
        Ok(answers) => answers,
        Err(GraphError::MailboxNotEnabledForRest { .. }) => {
            return Err(as_failure(
                "mailbox_not_rest_enabled",
                "not enabled for REST: its contacts stay".into(),
            ));
        }
        Err(error) => return Err(as_failure("graph_error", error.to_string())),
    };
    let mut removed = 0;
    for answer in &answers {
        if answer.is_success() || answer.status == 404 {
            removed += 1;
        } else if answer.is_mailbox_not_enabled() {
            return Err(as_failure(
                "mailbox_not_rest_enabled",
                "not enabled for REST: its contacts stay".into(),
            ));
        } else {
            return Err(as_failure(
                "graph_error",
                format!("removing the mailbox's contacts: HTTP {}", answer.status),
            ));
        }
    }
    Ok(removed)
}

impl MailboxRun<'_> {
    pub(super) async fn execute(&mut self, ops: Vec<Op>) -> Result<(), GraphError> {
        let mut recreate = Vec::new();
        let mut ops = ops.into_iter().peekable();
        while ops.peek().is_some() {
            // Requests (and create bodies) are built one batch at a time, so a mailbox in flight holds 20, not all.
            let mut requests = Vec::with_capacity(MAX_BATCH_SIZE);
            let mut by_id: HashMap<String, Op> = HashMap::with_capacity(MAX_BATCH_SIZE);
            while requests.len() < MAX_BATCH_SIZE
                && let Some(mut op) = ops.next()
            {
                let id = by_id.len().to_string();
                let mailbox = &self.mailbox.id;
                // A patch body moves into the request (booking an answer never reads it), so it is not cloned.
                let request = match &mut op {
                    Op::Create { anchor } => {
                        let Some(want) = self.fanout.desired.get(anchor.as_str()) else {
                            continue;
                        };
                        let body = create_body(&want.props, self.categories(), anchor);
                        BatchRequest::create_contact(&id, mailbox, self.folder(), body)
                    }
                    Op::Patch {
                        contact_id, body, ..
                    } => {
                        BatchRequest::patch_contact(&id, mailbox, contact_id, std::mem::take(body))
                    }
                    Op::Delete { contact_id, .. } => {
                        BatchRequest::delete_contact(&id, mailbox, contact_id)
                    }
                    Op::Photo {
                        anchor, contact_id, ..
                    } => {
                        self.photo_queue.push((anchor.clone(), contact_id.clone()));
                        continue;
                    }
                };
                requests.push(request);
                by_id.insert(id, op);
            }
            if requests.is_empty() {
                continue;
            }
            let answers = self
                .fanout
                .graph
                .batch(Some(&self.mailbox.id), requests)
                .await?;
            for answer in answers {
                let Some(op) = by_id.remove(&answer.id) else {
                    continue;
                };
                if answer.is_mailbox_not_enabled() {
                    return Err(GraphError::MailboxNotEnabledForRest {
                        mailbox: self.mailbox.upn.clone(),
                    });
                }
                if let Some(anchor) = self.landed(op, &answer) {
                    recreate.push(anchor);
                }
            }
            self.flush_records().await;
        }
        if !recreate.is_empty() {
            // Drift seen during an incremental write: the owner deleted a managed contact; it comes back now.
            let ops = recreate
                .into_iter()
                .filter(|anchor| self.fanout.desired.contains_key(anchor))
                .map(|anchor| Op::Create { anchor })
                .collect();
            Box::pin(self.execute(ops)).await?;
        }
        self.upload_photos().await
    }

    /// Books one answer; returns the anchor when the contact turned out to be gone and must be created again.
    fn landed(&mut self, op: Op, answer: &BatchResponse) -> Option<String> {
        let gone = answer.status == 404;
        match op {
            Op::Create { anchor, .. } if answer.is_success() => {
                let contact_id = answer
                    .body
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.outcome.applied.creates += 1;
                self.after_write(&anchor, &contact_id, true);
            }
            Op::Patch {
                anchor,
                contact_id,
                adopt,
                photo,
                ..
            } if answer.is_success() => {
                if adopt {
                    self.outcome.applied.adoptions += 1;
                } else {
                    self.outcome.applied.updates += 1;
                }
                self.after_write(&anchor, &contact_id, photo);
            }
            Op::Patch { anchor, .. } if gone => {
                self.changes.put.remove(&anchor);
                self.changes.forget.push(anchor.clone());
                return Some(anchor);
            }
            Op::Delete { anchor, forget, .. } if answer.is_success() || gone => {
                self.outcome.applied.deletes += 1;
                if forget {
                    self.changes.forget.push(anchor);
                }
            }
            Op::Create { anchor, .. }
            | Op::Patch { anchor, .. }
            | Op::Delete { anchor, .. }
            | Op::Photo { anchor, .. } => {
                let reason = format!(
                    "HTTP {} {}: {}",
                    answer.status,
                    answer.error_code().unwrap_or(""),
                    answer.error_message().unwrap_or("")
                );
                let kind = if answer.status == 429 || answer.status == 503 {
                    "throttled"
                } else {
                    "graph_error"
                };
                self.outcome
                    .failures
                    .push(failure(self.mailbox, Some(&anchor), kind, reason));
            }
        }
        None
    }

    /// After a create or patch landed: record it, or queue its photo first.
    fn after_write(&mut self, anchor: &str, contact_id: &str, photo: bool) {
        let wants_photo = self
            .fanout
            .desired
            .get(anchor)
            .is_some_and(|want| want.photo.is_some());
        if photo && wants_photo && self.fanout.photos.is_some() {
            self.photo_queue
                .push((anchor.to_owned(), contact_id.to_owned()));
        } else {
            let uploaded = self.uploaded_photo(anchor);
            self.remember(anchor, contact_id, uploaded);
        }
    }

    async fn upload_photos(&mut self) -> Result<(), GraphError> {
        let Some(cache) = self.fanout.photos.as_deref() else {
            return Ok(());
        };
        let queue = std::mem::take(&mut self.photo_queue);
        for chunk in queue.chunks(PHOTOS_PER_BATCH) {
            let mut requests = Vec::new();
            for (index, (anchor, contact_id)) in chunk.iter().enumerate() {
                match cache.get(anchor).await {
                    Ok(Some(bytes)) => requests.push(BatchRequest::put_contact_photo(
                        index.to_string(),
                        &self.mailbox.id,
                        contact_id,
                        &bytes,
                    )),
                    Ok(None) => {
                        let uploaded = self.uploaded_photo(anchor);
                        self.remember(anchor, contact_id, uploaded);
                    }
                    Err(error) => {
                        let uploaded = self.uploaded_photo(anchor);
                        self.remember(anchor, contact_id, uploaded);
                        self.outcome.failures.push(failure(
                            self.mailbox,
                            Some(anchor),
                            "source_photo",
                            error.to_string(),
                        ));
                    }
                }
            }
            if requests.is_empty() {
                continue;
            }
            let answers = self
                .fanout
                .graph
                .batch(Some(&self.mailbox.id), requests)
                .await?;
            for answer in answers {
                let Some((anchor, contact_id)) = answer
                    .id
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| chunk.get(index))
                else {
                    continue;
                };
                if answer.is_success() {
                    let photo = self
                        .fanout
                        .desired
                        .get(anchor)
                        .and_then(|w| w.photo.clone());
                    self.remember(anchor, contact_id, photo);
                } else {
                    let uploaded = self.uploaded_photo(anchor);
                    self.remember(anchor, contact_id, uploaded);
                    self.outcome.failures.push(failure(
                        self.mailbox,
                        Some(anchor),
                        "photo_upload",
                        format!(
                            "HTTP {} {}",
                            answer.status,
                            answer.error_code().unwrap_or("")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
