//! Human output of the CLI: a compact table per run or per link, plus the lines worth reading (failures,
//! quarantines). `--json` bypasses this and prints the report types of [`crate::report`] as they are.

use std::fmt::Write as _;

use crate::report::{LinkStatus, RunOutcome, RunReport, StatusReport};

fn outcome_name(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::PartiallyFailed => "partially failed",
        RunOutcome::Quarantined => "quarantined",
        RunOutcome::Failed => "failed",
        RunOutcome::Planned => "planned",
    }
}

fn mode_name(report: &RunReport) -> &'static str {
    match report.mode {
        crate::report::RunMode::Incremental => "incremental",
        crate::report::RunMode::Full => "full",
        crate::report::RunMode::DryRun => "dry run",
    }
}

fn seconds(duration_ms: u64) -> String {
    format!("{:.1}s", duration_ms as f64 / 1000.0)
}

/// Renders rows as left-aligned columns (numbers right-aligned), two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>], numeric: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            let width = widths[index];
            if index > 0 {
                text.push_str("  ");
            }
            if numeric.get(index).copied().unwrap_or(false) {
                let _ = write!(text, "{cell:>width$}");
            } else {
                let _ = write!(text, "{cell:<width$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// One line per run, then failures and quarantines.
pub fn run_table(reports: &[RunReport]) -> String {
    let header = [
        "LINK", "OUTCOME", "MODE", "READ", "CREATE", "UPDATE", "DELETE", "CONFLICT", "FAILED",
        "TIME",
    ];
    let numeric = [
        false, false, false, true, true, true, true, true, true, true,
    ];
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|report| {
            // A dry run shows what it would do; a real run what it did.
            let counts = if report.outcome == RunOutcome::Planned {
                &report.planned
            } else {
                &report.applied
            };
            vec![
                report.link.clone(),
                outcome_name(report.outcome).to_owned(),
                mode_name(report).to_owned(),
                report.source_read.to_string(),
                counts.creates.to_string(),
                counts.updates.to_string(),
                (counts.deletes + counts.hides).to_string(),
                report.planned.conflicts.to_string(),
                report.failures.len().to_string(),
                seconds(report.duration_ms),
            ]
        })
        .collect();
    let mut out = table(&header, &rows, &numeric);
    for report in reports {
        notes(&mut out, report);
    }
    out
}

/// The lines worth reading under a run: its first failures and its quarantine.
fn notes(out: &mut String, report: &RunReport) {
    for failure in report.failures.iter().take(10) {
        let who = failure.anchor.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "  {}: {} {who}: {}",
            report.link, failure.kind, failure.reason
        );
    }
    if report.failures.len() > 10 {
        let _ = writeln!(
            out,
            "  {}: … {} more (see --json)",
            report.link,
            report.failures.len() - 10
        );
    }
    if let Some(quarantine) = &report.quarantine {
        let _ = writeln!(
            out,
            "  {}: quarantined: {} deletes held ({}); {}",
            report.link, quarantine.held_deletes, quarantine.threshold, quarantine.release_hint
        );
    }
}

/// `purge`: the summary line, then for a dry run every contact that would be removed (name and anchor) and every
/// state entry that would be forgotten (managed, but no longer in the target), then failures.
pub fn purge_listing(report: &RunReport) -> String {
    let mut out = format!("{}\n", report.summary);
    if let Some(plan) = &report.plan {
        let text = |value: &serde_json::Value| value.as_str().unwrap_or("?").to_owned();
        for removal in plan["removals"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  would remove {}  ({})",
                text(&removal["display_name"]),
                text(&removal["anchor"])
            );
        }
        for anchor in plan["forget"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  would forget {} (managed, no longer in the target)",
                text(anchor)
            );
        }
    }
    notes(&mut out, report);
    out
}

fn last_run_cell(status: &LinkStatus) -> (String, String) {
    match &status.last_run {
        Some(run) => (
            run.started_at.format("%Y-%m-%d %H:%M").to_string(),
            outcome_name(run.outcome).to_owned(),
        ),
        None => ("never".to_owned(), "-".to_owned()),
    }
}

