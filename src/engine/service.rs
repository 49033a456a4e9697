//! [`EngineService`]: the engine behind [`crate::sync_service::SyncService`], the boundary the CLI and the Functions
//! handler talk to. It owns the configuration's links (compiled once), the state store, and a [`Connector`] that
//! builds the ports to each tenant lazily (clients are created on first use and reused).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;

use super::from_config::{SpecError, link_spec};
use super::lifecycle::{LinkRunner, RunError};
use super::ports::{MailContactTarget, PortError, RequestMeter, SourceDirectory};
use super::spec::{LinkSpec, TargetSpec};
use super::targets::guest_user::GuestUsers;
use super::targets::mail_contact::{DEFAULT_LEASE_TTL_SECS, MailContacts};
use super::targets::personal_contacts::PersonalContacts;
use super::targets::personal_contacts::shards::{
    DEFAULT_MAX_DEQUEUE, POISON_PEEK, ShardMessage, load_generation, load_shards, poisoned_shards,
    shard_set_status,
};
use crate::config::{Config, NamedTenant, ResolvedLink};
use crate::queue::ShardQueue;
use crate::report::{LinkStatus, RunOptions, RunReport, ShardReport, StatusReport};
use crate::state::{LINK_SCOPE, StateStore};
use crate::sync_service::{ServiceError, SyncService};

/// Environment variable overriding the lease lifetime in seconds (1..=3600; default [`DEFAULT_LEASE_TTL_SECS`]).
/// A run renews its lease every third of it; a run that died without releasing it (a killed process) blocks its
/// link until the lease expires, so tests that kill the process shorten it.
pub const LEASE_TTL_ENV: &str = "GALBRIDGE_LEASE_TTL_SECS";

fn lease_ttl_from_env() -> chrono::Duration {
    let seconds = match std::env::var(LEASE_TTL_ENV) {
        Err(_) => DEFAULT_LEASE_TTL_SECS,
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(seconds) if (1..=3600).contains(&seconds) => seconds,
            _ => {
                tracing::warn!(
                    value = %text,
                    "{LEASE_TTL_ENV} must be whole seconds in 1..=3600; using {DEFAULT_LEASE_TTL_SECS}"
                );
                DEFAULT_LEASE_TTL_SECS
            }
        },
    };
    chrono::Duration::seconds(seconds)
}

/// Builds the ports to a tenant (over the real Graph and Exchange clients in production, doubles in tests).
#[async_trait]
pub trait Connector: Send + Sync {
    /// The tenant's directory as a source.
    async fn source(&self, tenant: &NamedTenant) -> Result<Arc<dyn SourceDirectory>, PortError>;
    /// The tenant's mail contacts as a target.
    async fn mail_contacts(
        &self,
        tenant: &NamedTenant,
    ) -> Result<Arc<dyn MailContactTarget>, PortError>;
    /// The request counters shared by the clients (for the run reports).
    fn counters(&self) -> Option<Arc<dyn RequestMeter>>;
    /// The tenant's guest users as a target (`guest_user` links).
    async fn guest_users(
        &self,
        tenant: &NamedTenant,
    ) -> Result<Arc<dyn super::ports::GuestUserTarget>, PortError> {
        Err(PortError::Failed {
            service: "graph".into(),
            message: format!(
                "this connector cannot write guests (tenant {:?})",
                tenant.name
            ),
        })
    }
    /// A mailbox folder of the tenant as a source (`[links.source] kind = "mailbox_folder"`).
    async fn mailbox_folder_source(
        &self,
        tenant: &NamedTenant,
        _folder: &crate::config::MailboxFolderSource,
    ) -> Result<Arc<dyn SourceDirectory>, PortError> {
        Err(PortError::Failed {
            service: "graph".into(),
            message: format!(
                "this connector cannot read mailbox folders (tenant {:?})",
                tenant.name
            ),
        })
    }
    /// The tenant's Graph client (mailbox contacts and photos of `personal_contacts` links).
    async fn graph(&self, tenant: &NamedTenant) -> Result<crate::m365::GraphClient, PortError> {
        Err(PortError::Failed {
            service: "graph".into(),
            message: format!(
                "this connector cannot reach mailboxes (tenant {:?})",
                tenant.name
            ),
        })
    }
}

