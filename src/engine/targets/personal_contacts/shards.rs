//! A phones run's mailboxes in shards (issue 17): the run that reads the source (the *dispatcher*) splits the
//! selected mailboxes into shards of `mailboxes_per_shard`, records them as one **generation** in the state store,
//! saves the snapshot the shards compute their desired contacts from, and then either sends one queue message per
//! shard (a shard queue is configured: `PhonesShard` processes each on whatever instance the platform starts) or
//! runs the shards itself, one after another (the CLI, the embedded default). Both go through [`run_shard`].
//!
//! State, in the link's scope [`SHARD_SCOPE`] (never a mailbox: mailbox scopes are user ids):
//! - `generation`: the [`Generation`] (id, mode, shard count, the anchor prefix, the queue it went to, whether every
//!   message was sent);
//! - `shard:{n:05}`: a [`ShardRecord`] per shard: its mailboxes, the ones done (its checkpoint, saved every 10
//!   mailboxes or 5 seconds: a retry skips them), its state, its tries and last error;
//! - `changed:{n:05}`, `held:{n:05}`: the generation's changed-or-departed people and the people the safety net
//!   holds, [`ANCHORS_PER_RECORD`] anchors a record (a large change set stays out of the queue message).
//!
//! A shard takes a lease of its own (`{link}~shard{n}`), so a duplicate delivery never writes the same mailboxes
//! at once; a retry (its record shows an earlier try) reconciles its remaining mailboxes in full, since the try
//! that died may have left contacts without records. A shard that gives up (its last try, or an in-process run that
//! failed) is `failed`; the next dispatch reconciles its unfinished mailboxes in full. A dispatch waits (the run is
//! unfinished, nothing moves) while a queued generation still has shards in flight: pending, not poisoned and not
//! stale ([`SHARD_STALE_AFTER`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument as _;

use super::mailbox_sync::{Fanout, MailboxOutcome, SyncMode, add_counts};
use super::mailboxes::MailboxRef;
use crate::engine::lease::HeldLease;
use crate::queue::{PoisonMessage, ShardQueue};
use crate::report::{Failure, PlanCounts, ShardSetStatus};
use crate::state::{ObjectRecord, StateError, StateStore};

/// The state scope of a link's shard records (mailbox scopes are user ids, never starting with `~`).
pub const SHARD_SCOPE: &str = "~shards";
/// Anchors per `changed:`/`held:` record (about 45 KB of anchors: well within one Table Storage entity).
pub const ANCHORS_PER_RECORD: usize = 500;
/// The version of the queue message format ([`ShardMessage`]).
pub const MESSAGE_VERSION: u32 = 1;
/// How many tries the host gives a message before it moves it to the poison queue (host.json
/// `extensions.queues.maxDequeueCount`, the Functions default).
pub const DEFAULT_MAX_DEQUEUE: u32 = 5;
/// A pending shard of a queued generation whose record has not changed for this long is no longer waited for (a
/// lost message, an instance that died with it): the next dispatch reconciles its mailboxes in full.
pub const SHARD_STALE_AFTER: chrono::Duration = chrono::Duration::hours(1);
/// How many poison messages `status` and a dispatch look at (one peek of the poison queue).
pub const POISON_PEEK: usize = 32;

const GENERATION_KEY: &str = "generation";
/// A shard saves its progress after this many mailboxes done, or [`PROGRESS_EVERY`], whichever comes first.
const PROGRESS_EVERY_MAILBOXES: usize = 10;
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn shard_key(index: u32) -> String {
    format!("shard:{index:05}")
}

fn anchors_key(kind: &str, chunk: usize) -> String {
    format!("{kind}:{chunk:05}")
}

/// Whether a state scope of a phones link is a mailbox's (and not the shard records').
pub fn is_mailbox_scope(scope: &str) -> bool {
    !scope.starts_with('~')
}

/// The lease a shard takes (a name in the link lease namespace: `~` never appears in a link name).
pub fn shard_lease_name(link: &str, index: u32) -> String {
    format!("{link}~shard{index}")
}