/// One line per link.
pub fn status_table(status: &StatusReport) -> String {
    let header = [
        "LINK", "FROM", "TO", "KIND", "LAST RUN", "OUTCOME", "NEXT DUE", "MANAGED", "STATE",
    ];
    let numeric = [false, false, false, false, false, false, false, true, false];
    let rows: Vec<Vec<String>> = status
        .links
        .iter()
        .map(|link| {
            let (last, outcome) = last_run_cell(link);
            let state = match (&link.running, &link.quarantine) {
                (Some(holder), _) => match link.running_until {
                    Some(until) => format!(
                        "running ({holder}, lease until {})",
                        until.format("%H:%M:%S UTC")
                    ),
                    None => format!("running ({holder})"),
                },
                (None, Some(quarantine)) => {
                    format!("quarantined ({} deletes held)", quarantine.held_deletes)
                }
                (None, None) => link.health.name().to_owned(),
            };
            vec![
                link.link.clone(),
                link.source_tenant.clone(),
                link.target_tenant.clone(),
                link.target_kind.clone(),
                last,
                outcome,
                link.next_due.map_or_else(
                    || "-".to_owned(),
                    |due| due.format("%Y-%m-%d %H:%M").to_string(),
                ),
                link.managed_objects.to_string(),
                state,
            ]
        })
        .collect();
    let mut out = table(&header, &rows, &numeric);
    for link in &status.links {
        for object in link.failing_objects.iter().take(10) {
            let mailbox = object
                .mailbox
                .as_deref()
                .map(|mailbox| format!(" in {mailbox}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}: failing {} runs in a row: {}{mailbox}: {}: {}",
                link.link, object.runs, object.anchor, object.kind, object.last_error
            );
        }
        let unlisted = link
            .failing_objects_total
            .saturating_sub(link.failing_objects.len().min(10) as u64);
        if unlisted > 0 {
            let _ = writeln!(
                out,
                "  {}: … {unlisted} more failing objects (see --json)",
                link.link
            );
        }
        if let Some(quarantine) = &link.quarantine {
            let _ = writeln!(
                out,
                "  {}: quarantined since {}: {} deletes held ({}); {}",
                link.link,
                quarantine.since.format("%Y-%m-%d %H:%M"),
                quarantine.held_deletes,
                quarantine.threshold,
                quarantine.release_hint
            );
        }
        if let Some(shards) = &link.shards {
            shard_lines(&mut out, &link.link, shards);
        }
    }
    out
}

/// A phones link's latest shard set: progress, then each poisoned or failed shard.
fn shard_lines(out: &mut String, link: &str, shards: &crate::report::ShardSetStatus) {
    let place = shards
        .queue
        .as_deref()
        .map_or_else(|| "in process".to_owned(), |queue| format!("queue {queue}"));
    let _ = writeln!(
        out,
        "  {link}: shards of run {} ({place}, {}): {}/{} done, {} pending ({} in flight), {} failed; mailboxes {}/{} done",
        shards.generation,
        shards.created_at.format("%Y-%m-%d %H:%M"),
        shards.done,
        shards.shards,
        shards.pending,
        shards.in_flight,
        shards.failed,
        shards.mailboxes_done,
        shards.mailboxes
    );
    for poisoned in &shards.poisoned {
        let _ = writeln!(
            out,
            "  {link}: shard {} poisoned (message {}{}){}",
            poisoned.shard,
            poisoned.message_id,
            poisoned
                .inserted
                .as_deref()
                .map(|at| format!(", since {at}"))
                .unwrap_or_default(),
            poisoned
                .last_error
                .as_deref()
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        );
    }
    for failed in &shards.failed_shards {
        let _ = writeln!(
            out,
            "  {link}: shard {} failed with {} mailbox(es) left (the next run reconciles them){}",
            failed.shard,
            failed.mailboxes_left,
            failed
                .last_error
                .as_deref()
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_shows_a_phones_link_s_shards_and_poisoned_ones() {
        let status = StatusReport {
            version: "0".into(),
            links: vec![LinkStatus {
                link: "acme-phones".into(),
                shards: Some(crate::report::ShardSetStatus {
                    generation: "g1".into(),
                    queue: Some("galbridge-phones-shards".into()),
                    shards: 3,
                    done: 1,
                    pending: 1,
                    failed: 1,
                    in_flight: 0,
                    mailboxes: 25,
                    mailboxes_done: 19,
                    poisoned: vec![crate::report::PoisonedShard {
                        shard: 2,
                        message_id: "m-7".into(),
                        inserted: None,
                        last_error: Some("403 ErrorAccessDenied".into()),
                    }],
                    failed_shards: vec![crate::report::FailedShard {
                        shard: 2,
                        mailboxes_left: 1,
                        last_error: None,
                    }],
                    ..crate::report::ShardSetStatus::default()
                }),
                ..LinkStatus::default()
            }],
        };
        let text = status_table(&status);
        assert!(
            text.contains("acme-phones: shards of run g1 (queue galbridge-phones-shards, ")
                && text
                    .contains("1/3 done, 1 pending (0 in flight), 1 failed; mailboxes 19/25 done"),
            "{text}"
        );
        assert!(
            text.contains("acme-phones: shard 2 poisoned (message m-7): 403 ErrorAccessDenied"),
            "{text}"
        );
        assert!(
            text.contains("acme-phones: shard 2 failed with 1 mailbox(es) left"),
            "{text}"
        );
    }

    #[test]
    fn status_table_names_failing_objects_under_their_link() {
        use crate::report::{FailingObject, Health};
        let status = StatusReport {
            version: "0".into(),
            links: vec![LinkStatus {
                link: "a-to-b".into(),
                source_tenant: "a".into(),
                target_tenant: "b".into(),
                target_kind: "mail_contact".into(),
                health: Health::Failing,
                failing_objects: vec![FailingObject {
                    anchor: "galbridge:t:1".into(),
                    mailbox: None,
                    runs: 4,
                    last_error: "address in use".into(),
                    kind: "conflict_address".into(),
                }],
                failing_objects_total: 12,
                ..LinkStatus::default()
            }],
        };
        let text = status_table(&status);
        assert!(text.lines().next().unwrap().ends_with("STATE"), "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with("failing"), "{text}");
        assert!(text.contains(
            "  a-to-b: failing 4 runs in a row: galbridge:t:1: conflict_address: address in use\n"
        ));
        assert!(text.contains("  a-to-b: … 11 more failing objects (see --json)\n"));
    }

    #[test]
    fn tables_align_columns() {
        let text = table(
            &["NAME", "N"],
            &[
                vec!["a".into(), "5".into()],
                vec!["long-name".into(), "12".into()],
            ],
            &[false, true],
        );
        assert_eq!(text, "NAME        N\na           5\nlong-name  12\n");
    }
}
