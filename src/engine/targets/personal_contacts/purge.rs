//! Uninstalling a `personal_contacts` link (`galbridge purge --link NAME`): every contact the link recorded in
//! every mailbox is deleted (a dry run lists how many per mailbox), then the link's state is forgotten. Only
//! contacts galbridge recorded are touched; the owners' contacts and the folder itself stay.

use std::collections::BTreeMap;

use super::PersonalContacts;
use super::mailbox_write::remove_recorded;
use super::records::{forget_mailbox, load_mailbox};
use crate::engine::plan::{MailboxFanOut, Plan};
use crate::engine::targets::{Purged, RunContext};
use crate::report::{Failure, PlanCounts};

/// See the module docs. Failures are per mailbox; the link's state goes only when every mailbox was emptied.
pub(super) async fn purge(
    target: &PersonalContacts,
    run: &RunContext<'_>,
    execute: bool,
) -> Purged {
    let link = &run.link.name;
    let store = run.store.as_ref();
    let mut planned = PlanCounts::default();
    let mut applied = PlanCounts::default();
    let mut failures = Vec::new();
    let mut recorded = BTreeMap::new();
    match store.list_scopes(link).await {
        Err(error) => failures.push(purge_failure(None, error.to_string())),
        Ok(scopes) => {
            for mailbox in scopes
                .into_iter()
                .filter(|scope| super::shards::is_mailbox_scope(scope))
            {
                let state = match load_mailbox(store, link, &mailbox).await {
                    Ok(state) => state,
                    Err(error) => {
                        failures.push(purge_failure(Some(&mailbox), error.to_string()));
                        continue;
                    }
                };
                planned.deletes += state.contacts.len() as u64;
                recorded.insert(mailbox.clone(), state.contacts.len() as u64);
                if !execute {
                    continue;
                }
                match remove_recorded(&target.target_graph, &mailbox, &state).await {
                    Ok(removed) => {
                        applied.deletes += removed;
                        if let Err(error) = forget_mailbox(store, link, &mailbox, &state).await {
                            failures.push(purge_failure(Some(&mailbox), error.to_string()));
                        }
                    }
                    Err(failure) => failures.push(failure),
                }
            }
        }
    }
    let complete = execute && failures.is_empty();
    if complete && let Err(error) = store.delete_link(link).await {
        failures.push(purge_failure(None, error.to_string()));
    }
    Purged {
        plan: Plan {
            mailboxes: Some(MailboxFanOut {
                selected: recorded.len() as u64,
                recorded,
                ..MailboxFanOut::default()
            }),
            ..Plan::default()
        },
        planned,
        applied,
        complete: failures.is_empty() && execute,
        failures,
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
