//! Uninstalling a `personal_contacts` link (`galbridge purge --link NAME`): every contact the link recorded in
//! every mailbox is deleted (a dry run lists how many per mailbox), then the link's state is forgotten. Only
//! contacts galbridge recorded are touched; the owners' contacts and the folder itself stay.

use std::collections::BTreeMap;

use serde_json::json;

use super::mailbox_write::remove_recorded;
use super::records::{forget_mailbox, load_mailbox};
use super::run::PhonesRunner;
use super::spec::PhonesSpec;
use crate::engine::lifecycle::{Ending, RunBody, RunError, run_leased};
use crate::report::{Failure, PlanCounts, RunMode, RunOutcome, RunReport};

impl PhonesRunner {
    /// Removes every contact the link manages (`execute`), or reports what would go.
    pub async fn purge(&self, link: &PhonesSpec, execute: bool) -> Result<RunReport, RunError> {
        run_leased(
            self.scope(&link.name),
            Ending::Purge,
            |_cancelled| async move {
                let mut planned = PlanCounts::default();
                let mut applied = PlanCounts::default();
                let mut failures = Vec::new();
                let mut per_mailbox = BTreeMap::new();
                let scopes = self.store.list_scopes(&link.name).await;
                match scopes {
                    Err(error) => failures.push(purge_failure(None, error.to_string())),
                    Ok(scopes) => {
                        for mailbox in scopes {
                            let state =
                                match load_mailbox(self.store.as_ref(), &link.name, &mailbox).await
                                {
                                    Ok(state) => state,
                                    Err(error) => {
                                        failures
                                            .push(purge_failure(Some(&mailbox), error.to_string()));
                                        continue;
                                    }
                                };
                            planned.deletes += state.contacts.len() as u64;
                            per_mailbox.insert(mailbox.clone(), state.contacts.len());
                            if !execute {
                                continue;
                            }
                            match remove_recorded(&self.target_graph, &mailbox, &state).await {
                                Ok(removed) => {
                                    applied.deletes += removed;
                                    if let Err(error) = forget_mailbox(
                                        self.store.as_ref(),
                                        &link.name,
                                        &mailbox,
                                        &state,
                                    )
                                    .await
                                    {
                                        failures
                                            .push(purge_failure(Some(&mailbox), error.to_string()));
                                    }
                                }
                                Err(failure) => failures.push(failure),
                            }
                        }
                    }
                }
                if execute
                    && failures.is_empty()
                    && let Err(error) = self.store.delete_link(&link.name).await
                {
                    failures.push(purge_failure(None, error.to_string()));
                }
                let outcome = match (execute, failures.is_empty()) {
                    (false, _) => RunOutcome::Planned,
                    (true, true) => RunOutcome::Succeeded,
                    (true, false) => RunOutcome::PartiallyFailed,
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
                    planned,
                    applied,
                    failures,
                    quarantine: None,
                    plan: (!execute).then(
                        || json!({"target_kind": "personal_contacts", "mailboxes": per_mailbox}),
                    ),
                    warnings: Vec::new(),
                }
            },
        )
        .await
    }
}

fn purge_failure(mailbox: Option<&str>, reason: String) -> Failure {
    Failure {
        anchor: None,
        mailbox: mailbox.map(str::to_owned),
        kind: "purge_failed".into(),
        reason,
    }
}
