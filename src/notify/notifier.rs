//! [`Notifier`]: what galbridge does with change notifications. It accepts a batch (verify each `clientState`, mark
//! the links of the source tenant due after the debounce, note lifecycle actions), keeps subscriptions alive
//! (create the missing, renew those past half their life, act on lifecycle notifications) and runs the links whose
//! mark is due, through the ordinary run and its lease.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::payload::{self, Notification, same_secret};
use super::records::{self, DueMark, PendingAction, SubscriptionData, SubscriptionRecord};
use super::resources::{Resource, resources_for_source};
use crate::config::{Config, NamedTenant, NotificationSettings, Secret};
use crate::engine::service::EngineService;
use crate::m365::subscriptions::NewSubscription;
use crate::report::{RunOptions, RunReport};
use crate::state::{StateError, StateStore};
use crate::sync_service::{ServiceError, SyncService};

/// What a batch of notifications did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifyReceipt {
    /// Notifications whose `clientState` matched a known subscription.
    pub accepted: usize,
    /// Notifications refused (unknown subscription or wrong `clientState`).
    pub refused: usize,
    /// When a link marked by this batch becomes due (the serving process wakes then).
    pub wake_at: Option<DateTime<Utc>>,
}

/// What a pass over the due marks (and the subscriptions) did.
#[derive(Debug, Default)]
pub struct NotifiedRuns {
    /// The runs of links marked due.
    pub reports: Vec<Result<RunReport, ServiceError>>,
    /// One line per subscription created, renewed, recreated or failed (for the host's Logs).
    pub lines: Vec<String>,
    /// The earliest mark still waiting, if any.
    pub next_wake: Option<DateTime<Utc>>,
}

/// Change notifications of one configuration over one state store.
pub struct Notifier {
    settings: NotificationSettings,
    /// Enabled links and their source tenants.
    links: Vec<(String, NamedTenant)>,
    store: Arc<dyn StateStore>,
}

fn internal(error: StateError) -> ServiceError {
    ServiceError::Internal(format!("state store: {error}"))
}

/// A fresh `clientState`: 256 random bits as hex (Graph allows 128 characters).
fn new_client_state() -> Secret {
    Secret::new(format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    ))
}

impl Notifier {
    /// `None` when the configuration has notifications off.
    pub fn from_config(config: &Config, store: Arc<dyn StateStore>) -> Option<Self> {
        let settings = config.service().notifications.clone()?;
        let links = config
            .links()
            .iter()
            .filter(|link| link.enabled)
            .map(|link| (link.name.clone(), link.source_tenant.clone()))
            .collect();
        Some(Self {
            settings,
            links,
            store,
        })
    }

    pub fn debounce(&self) -> chrono::Duration {
        self.settings.debounce.as_chrono()
    }