/// Why the service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("state store: {0}")]
    State(#[from] crate::state::StateError),
}

struct CompiledLink {
    resolved: ResolvedLink,
    /// `Err` for links the engine cannot run (reported on each run request).
    spec: Result<LinkSpec, String>,
}

impl CompiledLink {
    fn runnable(&self) -> bool {
        self.spec.is_ok()
    }

    fn spec(&self) -> Result<&LinkSpec, ServiceError> {
        self.spec
            .as_ref()
            .map_err(|reason| ServiceError::BadRequest(reason.clone()))
    }
}

/// What a run or purge does once the service picked the link's target (see [`EngineService::with_target`]).
#[derive(Clone, Copy)]
enum Job<'a> {
    Sync(&'a RunOptions),
    Purge { execute: bool },
}

/// The sync engine as a service.
pub struct EngineService {
    links: Vec<CompiledLink>,
    store: Arc<dyn StateStore>,
    connector: Arc<dyn Connector>,
    holder: String,
    lease_ttl: chrono::Duration,
    /// `service.run_budget`: how long one invocation (a run, or a timer's due links) may keep working.
    run_budget: std::time::Duration,
    sources: Mutex<HashMap<String, Arc<dyn SourceDirectory>>>,
    targets: Mutex<HashMap<String, Arc<dyn MailContactTarget>>>,
    graphs: Mutex<HashMap<String, crate::m365::GraphClient>>,
    /// Where `personal_contacts` runs send their shards; `None`: each run runs its shards itself.
    shard_queue: Option<Arc<dyn ShardQueue>>,
    /// The host's tries per queue message (`maxDequeueCount`): a shard's try with this dequeue count is its last.
    max_dequeue: u32,
}

impl EngineService {
    /// A service over the configuration's links, a state store and a connector. Links the engine cannot run are
    /// kept for status and refused when run.
    pub fn new(
        config: &Config,
        store: Arc<dyn StateStore>,
        connector: Arc<dyn Connector>,
    ) -> EngineService {
        let links = config
            .links()
            .iter()
            .map(|resolved| CompiledLink {
                resolved: resolved.clone(),
                spec: link_spec(resolved, config.service()).map_err(|e| e.to_string()),
            })
            .collect();
        EngineService {
            links,
            store,
            connector,
            holder: crate::state::local_holder(),
            lease_ttl: lease_ttl_from_env(),
            run_budget: config.service().run_budget.as_std(),
            sources: Mutex::new(HashMap::new()),
            targets: Mutex::new(HashMap::new()),
            graphs: Mutex::new(HashMap::new()),
            shard_queue: None,
            max_dequeue: DEFAULT_MAX_DEQUEUE,
        }
    }

    /// Sends the shards of `personal_contacts` runs to `queue` (processed by `PhonesShard`, see
    /// [`EngineService::run_shard`]) instead of running them in the run's process; `max_dequeue` is the host's
    /// tries per message (host.json `maxDequeueCount`).
    pub fn with_shard_queue(mut self, queue: Arc<dyn ShardQueue>, max_dequeue: u32) -> Self {
        self.shard_queue = Some(queue);
        self.max_dequeue = max_dequeue.max(1);
        self
    }

