//! Uninstalling a `personal_contacts` link (`galbridge purge --link NAME`): every contact the link recorded in
//! every mailbox is deleted (a dry run lists how many per mailbox), then the link's state is forgotten. Only
//! contacts galbridge recorded are touched; the owners' contacts and the folder itself stay.

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use serde_json::json;

use super::mailbox_write::remove_recorded;
use super::records::{forget_mailbox, load_mailbox};
use super::run::PhonesRunner;
use super::spec::PhonesSpec;
use crate::engine::lease::HeldLease;
use crate::engine::runner::RunError;
use crate::report::{Failure, PlanCounts, RunMode, RunOutcome, RunReport};

impl PhonesRunner {
    /// Removes every contact the link manages (`execute`), or reports what would go.
    pub async fn purge(&self, link: &PhonesSpec, execute: bool) -> Result<RunReport, RunError> {
        let started_at = Utc::now();
        let clock = Instant::now();
        let run_id = uuid::Uuid::new_v4().to_string();
        let holder = format!("{}:{run_id}:purge", self.holder);
        let HeldLease {
            lease,
            cancelled: _,
            renewal,
        } = HeldLease::acquire(&self.store, &link.name, &holder, self.lease_ttl).await?;
        let mut planned = PlanCounts::default();
        let mut applied = PlanCounts::default();
        let mut failures = Vec::new();
        let mut per_mailbox = BTreeMap::new();
        let scopes = self.store.list_scopes(&link.name).await;
        match scopes {
            Err(error) => failures.push(purge_failure(None, error.to_string())),
            Ok(scopes) => {
                for mailbox in scopes {
                    let state = match load_mailbox(self.store.as_ref(), &link.name, &mailbox).await
                    {
                        Ok(state) => state,
                        Err(error) => {
                            failures.push(purge_failure(Some(&mailbox), error.to_string()));
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
                            if let Err(error) =
                                forget_mailbox(self.store.as_ref(), &link.name, &mailbox, &state)
                                    .await
                            {
                                failures.push(purge_failure(Some(&mailbox), error.to_string()));
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
        renewal.finish().await;
        let held = lease.lock().await.clone();
        let _ = self.store.release_lease(&held).await;
        let outcome = match (execute, failures.is_empty()) {
            (false, _) => RunOutcome::Planned,
            (true, true) => RunOutcome::Succeeded,
            (true, false) => RunOutcome::PartiallyFailed,
        };
        let summary = format!(
            "{}: purge {}: {} contacts in {} mailboxes {}",
            link.name,
            if execute { "ran" } else { "planned" },
            planned.deletes,
            per_mailbox.len(),
            if execute {
                format!("({} removed, {} failed)", applied.deletes, failures.len())
            } else {
                "would be removed".into()
            }
        );
        Ok(RunReport {
            link: link.name.clone(),
            run_id,
            mode: if execute {
                RunMode::Full
            } else {
                RunMode::DryRun
            },
            outcome,
            started_at,
            duration_ms: clock.elapsed().as_millis() as u64,
            source_read: 0,
            source_changes: 0,
            planned,
            applied,
            failures,
            throttled_retries: 0,
            requests: BTreeMap::new(),
            quarantine: None,
            plan: (!execute)
                .then(|| json!({"target_kind": "personal_contacts", "mailboxes": per_mailbox})),
            summary,
        })
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