    fn links_of_tenant(&self, tenant: &str) -> Vec<String> {
        self.links
            .iter()
            .filter(|(_, source)| source.name == tenant)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every (source tenant, resource) that needs a subscription.
    fn wanted(&self) -> Vec<(NamedTenant, Resource)> {
        let mut seen = BTreeSet::new();
        let mut wanted = Vec::new();
        for (_, tenant) in &self.links {
            if seen.insert(tenant.name.clone()) {
                for resource in resources_for_source() {
                    wanted.push((tenant.clone(), resource));
                }
            }
        }
        wanted
    }

    /// A POST to `Notify`: verifies every notification and records what it asks for. Nothing runs here (Graph
    /// wants an answer within seconds, docs/microsoft-facts.md §11).
    pub async fn accept(
        &self,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<NotifyReceipt, ServiceError> {
        let notifications = payload::parse(body).map_err(ServiceError::BadRequest)?;
        let (subscriptions, _) = records::load_all(self.store.as_ref())
            .await
            .map_err(internal)?;
        let by_id: BTreeMap<&str, &SubscriptionRecord> = subscriptions
            .iter()
            .map(|record| (record.id.as_str(), record))
            .collect();
        let mut receipt = NotifyReceipt::default();
        // Per tenant: whether a full read is asked.
        let mut changed: BTreeMap<String, bool> = BTreeMap::new();
        let mut pending: BTreeMap<String, PendingAction> = BTreeMap::new();
        for notification in &notifications {
            let Some(record) = verified(notification, &by_id) else {
                receipt.refused += 1;
                continue;
            };
            receipt.accepted += 1;
            let tenant = record.data.tenant.clone();
            match notification.lifecycle_event.as_deref() {
                None => {
                    changed.entry(tenant).or_insert(false);
                }
                Some(event) if event.eq_ignore_ascii_case("missed") => {
                    // Changes were lost: read everything again (docs/microsoft-facts.md §11).
                    changed.insert(tenant, true);
                }
                Some(event) if event.eq_ignore_ascii_case("reauthorizationRequired") => {
                    pending.insert(record.id.clone(), PendingAction::Renew);
                }
                Some(event) if event.eq_ignore_ascii_case("subscriptionRemoved") => {
                    pending.insert(record.id.clone(), PendingAction::Recreate);
                    // Changes may have happened while nothing was subscribed: a delta run catches up.
                    changed.entry(tenant).or_insert(false);
                }
                Some(event) => {
                    info!(subscription_id = %record.id, event, "Unknown lifecycle event ignored.");
                }
            }
        }
        for (id, action) in &pending {
            if let Some(record) = by_id.get(id.as_str()) {
                let mut record = (*record).clone();
                record.data.pending = Some(*action);
                records::put_subscription(self.store.as_ref(), &record, now)
                    .await
                    .map_err(internal)?;
                info!(subscription_id = %id, action = ?action, tenant = %record.data.tenant, "Lifecycle notification recorded.");
            }
        }
        if !pending.is_empty() {
            receipt.wake_at = Some(now);
        }
        for (tenant, full) in changed {
            let links = self.links_of_tenant(&tenant);
            if let Some(at) = self.mark(&links, now, full).await.map_err(internal)? {
                receipt.wake_at = Some(receipt.wake_at.map_or(at, |wake| wake.min(at)));
            }
        }
        Ok(receipt)
    }

    /// Marks `links` due at now + debounce; a link already marked keeps its time (a steady stream of notifications
    /// must not postpone the run forever), and a full read, once asked, stays asked. Returns the earliest due time.
    pub async fn mark(
        &self,
        links: &[String],
        now: DateTime<Utc>,
        full: bool,
    ) -> Result<Option<DateTime<Utc>>, StateError> {
        if links.is_empty() {
            return Ok(None);
        }
        let existing: BTreeMap<String, DueMark> = records::get_marks(self.store.as_ref(), links)
            .await?
            .into_iter()
            .collect();
        let due_at = now + self.debounce();
        let mut writes = Vec::new();
        let mut earliest: Option<DateTime<Utc>> = None;
        for link in links {
            let mark = match existing.get(link) {
                Some(mark) if mark.full || !full => *mark,
                Some(mark) => DueMark {
                    due_at: mark.due_at,
                    full: true,
                },
                None => DueMark { due_at, full },
            };
            earliest = Some(earliest.map_or(mark.due_at, |at| at.min(mark.due_at)));
            if existing.get(link) != Some(&mark) {
                writes.push((link.clone(), mark));
            }
        }
        records::put_marks(self.store.as_ref(), &writes, now).await?;
        Ok(earliest)
    }

    /// Creates missing subscriptions and renews those past half their life (`timer`), and always carries out the
    /// actions lifecycle notifications asked for. One line per action, for the Logs.
    pub async fn maintain(
        &self,
        engine: &EngineService,
        now: DateTime<Utc>,
        timer: bool,
    ) -> Vec<String> {
        let mut lines = Vec::new();
        let subscriptions = match records::load_all(self.store.as_ref()).await {
            Ok((subscriptions, _)) => subscriptions,
            Err(error) => {
                warn!(error = %error, "Cannot read the subscriptions.");
                return vec![format!("subscriptions: state store: {error}")];
            }
        };
        let lifetime = self.settings.subscription_lifetime.as_chrono();
        for (tenant, resource) in self.wanted() {
            let record = subscriptions.iter().find(|record| {
                record.data.tenant == tenant.name && record.data.resource == resource.path
            });
            let action = match record {
                None if timer => Action::Create,
                None => continue,
                Some(record) => match record.data.pending {
                    Some(PendingAction::Recreate) => Action::Recreate(record),
                    Some(PendingAction::Renew) => Action::Renew(record),
                    None if timer && record.data.expires - now < lifetime / 2 => {
                        Action::Renew(record)
                    }
                    None => continue,
                },
            };
            let line = match self.act(engine, &tenant, &resource, action, now).await {
                Ok(line) => {
                    info!(tenant = %tenant.name, resource = %resource.path, "{line}");
                    line
                }
                Err(line) => {
                    warn!(tenant = %tenant.name, resource = %resource.path, "{line}");
                    line
                }
            };
            lines.push(line);
        }
        lines
    }

    async fn act(
        &self,
        engine: &EngineService,
        tenant: &NamedTenant,
        resource: &Resource,
        action: Action<'_>,
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        let what = format!("subscription to {} of {}", resource.path, tenant.name);
        let graph = engine
            .graph_client(tenant)
            .await
            .map_err(|error| format!("{what}: {error}"))?;
        let lifetime_secs = self
            .settings
            .subscription_lifetime
            .as_std()
            .as_secs()
            .min(resource.max_lifetime_secs);
        let expires =
            now + chrono::Duration::seconds(i64::try_from(lifetime_secs).unwrap_or(i64::MAX / 2));
        match action {
            Action::Renew(record) => match graph.renew_subscription(&record.id, expires).await {
                Ok(renewed) => {
                    let mut record = record.clone();
                    record.data.expires = renewed.expiration_date_time;
                    record.data.pending = None;
                    records::put_subscription(self.store.as_ref(), &record, now)
                        .await
                        .map_err(|error| format!("{what}: state store: {error}"))?;
                    return Ok(format!(
                        "{what} renewed until {}",
                        renewed.expiration_date_time.to_rfc3339()
                    ));
                }
                // Gone (expired, removed): make a new one.
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(format!("{what}: renewal failed: {error}")),
            },
            Action::Recreate(record) => {
                if let Err(error) = graph.delete_subscription(&record.id).await {
                    warn!(subscription_id = %record.id, error = %error, "Cannot delete the removed subscription; creating a new one anyway.");
                }
            }
            Action::Create => {}
        }
        let client_state = new_client_state();
        let created = graph
            .create_subscription(&NewSubscription {
                resource: &resource.path,
                change_type: resource.change_type,
                notification_url: &self.settings.public_url,
                expires,
                client_state: &client_state,
            })
            .await
            .map_err(|error| format!("{what}: creation failed: {error}"))?;
        let record = SubscriptionRecord {
            id: created.id,
            data: SubscriptionData {
                tenant: tenant.name.clone(),
                resource: resource.path.clone(),
                expires: created.expiration_date_time,
                client_state: client_state.expose().to_owned(),
                pending: None,
            },
        };
        records::put_subscription(self.store.as_ref(), &record, now)
            .await
            .map_err(|error| format!("{what}: state store: {error}"))?;
        Ok(format!(
            "{what} created until {}",
            created.expiration_date_time.to_rfc3339()
        ))
    }

    /// Subscriptions first (lifecycle actions; with `timer`, creation and renewal too), then the links whose mark
    /// is due, each as an ordinary run. A link whose lease is held (a run in progress, which may have read its
    /// source before the change) is marked again for after the debounce.
    pub async fn run_due(
        &self,
        engine: &EngineService,
        now: DateTime<Utc>,
        timer: bool,
    ) -> NotifiedRuns {
        let mut runs = NotifiedRuns {
            lines: self.maintain(engine, now, timer).await,
            ..NotifiedRuns::default()
        };
        let marks = match records::load_all(self.store.as_ref()).await {
            Ok((_, marks)) => marks,
            Err(error) => {
                runs.reports.push(Err(internal(error)));
                return runs;
            }
        };
        let (due, waiting): (Vec<_>, Vec<_>) =
            marks.into_iter().partition(|(_, mark)| mark.due_at <= now);
        runs.next_wake = waiting.iter().map(|(_, mark)| mark.due_at).min();
        let known: BTreeSet<&str> = self.links.iter().map(|(name, _)| name.as_str()).collect();
        let due_links: Vec<String> = due.iter().map(|(link, _)| link.clone()).collect();
        // Taken before the runs start: a notification arriving from now on marks the link again.
        if let Err(error) = records::delete_marks(self.store.as_ref(), &due_links).await {
            runs.reports.push(Err(internal(error)));
            return runs;
        }
        for (link, mark) in due {
            if !known.contains(link.as_str()) {
                continue;
            }
            let options = RunOptions {
                full: mark.full,
                ..RunOptions::default()
            };
            let result = engine.run_link(&link, options).await;
            if let Err(ServiceError::LeaseHeld { .. }) = &result {
                match self
                    .mark(std::slice::from_ref(&link), Utc::now(), mark.full)
                    .await
                {
                    Ok(Some(at)) => {
                        runs.next_wake = Some(runs.next_wake.map_or(at, |wake| wake.min(at)))
                    }
                    Ok(None) => {}
                    Err(error) => {
                        warn!(link = %link, error = %error, "Cannot mark the link due again.")
                    }
                }
            }
            runs.reports.push(result);
        }
        runs
    }

    /// Deletes the subscriptions of `tenant` (after `purge`, when no other link reads from it); returns how many.
    pub async fn remove_for_tenant(
        &self,
        engine: &EngineService,
        tenant: &NamedTenant,
    ) -> Result<usize, ServiceError> {
        let (subscriptions, _) = records::load_all(self.store.as_ref())
            .await
            .map_err(internal)?;
        let graph = engine.graph_client(tenant).await?;
        let mut removed = 0;
        for record in subscriptions
            .iter()
            .filter(|record| record.data.tenant == tenant.name)
        {
            graph
                .delete_subscription(&record.id)
                .await
                .map_err(|error| {
                    ServiceError::Internal(format!(
                        "cannot delete subscription {}: {error}",
                        record.id
                    ))
                })?;
            records::delete_subscription(
                self.store.as_ref(),
                &record.data.tenant,
                &record.data.resource,
            )
            .await
            .map_err(internal)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Whether any link other than `link` reads from `tenant`.
    pub fn tenant_still_read(&self, tenant: &str, link: &str) -> bool {
        self.links
            .iter()
            .any(|(name, source)| source.name == tenant && name != link)
    }
}

enum Action<'a> {
    Create,
    Renew(&'a SubscriptionRecord),
    Recreate(&'a SubscriptionRecord),
}

/// The subscription a notification belongs to, if its `clientState` matches; refusals are logged without the
/// secret (docs/microsoft-facts.md §11: the `clientState` is how a receiver tells Graph from anyone else).
fn verified<'a>(
    notification: &Notification,
    by_id: &BTreeMap<&str, &'a SubscriptionRecord>,
) -> Option<&'a SubscriptionRecord> {
    let Some(record) = by_id.get(notification.subscription_id.as_str()) else {
        warn!(subscription_id = %notification.subscription_id, "Notification refused: unknown subscription.");
        return None;
    };
    let expected = Secret::new(record.data.client_state.clone());
    match &notification.client_state {
        Some(given) if same_secret(given, &expected) => Some(record),
        _ => {
            warn!(subscription_id = %record.id, tenant = %record.data.tenant, "Notification refused: clientState does not match.");
            None
        }
    }
}