    /// Leases (of links, and of shards) last `ttl` instead of [`LEASE_TTL_ENV`]'s or the default lifetime.
    pub fn with_lease_ttl(mut self, ttl: chrono::Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The `personal_contacts` target of a link.
    async fn phones(
        &self,
        link: &CompiledLink,
        options: &super::targets::personal_contacts::PhonesTarget,
    ) -> Result<PersonalContacts, ServiceError> {
        Ok(PersonalContacts {
            source_graph: self.graph_client(&link.resolved.source_tenant).await?,
            target_graph: self.graph_client(&link.resolved.target_tenant).await?,
            options: options.clone(),
            queue: self.shard_queue.clone(),
            holder: self.holder.clone(),
            lease_ttl: self.lease_ttl,
        })
    }

    /// One delivery of a shard message (`PhonesShard`): the shard's remaining mailboxes, within the invocation's
    /// budget. `dequeue_count` is the host's count of deliveries of this message (1 the first time).
    pub async fn run_shard_message(
        &self,
        text: &str,
        dequeue_count: u32,
    ) -> Result<ShardReport, ServiceError> {
        let message = ShardMessage::parse(text).map_err(ServiceError::BadRequest)?;
        let compiled = self.find(&message.link)?;
        let spec = compiled.spec()?;
        let TargetSpec::PersonalContacts(options) = &spec.target else {
            return Err(ServiceError::BadRequest(format!(
                "link {:?} is not a personal_contacts link; its runs have no shards",
                message.link
            )));
        };
        let target = self.phones(compiled, options).await?;
        let source = self.source_port(&compiled.resolved).await?;
        let last_try = dequeue_count >= self.max_dequeue;
        let run = crate::m365::budget::within(
            self.deadline(),
            target.run_queued_shard(&self.store, source, spec, &message, last_try),
        )
        .await
        .map_err(|error| ServiceError::Internal(format!("state store: {error}")))?;
        let end = serde_json::to_value(run.end)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        let summary = format!(
            "{}: shard {} of run {} (try {dequeue_count}): {end}, {}/{} mailboxes done, {} created, {} updated, {} deleted, {} failures",
            message.link,
            message.shard,
            message.generation,
            run.mailboxes_done,
            run.mailboxes,
            run.applied.creates,
            run.applied.updates,
            run.applied.deletes,
            run.failures.len()
        );
        Ok(ShardReport {
            link: message.link,
            generation: message.generation,
            shard: message.shard,
            end,
            dequeue_count,
            mailboxes: run.mailboxes,
            mailboxes_done: run.mailboxes_done,
            applied: run.applied,
            failures: run.failures,
            summary,
        })
    }

    /// The latest shard set of a phones link, for `status` (`poison`: the poison queue, peeked once per status).
    async fn shard_status(
        &self,
        link: &str,
        poison: &[crate::queue::PoisonMessage],
    ) -> Result<Option<crate::report::ShardSetStatus>, crate::state::StateError> {
        let Some(generation) = load_generation(self.store.as_ref(), link).await? else {
            return Ok(None);
        };
        let shards = load_shards(self.store.as_ref(), link).await?;
        let mapped = poisoned_shards(link, poison);
        Ok(Some(shard_set_status(
            &generation,
            &shards,
            &mapped,
            Utc::now(),
        )))
    }

    /// The state store the service uses.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    fn find(&self, name: &str) -> Result<&CompiledLink, ServiceError> {
        self.links
            .iter()
            .find(|link| link.resolved.name == name)
            .ok_or_else(|| ServiceError::UnknownLink {
                name: name.to_owned(),
                suggestion: self
                    .links
                    .iter()
                    .map(|link| {
                        (
                            strsim::jaro_winkler(&link.resolved.name, name),
                            &link.resolved.name,
                        )
                    })
                    .filter(|(score, _)| *score > 0.8)
                    .max_by(|a, b| a.0.total_cmp(&b.0))
                    .map(|(_, name)| name.clone()),
            })
    }

    /// The link's source: the tenant's directory (one port per tenant), or a mailbox folder (one per folder).
    async fn source_port(
        &self,
        link: &ResolvedLink,
    ) -> Result<Arc<dyn SourceDirectory>, ServiceError> {
        let tenant = &link.source_tenant;
        let folder = link.scope.mailbox_folder.as_ref();
        let key = match folder {
            None => tenant.name.clone(),
            Some(folder) => format!(
                "{}\u{0}{}\u{0}{}",
                tenant.name,
                folder.mailbox,
                folder.folder_display()
            ),
        };
        let mut sources = self.sources.lock().await;
        if let Some(port) = sources.get(&key) {
            return Ok(port.clone());
        }
        let port = match folder {
            None => self.connector.source(tenant).await,
            Some(folder) => self.connector.mailbox_folder_source(tenant, folder).await,
        }
        .map_err(|e| {
            ServiceError::Internal(format!(
                "cannot connect to tenant {:?} as a source: {e}",
                tenant.name
            ))
        })?;
        sources.insert(key, port.clone());
        Ok(port)
    }

    async fn target_port(
        &self,
        tenant: &NamedTenant,
    ) -> Result<Arc<dyn MailContactTarget>, ServiceError> {
        let mut targets = self.targets.lock().await;
        if let Some(port) = targets.get(&tenant.name) {
            return Ok(port.clone());
        }
        let port = self.connector.mail_contacts(tenant).await.map_err(|e| {
            ServiceError::Internal(format!(
                "cannot connect to tenant {:?} as a target: {e}",
                tenant.name
            ))
        })?;
        targets.insert(tenant.name.clone(), port.clone());
        Ok(port)
    }