/// One shard's queue message: which link, which generation, which shard. Everything else is in the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMessage {
    /// [`MESSAGE_VERSION`].
    pub v: u32,
    pub link: String,
    pub generation: String,
    pub shard: u32,
}

impl ShardMessage {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a message's text; the reason names what is wrong.
    pub fn parse(text: &str) -> Result<ShardMessage, String> {
        let message: ShardMessage = serde_json::from_str(text.trim())
            .map_err(|error| format!("not a shard message: {error}"))?;
        if message.v != MESSAGE_VERSION {
            return Err(format!(
                "shard message version {} is not {MESSAGE_VERSION}",
                message.v
            ));
        }
        Ok(message)
    }
}

/// A dispatch's record of its shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// A fresh id per dispatch (a message of an older generation is acknowledged and ignored).
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// How the shards sync their mailboxes (a retry or a mailbox marked `thorough` lists its folder instead).
    pub mode: SyncMode,
    pub shards: u32,
    /// How many `changed:` and `held:` records hold the anchor sets.
    pub changed_records: u32,
    pub held_records: u32,
    /// `galbridge:{sourceTenantId}:`: anchored contacts with it belong to this link's source.
    pub anchor_prefix: String,
    /// The queue the shards were sent to; `None`: run in the dispatching process.
    pub queue: Option<String>,
    /// Every message was sent (a queued generation is only waited for once it is).
    pub dispatched: bool,
}

/// Where a shard stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardState {
    Pending,
    Done,
    /// Gave up (its last try failed, or the in-process run that ran it failed): the next dispatch takes its
    /// unfinished mailboxes over.
    Failed,
}

/// One mailbox of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMailbox {
    pub id: String,
    pub upn: String,
    /// List the folder (the mailbox was left unfinished by an earlier generation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thorough: bool,
}

/// One shard: its mailboxes and its checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub generation: String,
    pub mailboxes: Vec<ShardMailbox>,
    /// Mailbox ids done (a retry skips them).
    #[serde(default)]
    pub done: BTreeSet<String>,
    pub state: ShardState,
    /// Tries started (a try after the first reconciles the remaining mailboxes in full).
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the record last changed (filled from the state record).
    #[serde(skip)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl ShardRecord {
    fn finished(&self) -> bool {
        self.state != ShardState::Pending
    }

    /// The mailboxes not done yet.
    /// Whether this shard's next try needs every person of the snapshot: a retry and a mailbox marked thorough list
    /// their folders, and a reconcile or thorough generation compares whole folders; only a first try of an
    /// incremental generation looks at the changed people alone.
    pub fn needs_every_person(&self, generation: &Generation) -> bool {
        generation.mode != SyncMode::Incremental
            || self.attempts > 0
            || self.remaining().any(|mailbox| mailbox.thorough)
    }

    fn remaining(&self) -> impl Iterator<Item = &ShardMailbox> {
        self.mailboxes
            .iter()
            .filter(|mailbox| !self.done.contains(&mailbox.id))
    }
}

fn record(key: String, data: Value) -> ObjectRecord {
    ObjectRecord {
        anchor: key,
        target_id: String::new(),
        hash: String::new(),
        data: Some(data),
        updated_at: Utc::now(),
    }
}

