//! One run of one mail-contact link (docs/architecture.md, "One sync run"): take the lease (renewed while running),
//! load the checkpoint, run the shared source stage (`source_stage`: read, hidden, scope, map), diff, apply the safety
//! net, apply the plan, commit what the source stage read only if everything applied, release the lease, store the
//! run report. A dry run stops after the safety net and returns the plan.

use chrono::Utc;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::apply::{IntentResolution, MailContactApplier};
use crate::engine::diff::{DiffInput, SourceView, diff};
use crate::engine::entry::anchor_prefix_for;
pub use crate::engine::lifecycle::RunError;
use crate::engine::lifecycle::{Ending, RunBody, RunScope, run_leased};
use crate::engine::ports::{MailContactTarget, PortError, RequestCounters, SourceDirectory};
use crate::engine::records::load_managed;
use crate::engine::safety;
use crate::engine::source_stage::{SourceRules, read_source};
use crate::engine::spec::LinkSpec;
use crate::report::{PlanCounts, RunMode, RunOptions, RunOutcome, RunReport};
use crate::state::{StateError, StateStore};

/// Default lease duration; the lease is renewed every third of it while the run lasts.
pub const DEFAULT_LEASE_TTL_SECS: i64 = 120;

/// Why a run that started could not complete (it becomes a `Failed` report).
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("reading the source failed: {0}")]
    Source(PortError),
    #[error("reading the target failed: {0}")]
    Target(PortError),
    #[error("state store: {0}")]
    State(#[from] StateError),
}

/// What a run needs: the state store, the ports to the source and target tenants, and the request counters.
#[derive(Clone)]
pub struct Runner {
    pub store: Arc<dyn StateStore>,
    pub source: Arc<dyn SourceDirectory>,
    pub target: Arc<dyn MailContactTarget>,
    pub counters: Option<Arc<dyn RequestCounters>>,
    /// Who runs (`{hostname}:{pid}`); the run id is appended.
    pub holder: String,
    pub lease_ttl: chrono::Duration,
}

impl RunBody {
    fn failed(mode: RunMode, error: &StepError) -> RunBody {
        let kind = match error {
            StepError::Source(_) => "source_unreadable",
            StepError::Target(_) => "target_unreadable",
            StepError::State(_) => "state_error",
        };
        RunBody::failure(mode, kind, error.to_string())
    }
}

impl Runner {
    /// What the run lifecycle needs of this runner for `link`.
    pub(crate) fn scope<'a>(&'a self, link: &'a str) -> RunScope<'a> {
        RunScope {
            store: &self.store,
            link,
            holder: &self.holder,
            lease_ttl: self.lease_ttl,
            counters: self.counters.as_ref(),
        }
    }

    /// Runs one link. A second concurrent run of the same link is refused with [`RunError::LeaseHeld`].
    pub async fn run(&self, link: &LinkSpec, options: &RunOptions) -> Result<RunReport, RunError> {
        let ending = Ending::Sync {
            dry_run: options.dry_run,
        };
        run_leased(self.scope(&link.name), ending, |cancelled| async move {
            self.run_leased(link, options, &cancelled).await
        })
        .await
    }