    /// `galbridge purge --link NAME`: lists (`execute = false`) or removes every object the link manages.
    pub async fn purge(&self, link: &str, execute: bool) -> Result<RunReport, ServiceError> {
        let compiled = self.find(link)?;
        self.with_target(compiled, Job::Purge { execute }).await
    }

    /// Builds the link's target from its kind and runs the job through the shared lifecycle: the one place that
    /// knows every target kind.
    async fn with_target(
        &self,
        link: &CompiledLink,
        job: Job<'_>,
    ) -> Result<RunReport, ServiceError> {
        let spec = link.spec()?;
        let runner = LinkRunner {
            store: self.store.clone(),
            source: self.source_port(&link.resolved).await?,
            counters: self.connector.counters(),
            holder: self.holder.clone(),
            lease_ttl: self.lease_ttl,
        };
        let report = match &spec.target {
            TargetSpec::MailContact(options) => {
                let target = MailContacts {
                    port: self.target_port(&link.resolved.target_tenant).await?,
                    options: options.clone(),
                };
                run_job(&runner, &target, spec, job).await
            }
            TargetSpec::PersonalContacts(options) => {
                let target = self.phones(link, options).await?;
                run_job(&runner, &target, spec, job).await
            }
            TargetSpec::GuestUser(options) => {
                let tenant = &link.resolved.target_tenant;
                let port = self.connector.guest_users(tenant).await.map_err(|e| {
                    ServiceError::Internal(format!(
                        "cannot connect to tenant {:?} as a target: {e}",
                        tenant.name
                    ))
                })?;
                run_job(&runner, &GuestUsers::new(port, options.clone()), spec, job).await
            }
        };
        report.map_err(run_error)
    }

    pub(crate) async fn graph_client(
        &self,
        tenant: &NamedTenant,
    ) -> Result<crate::m365::GraphClient, ServiceError> {
        let mut graphs = self.graphs.lock().await;
        if let Some(graph) = graphs.get(&tenant.name) {
            return Ok(graph.clone());
        }
        let graph = self.connector.graph(tenant).await.map_err(|e| {
            ServiceError::Internal(format!(
                "cannot reach the mailboxes of {:?}: {e}",
                tenant.name
            ))
        })?;
        graphs.insert(tenant.name.clone(), graph.clone());
        Ok(graph)
    }

    /// When an invocation starting now must be done (`service.run_budget`).
    fn deadline(&self) -> std::time::Instant {
        std::time::Instant::now() + self.run_budget
    }

    /// Runs a link within the invocation's budget: every request it sends may wait and retry through throttling
    /// until `deadline`, and no change starts after it (see `m365::budget`).
    async fn run_compiled(
        &self,
        link: &CompiledLink,
        options: &RunOptions,
        deadline: std::time::Instant,
    ) -> Result<RunReport, ServiceError> {
        crate::m365::budget::within(deadline, self.with_target(link, Job::Sync(options))).await
    }

    async fn last_run(&self, link: &str) -> Option<RunReport> {
        self.store
            .list_run_records(link, 1)
            .await
            .ok()
            .and_then(|mut runs| runs.pop())
    }
}

async fn run_job<T: super::targets::Target>(
    runner: &LinkRunner,
    target: &T,
    spec: &LinkSpec,
    job: Job<'_>,
) -> Result<RunReport, RunError> {
    match job {
        Job::Sync(options) => runner.sync(target, spec, options).await,
        Job::Purge { execute } => runner.purge(target, spec, execute).await,
    }
}

fn run_error(error: RunError) -> ServiceError {
    match error {
        RunError::LeaseHeld {
            link,
            holder,
            until,
        } => ServiceError::LeaseHeld {
            link,
            holder,
            until,
        },
        RunError::State(error) => ServiceError::Internal(format!("state store: {error}")),
    }
}

impl SyncService for EngineService {
    async fn run_shard(
        &self,
        message: &str,
        dequeue_count: u32,
    ) -> Result<ShardReport, ServiceError> {
        self.run_shard_message(message, dequeue_count).await
    }