fn corrupt(key: &str, reason: impl std::fmt::Display) -> StateError {
    StateError::Corrupt {
        what: format!("shard record {key}"),
        reason: reason.to_string(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(record: &ObjectRecord) -> Result<T, StateError> {
    let data = record
        .data
        .clone()
        .ok_or_else(|| corrupt(&record.anchor, "no data"))?;
    serde_json::from_value(data).map_err(|error| corrupt(&record.anchor, error))
}

/// The link's latest generation, if any.
pub async fn load_generation(
    store: &dyn StateStore,
    link: &str,
) -> Result<Option<Generation>, StateError> {
    let records = store
        .get_objects(link, SHARD_SCOPE, &[GENERATION_KEY.to_owned()])
        .await?;
    records.first().map(parse).transpose()
}

async fn save_generation(
    store: &dyn StateStore,
    link: &str,
    generation: &Generation,
) -> Result<(), StateError> {
    let data = serde_json::to_value(generation).map_err(|e| corrupt(GENERATION_KEY, e))?;
    store
        .put_objects(
            link,
            SHARD_SCOPE,
            &[record(GENERATION_KEY.to_owned(), data)],
        )
        .await
}

/// One shard's record (None: no such shard).
pub async fn load_shard(
    store: &dyn StateStore,
    link: &str,
    index: u32,
) -> Result<Option<ShardRecord>, StateError> {
    let records = store
        .get_objects(link, SHARD_SCOPE, &[shard_key(index)])
        .await?;
    let Some(stored) = records.first() else {
        return Ok(None);
    };
    let mut shard: ShardRecord = parse(stored)?;
    shard.updated_at = Some(stored.updated_at);
    Ok(Some(shard))
}

/// Every shard record of the link (by index), whatever its generation.
pub async fn load_shards(
    store: &dyn StateStore,
    link: &str,
) -> Result<BTreeMap<u32, ShardRecord>, StateError> {
    let mut shards = BTreeMap::new();
    for stored in store.list_objects(link, SHARD_SCOPE).await? {
        let Some(index) = stored
            .anchor
            .strip_prefix("shard:")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let mut shard: ShardRecord = parse(&stored)?;
        shard.updated_at = Some(stored.updated_at);
        shards.insert(index, shard);
    }
    Ok(shards)
}

async fn save_shard(
    store: &dyn StateStore,
    link: &str,
    index: u32,
    shard: &ShardRecord,
) -> Result<(), StateError> {
    let key = shard_key(index);
    let data = serde_json::to_value(shard).map_err(|e| corrupt(&key, e))?;
    store
        .put_objects(link, SHARD_SCOPE, &[record(key, data)])
        .await
}

/// A generation's anchor set (`changed` or `held`).
pub async fn load_anchor_set(
    store: &dyn StateStore,
    link: &str,
    kind: &str,
    records: u32,
) -> Result<BTreeSet<String>, StateError> {
    if records == 0 {
        return Ok(BTreeSet::new());
    }
    let keys: Vec<String> = (0..records as usize)
        .map(|chunk| anchors_key(kind, chunk))
        .collect();
    let stored = store.get_objects(link, SHARD_SCOPE, &keys).await?;
    if stored.len() != keys.len() {
        return Err(corrupt(
            &anchors_key(kind, 0),
            format!(
                "{} of {} records of the generation's {kind} anchors are missing",
                keys.len() - stored.len(),
                keys.len()
            ),
        ));
    }
    let mut anchors = BTreeSet::new();
    for chunk in &stored {
        let list: Vec<String> = parse(chunk)?;
        anchors.extend(list);
    }
    Ok(anchors)
}

fn anchor_records(kind: &str, anchors: &BTreeSet<String>) -> Vec<ObjectRecord> {
    let list: Vec<&String> = anchors.iter().collect();
    list.chunks(ANCHORS_PER_RECORD)
        .enumerate()
        .map(|(chunk, anchors)| record(anchors_key(kind, chunk), serde_json::json!(anchors)))
        .collect()
}

/// The mailboxes split into shards of `per_shard`, in id order (the same selection always gives the same shards).
pub fn partition(mailboxes: &[ShardMailbox], per_shard: usize) -> Vec<Vec<ShardMailbox>> {
    let mut sorted = mailboxes.to_vec();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    sorted
        .chunks(per_shard.max(1))
        .map(<[ShardMailbox]>::to_vec)
        .collect()
}

/// Mailboxes an earlier generation left unfinished (its shards that did not finish, whatever the reason): the
/// next dispatch lists their folders.
pub fn unfinished_mailboxes(
    generation: Option<&Generation>,
    shards: &BTreeMap<u32, ShardRecord>,
) -> BTreeSet<String> {
    let Some(generation) = generation else {
        return BTreeSet::new();
    };
    shards
        .values()
        .filter(|shard| shard.generation == generation.id && shard.state != ShardState::Done)
        .flat_map(|shard| shard.remaining().map(|mailbox| mailbox.id.clone()))
        .collect()
}

/// The poison messages that belong to `link`, by (generation, shard).
pub fn poisoned_shards<'a>(
    link: &str,
    poisoned: &'a [PoisonMessage],
) -> Vec<(ShardMessage, &'a PoisonMessage)> {
    poisoned
        .iter()
        .filter_map(|message| {
            let parsed = ShardMessage::parse(&message.text).ok()?;
            (parsed.link == link).then_some((parsed, message))
        })
        .collect()
}

/// The shards of a queued generation still in flight (pending, not poisoned, not stale at `now`).
pub fn in_flight(
    generation: &Generation,
    shards: &BTreeMap<u32, ShardRecord>,
    poisoned: &[(ShardMessage, &PoisonMessage)],
    now: DateTime<Utc>,
) -> Vec<u32> {
    if generation.queue.is_none() || !generation.dispatched {
        return Vec::new();
    }
    shards
        .iter()
        .filter(|(_, shard)| shard.generation == generation.id && !shard.finished())
        .filter(|(index, _)| {
            !poisoned
                .iter()
                .any(|(message, _)| message.generation == generation.id && message.shard == **index)
        })
        .filter(|(_, shard)| {
            shard
                .updated_at
                .is_none_or(|updated| now - updated < SHARD_STALE_AFTER)
        })
        .map(|(index, _)| *index)
        .collect()
}

/// What `status` shows of a link's latest generation.
pub fn shard_set_status(
    generation: &Generation,
    shards: &BTreeMap<u32, ShardRecord>,
    poisoned: &[(ShardMessage, &PoisonMessage)],
    now: DateTime<Utc>,
) -> ShardSetStatus {
    let current: Vec<(&u32, &ShardRecord)> = shards
        .iter()
        .filter(|(_, shard)| shard.generation == generation.id)
        .collect();
    let count = |state: ShardState| current.iter().filter(|(_, s)| s.state == state).count() as u64;
    let flying = in_flight(generation, shards, poisoned, now);
    ShardSetStatus {
        generation: generation.id.clone(),
        created_at: generation.created_at,
        queue: generation.queue.clone(),
        shards: u64::from(generation.shards),
        done: count(ShardState::Done),
        failed: count(ShardState::Failed),
        pending: count(ShardState::Pending),
        in_flight: flying.len() as u64,
        mailboxes: current.iter().map(|(_, s)| s.mailboxes.len() as u64).sum(),
        mailboxes_done: current.iter().map(|(_, s)| s.done.len() as u64).sum(),
        poisoned: poisoned
            .iter()
            .filter(|(message, _)| message.generation == generation.id)
            .filter(|(message, _)| {
                shards
                    .get(&message.shard)
                    .is_none_or(|shard| shard.state != ShardState::Done)
            })
            .map(|(message, poison)| crate::report::PoisonedShard {
                shard: message.shard,
                message_id: poison.id.clone(),
                inserted: poison.inserted.clone(),
                last_error: shards
                    .get(&message.shard)
                    .and_then(|shard| shard.last_error.clone()),
            })
            .collect(),
        failed_shards: current
            .iter()
            .filter(|(_, s)| s.state == ShardState::Failed)
            .map(|(index, shard)| crate::report::FailedShard {
                shard: **index,
                mailboxes_left: shard.remaining().count() as u64,
                last_error: shard.last_error.clone(),
            })
            .collect(),
    }
}

/// What a dispatch records: the generation, its shards and anchor sets.
pub struct NewGeneration {
    pub generation: Generation,
    pub shards: Vec<Vec<ShardMailbox>>,
    pub changed: BTreeSet<String>,
    pub held: BTreeSet<String>,
}

/// Records a new generation: the generation record first (not yet dispatched, so nobody waits for it), then the
/// anchor sets and the shard records; records of an older generation the new one does not overwrite go.
pub async fn record_generation(
    store: &dyn StateStore,
    link: &str,
    new: &mut NewGeneration,
) -> Result<(), StateError> {
    new.generation.changed_records = new.changed.len().div_ceil(ANCHORS_PER_RECORD) as u32;
    new.generation.held_records = new.held.len().div_ceil(ANCHORS_PER_RECORD) as u32;
    new.generation.shards = new.shards.len() as u32;
    new.generation.dispatched = false;
    save_generation(store, link, &new.generation).await?;
    let mut records = anchor_records("changed", &new.changed);
    records.extend(anchor_records("held", &new.held));
    for (index, mailboxes) in new.shards.iter().enumerate() {
        let shard = ShardRecord {
            generation: new.generation.id.clone(),
            mailboxes: mailboxes.clone(),
            done: BTreeSet::new(),
            state: ShardState::Pending,
            attempts: 0,
            last_error: None,
            updated_at: None,
        };
        let key = shard_key(index as u32);
        records.push(record(
            key.clone(),
            serde_json::to_value(&shard).map_err(|e| corrupt(&key, e))?,
        ));
    }
    let kept: BTreeSet<&str> = records.iter().map(|r| r.anchor.as_str()).collect();
    let stale: Vec<String> = store
        .list_objects(link, SHARD_SCOPE)
        .await?
        .into_iter()
        .map(|r| r.anchor)
        .filter(|key| key != GENERATION_KEY && !kept.contains(key.as_str()))
        .collect();
    store.put_objects(link, SHARD_SCOPE, &records).await?;
    store.delete_objects(link, SHARD_SCOPE, &stale).await
}

/// Marks a generation as sent in full (a queued one is waited for from now on).
pub async fn mark_dispatched(
    store: &dyn StateStore,
    link: &str,
    generation: &mut Generation,
) -> Result<(), StateError> {
    generation.dispatched = true;
    save_generation(store, link, generation).await
}

/// Sends one message per shard; `Err` names the shard that could not be sent.
pub async fn send_shards(
    queue: &dyn ShardQueue,
    link: &str,
    generation: &Generation,
) -> Result<(), String> {
    for shard in 0..generation.shards {
        let message = ShardMessage {
            v: MESSAGE_VERSION,
            link: link.to_owned(),
            generation: generation.id.clone(),
            shard,
        };
        queue
            .send(&message.to_text())
            .await
            .map_err(|error| format!("shard {shard}: {error}"))?;
    }
    Ok(())
}

/// How one try of a shard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardEnd {
    /// Every mailbox is done (now or by an earlier try).
    Done,
    /// Some mailboxes are not done; another try will carry on.
    Incomplete,
    /// Some mailboxes are not done and this was the last try: the shard is `failed`.
    Failed,
    /// Another try holds the shard's lease right now.
    Busy,
    /// The message belongs to a generation that is no longer the link's latest (nothing to do).
    Superseded,
}

impl ShardEnd {
    /// Whether the queue message is finished with (the host deletes it) or must be tried again.
    pub fn settled(self) -> bool {
        matches!(self, ShardEnd::Done | ShardEnd::Superseded)
    }
}

/// What one try of a shard did.
#[derive(Debug)]
pub struct ShardRun {
    pub end: ShardEnd,
    pub applied: PlanCounts,
    pub failures: Vec<Failure>,
    pub mailboxes: u64,
    pub mailboxes_done: u64,
    /// Mailboxes not started because the run was cancelled or its budget spent.
    pub not_started: u64,
}

impl ShardRun {
    fn ended(end: ShardEnd) -> ShardRun {
        ShardRun {
            end,
            applied: PlanCounts::default(),
            failures: Vec::new(),
            mailboxes: 0,
            mailboxes_done: 0,
            not_started: 0,
        }
    }
}

/// Who runs a shard: the lease holder and lifetime, the mailbox concurrency, and which failures leave a mailbox
/// not done.
pub struct ShardRunner<'a> {
    pub store: &'a Arc<dyn StateStore>,
    pub holder: &'a str,
    pub lease_ttl: chrono::Duration,
    pub max_concurrency: usize,
    /// Raised by the caller (a link run whose lease was lost): start no more mailboxes.
    pub cancelled: Option<&'a Arc<AtomicBool>>,
    pub is_hard: &'a (dyn Fn(&Failure) -> bool + Send + Sync),
    /// Shared by shards running side by side in one process: at most this many mailboxes in flight in all.
    pub permits: Option<Arc<tokio::sync::Semaphore>>,
}