    async fn run_leased(
        &self,
        link: &LinkSpec,
        options: &RunOptions,
        cancelled: &AtomicBool,
    ) -> RunBody {
        let fallback_mode = if options.dry_run {
            RunMode::DryRun
        } else {
            RunMode::Incremental
        };
        match self.steps(link, options, cancelled).await {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(link = %link.name, error = %error, "Run failed.");
                RunBody::failed(fallback_mode, &error)
            }
        }
    }

    async fn steps(
        &self,
        link: &LinkSpec,
        options: &RunOptions,
        cancelled: &AtomicBool,
    ) -> Result<RunBody, StepError> {
        let now = Utc::now();
        let mut checkpoint = self.store.load_checkpoint(&link.name).await?;
        let rules = SourceRules {
            link: &link.name,
            source_tenant: &link.source_tenant,
            scope: &link.scope,
            mapping: &link.mapping,
            overrides: &link.overrides,
            full_reconcile_every: link.full_reconcile_every,
        };
        let mut batch = read_source(&rules, self.source.as_ref(), &checkpoint, options.full, now)
            .await
            .map_err(StepError::Source)?;
        let full = batch.full;
        let mode = if options.dry_run {
            RunMode::DryRun
        } else if full {
            RunMode::Full
        } else {
            RunMode::Incremental
        };
        let warnings = batch.warnings();

        let mut managed = load_managed(self.store.as_ref(), &link.name).await?;
        let no_prior_intents = BTreeSet::new();
        let applier = MailContactApplier {
            link: &link.name,
            target: self.target.as_ref(),
            store: self.store.as_ref(),
            options: &link.target,
            managed: &BTreeMap::new(),
            max_concurrency: link.max_concurrency,
            cancelled,
            prior_intents: &no_prior_intents,
        };
        let intents = if !options.dry_run && managed.values().any(|m| m.pending) {
            let resolution = applier.resolve_intents(&mut managed).await;
            tracing::info!(link = %link.name, claimed = resolution.claimed, not_found = resolution.not_found.len(),
                held_back = resolution.held_back.len(), "Resolved the create intents of an interrupted run.");
            resolution
        } else {
            IntentResolution::default()
        };

        let source_view = SourceView {
            complete: full,
            desired: std::mem::take(&mut batch.desired),
            gone: std::mem::take(&mut batch.gone),
        };
        let target_objects = if full {
            Some(
                self.target
                    .list_contacts(link.target.anchor_attribute)
                    .await
                    .map_err(StepError::Target)?,
            )
        } else {
            None
        };
        let anchor_prefix = anchor_prefix_for(&batch.tenant_id);
        let mut plan = diff(&DiffInput {
            source: &source_view,
            managed: &managed,
            target: target_objects.as_deref(),
            anchor_prefix: &anchor_prefix,
            policy: &link.target.policy,
        });
        plan.link = link.name.clone();
        plan.target_kind = "mail_contact".into();
        plan.full = full;
        plan.from_checkpoint = batch.from_checkpoint.clone();
        plan.to_checkpoint = Some(batch.delta_link.clone());
        // A person whose interrupted create could not be looked up waits for the next run (creating now could
        // duplicate a contact that exists).
        plan.creates
            .retain(|create| !intents.held_back.contains(&create.anchor));

        let managed_count = managed.values().filter(|m| !m.pending).count() as u64;
        let in_scope = full.then_some(source_view.desired.len() as u64);
        let quarantine = safety::enforce(
            &mut plan,
            link.safety,
            managed_count,
            in_scope,
            options.allow_deletes,
            checkpoint.quarantine.as_ref(),
            now,
        );
        let planned = plan.counts();
        let source_read = batch.read;
        let source_changes = batch.read;

        if options.dry_run {
            return Ok(RunBody {
                mode,
                outcome: RunOutcome::Planned,
                source_read,
                source_changes,
                applied: PlanCounts::default(),
                failures: Vec::new(),
                quarantine,
                plan: Some(plan.to_json()),
                planned,
                warnings,
            });
        }

        let applier = MailContactApplier {
            managed: &managed,
            prior_intents: &intents.not_found,
            ..applier
        };
        let mut result = applier.apply(&plan).await;
        result.failures.extend(intents.failures);
        let hard_failures = result.hard_failures();
        let lost = cancelled.load(Ordering::SeqCst);
        let outcome = if hard_failures > 0 || lost {
            RunOutcome::PartiallyFailed
        } else if quarantine.is_some() {
            RunOutcome::Quarantined
        } else {
            RunOutcome::Succeeded
        };

        checkpoint.last_run_at = Some(Utc::now());
        checkpoint.quarantine = quarantine.clone();
        if outcome == RunOutcome::Succeeded {
            // Only a plan that fully applied moves the checkpoint (a held removal or a failure replays next time).
            batch.commit(&mut checkpoint, now);
        }
        if !lost {
            self.store.save_checkpoint(&link.name, &checkpoint).await?;
        }
        Ok(RunBody {
            mode,
            outcome,
            source_read,
            source_changes,
            planned,
            applied: result.applied,
            failures: result.failures,
            quarantine,
            plan: None,
            warnings,
        })
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