    async fn run_link(&self, link: &str, options: RunOptions) -> Result<RunReport, ServiceError> {
        let compiled = self.find(link)?;
        self.run_compiled(compiled, &options, self.deadline()).await
    }

    async fn run_all(&self, options: RunOptions) -> Vec<Result<RunReport, ServiceError>> {
        let deadline = self.deadline();
        let mut reports = Vec::new();
        for link in self.links.iter().filter(|link| link.resolved.enabled) {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(link = %link.resolved.name, "The invocation's run budget is spent; this link runs next time.");
                continue;
            }
            reports.push(self.run_compiled(link, &options, deadline).await);
        }
        reports
    }

    async fn run_due(&self, now: DateTime<Utc>) -> Vec<Result<RunReport, ServiceError>> {
        let deadline = self.deadline();
        let mut reports = Vec::new();
        for link in self
            .links
            .iter()
            .filter(|link| link.resolved.enabled && link.runnable())
        {
            let last = self.last_run(&link.resolved.name).await;
            if link
                .resolved
                .cadence
                .is_due(last.map(|run| run.started_at), now)
            {
                if std::time::Instant::now() >= deadline {
                    tracing::warn!(link = %link.resolved.name, "The invocation's run budget is spent; this due link runs at the next timer.");
                    continue;
                }
                reports.push(
                    self.run_compiled(link, &RunOptions::default(), deadline)
                        .await,
                );
            }
        }
        reports
    }

    async fn status(&self) -> Result<StatusReport, ServiceError> {
        let internal =
            |e: crate::state::StateError| ServiceError::Internal(format!("state store: {e}"));
        let mut links = Vec::new();
        let now = Utc::now();
        let has_phones = self.links.iter().any(|link| {
            matches!(
                link.spec,
                Ok(LinkSpec {
                    target: TargetSpec::PersonalContacts(_),
                    ..
                })
            )
        });
        let poison = match &self.shard_queue {
            Some(queue) if has_phones => match queue.poisoned(POISON_PEEK).await {
                Ok(poison) => poison,
                Err(error) => {
                    tracing::warn!(queue = %queue.name(), error = %error, "Reading the poison queue failed.");
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        for link in &self.links {
            let name = &link.resolved.name;
            let runs = self
                .store
                .list_run_records(name, crate::state::RUN_RECORDS_KEPT)
                .await
                .unwrap_or_default();
            let checkpoint = self.store.load_checkpoint(name).await.map_err(internal)?;
            let managed = self
                .store
                .list_objects(name, LINK_SCOPE)
                .await
                .map_err(internal)?
                .len() as u64;
            let lease = self.store.current_lease(name).await.map_err(internal)?;
            let running_until = lease.as_ref().map(|lease| lease.until);
            let running = lease.map(|lease| lease.holder);
            let status = LinkStatus {
                link: name.clone(),
                source_tenant: link.resolved.source_tenant.name.clone(),
                target_tenant: link.resolved.target_tenant.name.clone(),
                target_kind: link.resolved.target.kind_name().to_owned(),
                next_due: link.resolved.enabled.then(|| {
                    link.resolved
                        .cadence
                        .next_due(runs.first().map(|run| run.started_at), now)
                }),
                managed_objects: managed,
                quarantine: checkpoint.quarantine,
                running,
                running_until,
                mesh: link.resolved.mesh.clone(),
                shards: if matches!(
                    link.spec,
                    Ok(LinkSpec {
                        target: TargetSpec::PersonalContacts(_),
                        ..
                    })
                ) {
                    self.shard_status(name, &poison).await.map_err(internal)?
                } else {
                    None
                },
                ..LinkStatus::default()
            };
            links.push(status.with_history(&runs));
        }
        Ok(StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            links,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{FakeDirectory, FakeExchange, MemStore};
    use crate::report::RunOutcome;
    use std::path::Path;

    struct FakeConnector {
        directories: HashMap<String, Arc<FakeDirectory>>,
        exchanges: HashMap<String, Arc<FakeExchange>>,
    }

    #[async_trait]
    impl Connector for FakeConnector {
        async fn source(
            &self,
            tenant: &NamedTenant,
        ) -> Result<Arc<dyn SourceDirectory>, PortError> {
            Ok(self.directories[&tenant.name].clone())
        }
        async fn mail_contacts(
            &self,
            tenant: &NamedTenant,
        ) -> Result<Arc<dyn MailContactTarget>, PortError> {
            Ok(self.exchanges[&tenant.name].clone())
        }
        fn counters(&self) -> Option<Arc<dyn RequestMeter>> {
            None
        }
    }

    const CONFIG: &str = r#"
[tenants.acme]
tenant_id = "11111111-1111-4111-8111-111111111111"
client_id = "22222222-2222-4222-8222-222222222222"
credential = { env = "ACME_SECRET" }
[tenants.northern]
tenant_id = "33333333-3333-4333-8333-333333333333"
client_id = "44444444-4444-4444-8444-444444444444"
credential = { env = "NORTHERN_SECRET" }
[[meshes]]
name = "group"
tenants = ["acme", "northern"]
interval = "15m"
[meshes.target]
kind = "mail_contact"
"#;

    fn service() -> (EngineService, FakeConnector) {
        let config = Config::from_toml_str(CONFIG, Path::new("galbridge.toml")).unwrap();
        let make = || {
            let mut directories = HashMap::new();
            let mut exchanges = HashMap::new();
            for (name, id, domain) in [
                ("acme", "11111111-1111-4111-8111-111111111111", "acme.com"),
                (
                    "northern",
                    "33333333-3333-4333-8333-333333333333",
                    "northern.com",
                ),
            ] {
                let directory = FakeDirectory::new(id);
                directory.put_user(serde_json::json!({"id": format!("{name}-1"), "displayName": format!("{name} one"),
                    "mail": format!("one@{domain}"), "accountEnabled": true, "userType": "Member"}));
                directories.insert(name.to_owned(), Arc::new(directory));
                exchanges.insert(name.to_owned(), Arc::new(FakeExchange::default()));
            }
            FakeConnector {
                directories,
                exchanges,
            }
        };
        let connector = make();
        let shared = FakeConnector {
            directories: connector.directories.clone(),
            exchanges: connector.exchanges.clone(),
        };
        (
            EngineService::new(&config, Arc::new(MemStore::default()), Arc::new(shared)),
            connector,
        )
    }

    #[tokio::test]
    async fn run_all_syncs_both_directions_of_a_mesh() {
        let (service, world) = service();
        let reports = service.run_all(RunOptions::default()).await;
        assert_eq!(reports.len(), 2);
        assert!(
            reports
                .iter()
                .all(|r| r.as_ref().is_ok_and(|r| r.outcome == RunOutcome::Succeeded)),
            "{reports:?}"
        );
        assert!(
            world.exchanges["northern"]
                .by_address("one@acme.com")
                .is_some()
        );
        assert!(
            world.exchanges["acme"]
                .by_address("one@northern.com")
                .is_some()
        );
    }

    #[tokio::test]
    async fn unknown_links_get_a_suggestion() {
        let (service, _) = service();
        let error = service
            .run_link("group.acme-to-northen", RunOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ServiceError::UnknownLink { suggestion: Some(s), .. } if s == "group.acme-to-northern"),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn run_due_runs_only_links_whose_interval_elapsed() {
        let (service, _) = service();
        let now = Utc::now();
        assert_eq!(service.run_due(now).await.len(), 2, "never ran: due");
        assert_eq!(
            service
                .run_due(now + chrono::Duration::minutes(5))
                .await
                .len(),
            0,
            "ran 5 minutes ago"
        );
        assert_eq!(
            service
                .run_due(now + chrono::Duration::minutes(16))
                .await
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn status_reports_each_link() {
        let (service, _) = service();
        service
            .run_link("group.acme-to-northern", RunOptions::default())
            .await
            .unwrap();
        let status = service.status().await.unwrap();
        assert_eq!(status.links.len(), 2);
        let link = status
            .links
            .iter()
            .find(|l| l.link == "group.acme-to-northern")
            .unwrap();
        assert_eq!(link.managed_objects, 1);
        assert_eq!(link.target_kind, "mail_contact");
        assert!(link.last_run.is_some() && link.next_due.is_some() && link.running.is_none());
        let other = status
            .links
            .iter()
            .find(|l| l.link == "group.northern-to-acme")
            .unwrap();
        assert!(other.last_run.is_none());
    }
}