impl ShardRunner<'_> {
    /// One try of shard `index` of `generation`: its lease, its record, each remaining mailbox through
    /// [`Fanout::sync`] (at most `max_concurrency` at once, the record saved every few mailboxes), and the shard's
    /// state at the end (`failed` when `last_try` and not complete).
    pub async fn run(
        &self,
        fanout: &Arc<Fanout>,
        generation: &Generation,
        index: u32,
        last_try: bool,
    ) -> Result<ShardRun, StateError> {
        let link = fanout.link.as_str();
        let lease_name = shard_lease_name(link, index);
        let held = match self.take_lease(&lease_name).await {
            Ok(held) => held,
            Err(StateError::LeaseHeld { holder, .. }) => {
                tracing::info!(link, shard = index, holder = %holder, "Shard is being run elsewhere; try later.");
                return Ok(ShardRun::ended(ShardEnd::Busy));
            }
            Err(error) => return Err(error),
        };
        let result = self
            .run_leased(fanout, generation, index, last_try, &held.cancelled)
            .await;
        held.renewal.finish().await;
        let lease = held.lease.lock().await.clone();
        if let Err(error) = self.store.release_lease(&lease).await {
            tracing::warn!(link, shard = index, error = %error, "Releasing the shard lease failed; it will expire.");
        }
        result
    }

    /// The shard's lease. Held by another try, it is waited for once, until it lapses (at most one lifetime, and
    /// within the invocation's budget): a try that died (a killed instance) stops renewing, and the queue's next
    /// delivery must not spend its tries on being turned away until then. A holder that is alive renews it and the
    /// second refusal is final.
    async fn take_lease(&self, name: &str) -> Result<HeldLease, StateError> {
        match HeldLease::acquire(self.store, name, self.holder, self.lease_ttl).await {
            Err(StateError::LeaseHeld { until, .. }) => {
                let wait = (until - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .min(self.lease_ttl.to_std().unwrap_or_default())
                    + std::time::Duration::from_millis(200);
                let within_budget = crate::m365::budget::deadline()
                    .is_none_or(|end| std::time::Instant::now() + wait < end);
                if within_budget {
                    tokio::time::sleep(wait).await;
                }
                HeldLease::acquire(self.store, name, self.holder, self.lease_ttl).await
            }
            taken => taken,
        }
    }

    async fn run_leased(
        &self,
        fanout: &Arc<Fanout>,
        generation: &Generation,
        index: u32,
        last_try: bool,
        lease_lost: &Arc<AtomicBool>,
    ) -> Result<ShardRun, StateError> {
        let store = self.store.as_ref();
        let link = fanout.link.as_str();
        let Some(mut shard) = load_shard(store, link, index).await? else {
            return Ok(ShardRun::ended(ShardEnd::Superseded));
        };
        if shard.generation != generation.id {
            return Ok(ShardRun::ended(ShardEnd::Superseded));
        }
        let total = shard.mailboxes.len() as u64;
        if shard.state == ShardState::Done {
            let mut run = ShardRun::ended(ShardEnd::Done);
            (run.mailboxes, run.mailboxes_done) = (total, total);
            return Ok(run);
        }
        if !fanout.desired_complete && shard.needs_every_person(generation) {
            // This try loaded the changed people only, and another try has since made this one a retry (a
            // duplicate delivery ran first): it must not compare whole folders against a partial list. The message
            // comes back, and its next try loads everyone.
            return Ok(ShardRun::ended(ShardEnd::Incomplete));
        }
        shard.attempts += 1;
        // A try after the first: the try before may have died between a write and its record.
        let retry = shard.attempts > 1;
        shard.state = ShardState::Pending;
        save_shard(store, link, index, &shard).await?;

        let remaining: Vec<ShardMailbox> = shard.remaining().cloned().collect();
        let mut pending = remaining.into_iter();
        let mut running = tokio::task::JoinSet::new();
        let mut run = ShardRun::ended(ShardEnd::Incomplete);
        run.mailboxes = total;
        let (mut unsaved, mut saved_at) = (0usize, std::time::Instant::now());
        let stop = |lost: &AtomicBool| {
            lost.load(Ordering::SeqCst)
                || self
                    .cancelled
                    .is_some_and(|flag| flag.load(Ordering::SeqCst))
        };
        loop {
            while running.len() < self.max_concurrency.max(1)
                && let Some(mailbox) = pending.next()
            {
                if stop(lease_lost) {
                    run.not_started += 1;
                    continue;
                }
                let mode = if retry || mailbox.thorough {
                    SyncMode::Thorough
                } else {
                    generation.mode
                };
                let fanout = fanout.clone();
                let permits = self.permits.clone();
                // Task-locals do not cross `spawn`: each mailbox task works within the invocation's budget too.
                let deadline = crate::m365::budget::deadline();
                running.spawn(
                    async move {
                        let _permit = match permits {
                            Some(permits) => permits.acquire_owned().await.ok(),
                            None => None,
                        };
                        let spent = deadline.is_some_and(|end| std::time::Instant::now() >= end);
                        if spent {
                            return (mailbox, None);
                        }
                        let target = MailboxRef {
                            id: mailbox.id.clone(),
                            upn: mailbox.upn.clone(),
                        };
                        let sync = fanout.sync(&target, mode);
                        let outcome = match deadline {
                            Some(deadline) => crate::m365::budget::within(deadline, sync).await,
                            None => sync.await,
                        };
                        (mailbox, Some(outcome))
                    }
                    .in_current_span(),
                );
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            match joined {
                Ok((mailbox, Some(outcome))) => {
                    let complete = self.book(&mut run, outcome);
                    if complete {
                        shard.done.insert(mailbox.id);
                        unsaved += 1;
                        // The shard's checkpoint (a retry skips what it lists), every few mailboxes or seconds: a
                        // try that dies loses at most those, which its retry reconciles again.
                        if unsaved >= PROGRESS_EVERY_MAILBOXES
                            || saved_at.elapsed() >= PROGRESS_EVERY
                        {
                            match save_shard(store, link, index, &shard).await {
                                Ok(()) => (unsaved, saved_at) = (0, std::time::Instant::now()),
                                Err(error) => {
                                    tracing::warn!(link, shard = index, error = %error, "Saving the shard's progress failed; saved again later.");
                                }
                            }
                        }
                    } else {
                        shard.last_error = run
                            .failures
                            .iter()
                            .rev()
                            .find(|failure| (self.is_hard)(failure))
                            .map(|failure| failure.reason.clone());
                    }
                }
                Ok((_, None)) => run.not_started += 1,
                Err(error) => run.failures.push(Failure {
                    anchor: None,
                    mailbox: None,
                    kind: "internal_error".into(),
                    reason: format!("a mailbox task ended abnormally: {error}"),
                }),
            }
        }
        run.mailboxes_done = shard.done.len() as u64;
        run.end = if shard.done.len() == shard.mailboxes.len() {
            shard.state = ShardState::Done;
            shard.last_error = None;
            ShardEnd::Done
        } else if last_try {
            shard.state = ShardState::Failed;
            ShardEnd::Failed
        } else {
            ShardEnd::Incomplete
        };
        if run.not_started > 0 && shard.last_error.is_none() {
            shard.last_error = Some(format!(
                "{} mailbox(es) not started (the lease was lost or the time budget spent)",
                run.not_started
            ));
        }
        save_shard(store, link, index, &shard).await?;
        Ok(run)
    }

    /// Adds a mailbox's outcome to the shard's; `true` when the mailbox is done (no failure that needs a retry).
    fn book(&self, run: &mut ShardRun, outcome: MailboxOutcome) -> bool {
        add_counts(&mut run.applied, &outcome.applied);
        let hard = outcome
            .failures
            .iter()
            .any(|failure| (self.is_hard)(failure));
        run.failures.extend(outcome.into_failures());
        !hard
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(id: &str) -> ShardMailbox {
        ShardMailbox {
            id: id.into(),
            upn: format!("{id}@example.com"),
            thorough: false,
        }
    }

    #[test]
    fn partition_is_deterministic_and_sized() {
        let mailboxes: Vec<ShardMailbox> = (0..25)
            .rev()
            .map(|n| mailbox(&format!("m{n:02}")))
            .collect();
        let shards = partition(&mailboxes, 10);
        assert_eq!(
            shards.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 5]
        );
        assert_eq!(shards[0][0].id, "m00");
        assert_eq!(shards[2][4].id, "m24");
        let again = partition(&mailboxes.iter().rev().cloned().collect::<Vec<_>>(), 10);
        assert_eq!(shards, again, "the same selection gives the same shards");
    }

    #[test]
    fn messages_round_trip_and_refuse_other_versions() {
        let message = ShardMessage {
            v: MESSAGE_VERSION,
            link: "acme-phones".into(),
            generation: "g1".into(),
            shard: 2,
        };
        assert_eq!(ShardMessage::parse(&message.to_text()), Ok(message));
        assert!(ShardMessage::parse(r#"{"v":9,"link":"a","generation":"g","shard":0}"#).is_err());
        assert!(ShardMessage::parse("not json").is_err());
    }

    #[test]
    fn only_pending_fresh_unpoisoned_shards_of_a_dispatched_queued_generation_are_in_flight() {
        let now = Utc::now();
        let generation = Generation {
            id: "g".into(),
            created_at: now,
            mode: SyncMode::Incremental,
            shards: 4,
            changed_records: 0,
            held_records: 0,
            anchor_prefix: "galbridge:t:".into(),
            queue: Some("shards".into()),
            dispatched: true,
        };
        let shard = |state, minutes_ago: i64, generation: &str| ShardRecord {
            generation: generation.into(),
            mailboxes: vec![mailbox("a")],
            done: BTreeSet::new(),
            state,
            attempts: 0,
            last_error: None,
            updated_at: Some(now - chrono::Duration::minutes(minutes_ago)),
        };
        let shards = BTreeMap::from([
            (0, shard(ShardState::Done, 1, "g")),
            (1, shard(ShardState::Pending, 1, "g")),
            (2, shard(ShardState::Pending, 120, "g")),
            (3, shard(ShardState::Pending, 1, "g")),
            (4, shard(ShardState::Pending, 1, "older")),
        ]);
        let poison = PoisonMessage {
            id: "p".into(),
            text: ShardMessage {
                v: MESSAGE_VERSION,
                link: "l".into(),
                generation: "g".into(),
                shard: 3,
            }
            .to_text(),
            inserted: None,
        };
        let poisoned = [poison];
        let mapped = poisoned_shards("l", &poisoned);
        assert_eq!(in_flight(&generation, &shards, &mapped, now), vec![1]);
        assert!(poisoned_shards("other", &poisoned).is_empty());
        let in_process = Generation {
            queue: None,
            ..generation.clone()
        };
        assert!(in_flight(&in_process, &shards, &mapped, now).is_empty());
        let status = shard_set_status(&generation, &shards, &mapped, now);
        assert_eq!(
            (
                status.done,
                status.pending,
                status.in_flight,
                status.poisoned.len()
            ),
            (1, 3, 1, 1)
        );
        assert_eq!(
            unfinished_mailboxes(Some(&generation), &shards),
            BTreeSet::from(["a".to_owned()])
        );
    }
}
