//! Uninstalling a link (`galbridge purge --link NAME`): every object the link manages is removed from the target
//! (whatever its `on_delete` policy), then the link's state is forgotten. A dry run first lists what would go.
//! Only objects carrying this link's anchors are touched, as everywhere else.

use std::sync::atomic::AtomicBool;

use super::apply::MailContactApplier;
use super::run::Runner;
use crate::engine::diff::OnDelete;
use crate::engine::entry::{Field, anchor_prefix_for};
use crate::engine::lifecycle::{Ending, RunBody, RunError, run_leased};
use crate::engine::plan::{Plan, Removal, RemovalAction};
use crate::engine::records::load_managed;
use crate::engine::spec::LinkSpec;
use crate::report::{Failure, PlanCounts, RunMode, RunOutcome, RunReport};

impl Runner {
    /// Removes every object the link manages (`execute`), or reports what would go (dry run).
    pub async fn purge(&self, link: &LinkSpec, execute: bool) -> Result<RunReport, RunError> {
        run_leased(
            self.scope(&link.name),
            Ending::Purge,
            |cancelled| async move {
                let (plan, applied, failures, outcome) =
                    match self.purge_leased(link, execute, &cancelled).await {
                        Ok(parts) => parts,
                        Err(reason) => (
                            Plan::default(),
                            PlanCounts::default(),
                            vec![Failure {
                                anchor: None,
                                mailbox: None,
                                kind: "purge_failed".into(),
                                reason,
                            }],
                            RunOutcome::Failed,
                        ),
                    };
                RunBody {
                    mode: if execute {
                        RunMode::Full
                    } else {
                        RunMode::DryRun
                    },
                    outcome,
                    source_read: 0,
                    source_changes: 0,
                    planned: plan.counts(),
                    applied,
                    failures,
                    quarantine: None,
                    plan: (!execute).then(|| plan.to_json()),
                    warnings: Vec::new(),
                }
            },
        )
        .await
    }

    async fn purge_leased(
        &self,
        link: &LinkSpec,
        execute: bool,
        cancelled: &AtomicBool,
    ) -> Result<(Plan, PlanCounts, Vec<Failure>, RunOutcome), String> {
        let tenant_id = self
            .source
            .tenant_id()
            .await
            .map_err(|e| format!("source tenant: {e}"))?;
        let prefix = anchor_prefix_for(&tenant_id);
        let mut managed = load_managed(self.store.as_ref(), &link.name)
            .await
            .map_err(|e| e.to_string())?;
        let no_prior_intents = std::collections::BTreeSet::new();
        let mut options = link.target.clone();
        options.policy.on_delete = OnDelete::Delete;
        let applier = MailContactApplier {
            link: &link.name,
            target: self.target.as_ref(),
            store: self.store.as_ref(),
            options: &options,
            managed: &std::collections::BTreeMap::new(),
            max_concurrency: link.max_concurrency,
            cancelled,
            prior_intents: &no_prior_intents,
        };
        let mut intent_failures = Vec::new();
        if execute && managed.values().any(|m| m.pending) {
            // An interrupted create may have left a contact without its anchor: claim it first, so it is purged too.
            intent_failures = applier.resolve_intents(&mut managed).await.failures;
        }
        let contacts = self
            .target
            .list_contacts(link.target.anchor_attribute)
            .await
            .map_err(|e| format!("target: {e}"))?;
        let mut plan = Plan {
            link: link.name.clone(),
            target_kind: "mail_contact".into(),
            full: true,
            ..Plan::default()
        };
        for contact in &contacts {
            let Some(anchor) = contact.anchor.as_deref() else {
                continue;
            };
            if !anchor.starts_with(&prefix) {
                continue;
            }
            plan.removals.push(Removal {
                anchor: anchor.to_owned(),
                target_id: contact.id.clone(),
                display_name: contact
                    .fields
                    .get(&Field::DisplayName)
                    .cloned()
                    .unwrap_or_else(|| contact.name.clone()),
                action: RemovalAction::Delete,
                reason: "purge".into(),
            });
        }
        let in_target: std::collections::HashSet<&str> =
            plan.removals.iter().map(|r| r.anchor.as_str()).collect();
        plan.forget = managed
            .keys()
            .filter(|anchor| !in_target.contains(anchor.as_str()))
            .cloned()
            .collect();
        if !execute {
            return Ok((plan, PlanCounts::default(), Vec::new(), RunOutcome::Planned));
        }
        let applier = MailContactApplier {
            managed: &managed,
            ..applier
        };
        let mut result = applier.apply(&plan).await;
        result.failures.extend(intent_failures);
        let outcome = if result.hard_failures() == 0 {
            self.store
                .delete_link(&link.name)
                .await
                .map_err(|e| e.to_string())?;
            RunOutcome::Succeeded
        } else {
            RunOutcome::PartiallyFailed
        };
        Ok((plan, result.applied, result.failures, outcome))
    }
}
