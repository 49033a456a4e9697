//! The same behaviour, asserted against every state store: `MemoryStore`, `FileStore` (temp directory) and
//! `TableStore` (a real Azurite started by the test setup, one fresh table per test).
//!
//! What the engine relies on: one run per link (lease exclusivity, takeover after expiry, one winner among racers),
//! checkpoints that come back as saved, object maps per (link, scope) that survive awkward anchors and more than one
//! batch, capped and ordered run records, `delete_link` forgetting only its link.

// The `suite` functions are test bodies (each is instantiated as three `#[tokio::test]`s by the macro below), so
// they get the same allowance as `#[test]` functions.
#![allow(clippy::unwrap_used)]

#[path = "support/azurite.rs"]
mod azurite;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::{Duration, TimeZone, Utc};
use galbridge::report::{
    Failure, HeldDelete, PlanCounts, QuarantineInfo, RunMode, RunOutcome, RunReport,
};
use galbridge::state::{
    BudgetRule, FileStore, LINK_SCOPE, LinkCheckpoint, MemoryStore, ObjectRecord, RUN_RECORDS_KEPT,
    StateError, StateStore, TableStore, TableStoreConfig,
};

/// A store under test, plus whatever must live as long as it.
struct Harness {
    store: Arc<dyn StateStore>,
    _dir: Option<tempfile::TempDir>,
    /// How to open the same stored state again (a restart); `None` for the in-process store.
    reopen: Option<Reopen>,
}

enum Reopen {
    File(std::path::PathBuf),
    Table(TableStoreConfig),
}

impl Harness {
    fn memory() -> Option<Self> {
        Some(Self {
            store: Arc::new(MemoryStore::new()),
            _dir: None,
            reopen: None,
        })
    }

    fn file() -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state");
        let store = FileStore::open(&path).expect("open file store");
        Some(Self {
            store: Arc::new(store),
            _dir: Some(dir),
            reopen: Some(Reopen::File(path)),
        })
    }

    /// A second store over the same stored state, as a restarted process opens it.
    async fn reopened(&self) -> Option<Arc<dyn StateStore>> {
        Some(match self.reopen.as_ref()? {
            Reopen::File(path) => Arc::new(FileStore::open(path).expect("reopen file store")),
            Reopen::Table(config) => Arc::new(
                TableStore::open(config.clone())
                    .await
                    .expect("reopen table store"),
            ),
        })
    }

    async fn table() -> Option<Self> {
        let azurite = azurite::shared()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        static NEXT_TABLE: AtomicU32 = AtomicU32::new(0);
        let table = format!(
            "conf{}x{}",
            std::process::id(),
            NEXT_TABLE.fetch_add(1, Ordering::Relaxed)
        );
        let config = TableStoreConfig::from_connection_string(&azurite.connection_string(), &table)
            .expect("connection string");
        let store = TableStore::open(config.clone())
            .await
            .expect("open table store");
        Some(Self {
            store: Arc::new(store),
            _dir: None,
            reopen: Some(Reopen::Table(config)),
        })
    }
}

fn record(anchor: &str, hash: &str) -> ObjectRecord {
    ObjectRecord {
        anchor: anchor.to_owned(),
        target_id: format!("target-of-{anchor}"),
        hash: hash.to_owned(),
        data: Some(
            serde_json::json!({ "displayName": format!("Person {anchor}"), "phones": ["+1 555 0100"] }),
        ),
        updated_at: Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap(),
    }
}

fn report(link: &str, run_id: &str, minute: u32) -> RunReport {
    RunReport {
        link: link.to_owned(),
        run_id: run_id.to_owned(),
        mode: RunMode::Incremental,
        outcome: RunOutcome::Succeeded,
        started_at: Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap()
            + Duration::minutes(i64::from(minute)),
        duration_ms: 1200,
        source_read: 10,
        source_changes: 2,
        planned: PlanCounts {
            creates: 2,
            ..PlanCounts::default()
        },
        applied: PlanCounts {
            creates: 2,
            ..PlanCounts::default()
        },
        failures: Vec::new(),
        throttled_retries: 0,
        requests: [("graph".to_owned(), 3)].into_iter().collect(),
        quarantine: None,
        plan: None,
        summary: format!("run {run_id}"),
    }
}

/// Anchors that break naive keys and file names.
fn awkward_anchors() -> Vec<String> {
    vec![
        "galbridge:7c9a1f0e-0000-4000-8000-000000000001:slash/in/id".to_owned(),
        "galbridge:tenant:hash#and?question".to_owned(),
        "galbridge:tenant:back\\slash%percent'quote".to_owned(),
        "galbridge:tenant:Ünïcødé-名前-😀".to_owned(),
        "galbridge:tenant:pipe|and|tilde~".to_owned(),
        "galbridge:tenant:CASE".to_owned(),
        "galbridge:tenant:case".to_owned(),
    ]
}

mod suite {
    use super::*;

    pub async fn lease_is_exclusive_until_expiry_then_taken_over(h: &Harness) {
        let store = &h.store;
        let first = store
            .acquire_lease("link-a", "host1:1:run1", Duration::milliseconds(1500))
            .await
            .unwrap();
        assert_eq!(first.holder, "host1:1:run1");

        let refused = store
            .acquire_lease("link-a", "host2:2:run2", Duration::seconds(60))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, StateError::LeaseHeld { holder, .. } if holder == "host1:1:run1"),
            "second run must be refused while the lease is live: {refused:?}"
        );
        assert_eq!(
            store
                .current_lease("link-a")
                .await
                .unwrap()
                .map(|l| l.holder),
            Some("host1:1:run1".to_owned())
        );

        tokio::time::sleep(std::time::Duration::from_millis(1700)).await;
        assert_eq!(
            store.current_lease("link-a").await.unwrap(),
            None,
            "an expired lease is nobody's"
        );
        let second = store
            .acquire_lease("link-a", "host2:2:run2", Duration::seconds(60))
            .await
            .unwrap();

        let lost = store
            .renew_lease(&first, Duration::seconds(60))
            .await
            .unwrap_err();
        assert!(
            matches!(lost, StateError::LeaseLost { .. }),
            "the old holder must learn it lost: {lost:?}"
        );
        store.release_lease(&first).await.unwrap();
        assert_eq!(
            store
                .current_lease("link-a")
                .await
                .unwrap()
                .map(|l| l.holder),
            Some("host2:2:run2".to_owned()),
            "releasing a stale lease must not free the new holder's"
        );

        let renewed = store
            .renew_lease(&second, Duration::seconds(120))
            .await
            .unwrap();
        assert!(renewed.until > second.until);
        store.release_lease(&renewed).await.unwrap();
        store.release_lease(&renewed).await.unwrap(); // idempotent
        assert_eq!(store.current_lease("link-a").await.unwrap(), None);
        store
            .acquire_lease("link-a", "host3:3:run3", Duration::seconds(60))
            .await
            .unwrap();
    }

    pub async fn racing_acquirers_get_one_winner(h: &Harness) {
        for round in 0..2 {
            if round == 1 {
                // Second round: the racers compete to take over the expired lease of round one's winner.
                tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
                assert_eq!(h.store.current_lease("race").await.unwrap(), None);
            }
            let ttl = Duration::milliseconds(if round == 0 { 800 } else { 60_000 });
            let attempts = (0..8).map(|n| {
                let store = h.store.clone();
                tokio::spawn(async move {
                    store
                        .acquire_lease("race", &format!("racer-{n}"), ttl)
                        .await
                })
            });
            let results: Vec<_> = futures::future::join_all(attempts)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(
                winners.len(),
                1,
                "round {round}: exactly one racer wins: {results:?}"
            );
            for loser in results.iter().filter_map(|r| r.as_ref().err()) {
                assert!(
                    matches!(
                        loser,
                        StateError::LeaseHeld { .. } | StateError::Conflict { .. }
                    ),
                    "{loser:?}"
                );
            }
            assert_eq!(
                h.store
                    .current_lease("race")
                    .await
                    .unwrap()
                    .map(|l| l.holder),
                Some(winners[0].holder.clone())
            );
        }
    }

    pub async fn checkpoint_round_trips(h: &Harness) {
        let store = &h.store;
        assert_eq!(
            store.load_checkpoint("link-a").await.unwrap(),
            LinkCheckpoint::default()
        );
        let mut checkpoint = LinkCheckpoint {
            delta_link: Some(format!(
                "https://graph.microsoft.com/v1.0/users/delta?$deltatoken={}&$select=displayName,mail",
                "a".repeat(3000)
            )),
            last_full_sync: Some(Utc.with_ymd_and_hms(2026, 11, 22, 3, 0, 0).unwrap()),
            last_run_at: Some(Utc.with_ymd_and_hms(2026, 11, 23, 9, 15, 0).unwrap()),
            quarantine: Some(QuarantineInfo {
                since: Utc.with_ymd_and_hms(2026, 11, 23, 9, 15, 0).unwrap(),
                held_deletes: 120,
                threshold: "max_deletes = 50".to_owned(),
                release_hint: "galbridge sync --link link-a --allow-deletes".to_owned(),
                held: (0..50)
                    .map(|i| HeldDelete {
                        anchor: format!("galbridge:t1:{i:036}"),
                        display_name: format!("<b>Person</b> \"{i}\" & Co — ünïcode"),
                    })
                    .collect(),
            }),
            extra: serde_json::json!({ "folders": { "mbx/1": "AAMk==" } })
                .as_object()
                .unwrap()
                .clone(),
        };
        store.save_checkpoint("link-a", &checkpoint).await.unwrap();
        assert_eq!(store.load_checkpoint("link-a").await.unwrap(), checkpoint);

        checkpoint.quarantine = None;
        checkpoint.delta_link =
            Some("https://graph.microsoft.com/v1.0/users/delta?$deltatoken=next".to_owned());
        store.save_checkpoint("link-a", &checkpoint).await.unwrap();
        assert_eq!(store.load_checkpoint("link-a").await.unwrap(), checkpoint);
        assert_eq!(
            store.load_checkpoint("link-b").await.unwrap(),
            LinkCheckpoint::default()
        );
    }

    pub async fn objects_put_list_delete_across_batches_and_awkward_names(h: &Harness) {
        let store = &h.store;
        let mut expected: Vec<ObjectRecord> = (0..230)
            .map(|n| record(&format!("galbridge:t1:{n:04}"), "h1"))
            .collect();
        expected.extend(awkward_anchors().iter().map(|a| record(a, "h1")));
        let mailbox = "AAMkADQ0/Zj+mbx#1?=Ünï";
        store
            .put_objects("link-a", LINK_SCOPE, &expected)
            .await
            .unwrap();
        let mailbox_records = expected[..5].to_vec();
        store
            .put_objects("link-a", mailbox, &mailbox_records)
            .await
            .unwrap();
        store
            .put_objects("link-a", "mbx-2", &expected[5..7])
            .await
            .unwrap();

        expected.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        assert_eq!(
            store.list_objects("link-a", LINK_SCOPE).await.unwrap(),
            expected
        );
        assert_eq!(
            store.list_objects("link-a", mailbox).await.unwrap().len(),
            5
        );
        assert_eq!(
            store.list_scopes("link-a").await.unwrap(),
            vec![mailbox.to_owned(), "mbx-2".to_owned()]
        );
        assert!(
            store
                .list_objects("link-b", LINK_SCOPE)
                .await
                .unwrap()
                .is_empty()
        );

        // Replace by anchor: the new hash wins, nothing is duplicated.
        let changed: Vec<_> = awkward_anchors().iter().map(|a| record(a, "h2")).collect();
        store
            .put_objects("link-a", LINK_SCOPE, &changed)
            .await
            .unwrap();
        let listed = store.list_objects("link-a", LINK_SCOPE).await.unwrap();
        assert_eq!(listed.len(), expected.len());
        for anchor in awkward_anchors() {
            let found: Vec<_> = listed.iter().filter(|r| r.anchor == anchor).collect();
            assert_eq!(found.len(), 1, "{anchor}");
            assert_eq!(found[0].hash, "h2", "{anchor}");
        }

        // Delete some, including ones that are not there.
        let mut doomed: Vec<String> = awkward_anchors();
        doomed.extend((0..150).map(|n| format!("galbridge:t1:{n:04}")));
        doomed.push("galbridge:never:stored".to_owned());
        store
            .delete_objects("link-a", LINK_SCOPE, &doomed)
            .await
            .unwrap();
        let left = store.list_objects("link-a", LINK_SCOPE).await.unwrap();
        assert_eq!(left.len(), 80);
        assert!(
            left.iter().all(|r| r.anchor.as_str() >= "galbridge:t1:0150"
                && r.anchor.starts_with("galbridge:t1:"))
        );

        // A scope whose last record goes is no longer listed.
        let mailbox_anchors: Vec<String> =
            mailbox_records.iter().map(|r| r.anchor.clone()).collect();
        store
            .delete_objects("link-a", mailbox, &mailbox_anchors)
            .await
            .unwrap();
        assert!(
            store
                .list_objects("link-a", mailbox)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.list_scopes("link-a").await.unwrap(),
            vec!["mbx-2".to_owned()]
        );
    }

    pub async fn get_objects_returns_only_the_asked_anchors_of_its_scope(h: &Harness) {
        let store = &h.store;
        let mailbox = "AAMkADQ0/Zj+mbx#1?=Ünï";
        let long_anchor = format!("galbridge:tenant:{}", "long/ID".repeat(100)); // hashed key in Table Storage
        let mut anchors: Vec<String> = (0..40).map(|n| format!("galbridge:t1:{n:04}")).collect();
        anchors.extend(awkward_anchors());
        anchors.push(long_anchor.clone());
        let mine: Vec<ObjectRecord> = anchors.iter().map(|a| record(a, "mine")).collect();
        store.put_objects("link-a", mailbox, &mine).await.unwrap();
        // The same anchors elsewhere must not leak in: another mailbox, the link scope, another link.
        let theirs: Vec<ObjectRecord> = anchors.iter().map(|a| record(a, "theirs")).collect();
        store
            .put_objects("link-a", "mbx-other", &theirs)
            .await
            .unwrap();
        store
            .put_objects("link-a", LINK_SCOPE, &theirs)
            .await
            .unwrap();
        store.put_objects("link-b", mailbox, &theirs).await.unwrap();

        // More than one query's worth (Table Storage chunks them), every awkward one, absent ones, a duplicate.
        let mut asked: Vec<String> = (10..35).map(|n| format!("galbridge:t1:{n:04}")).collect();
        asked.extend(awkward_anchors());
        asked.push(long_anchor.clone());
        asked.push("galbridge:t1:0012".to_owned());
        asked.push("galbridge:t1:9999".to_owned());
        asked.push("galbridge:never:stored/with#odd?chars'".to_owned());
        let got = store.get_objects("link-a", mailbox, &asked).await.unwrap();

        let mut expected: Vec<ObjectRecord> = mine
            .iter()
            .filter(|r| asked.contains(&r.anchor))
            .cloned()
            .collect();
        expected.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        assert_eq!(expected.len(), 25 + awkward_anchors().len() + 1);
        assert_eq!(got, expected);

        assert!(
            store
                .get_objects("link-a", mailbox, &[])
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .get_objects("link-a", "mbx-never-served", &asked)
                .await
                .unwrap()
                .is_empty()
        );
        let other = store
            .get_objects("link-a", "mbx-other", &asked[..3])
            .await
            .unwrap();
        assert_eq!(other.len(), 3);
        assert!(other.iter().all(|r| r.hash == "theirs"));
    }

    pub async fn snapshots_of_every_size_round_trip(h: &Harness) {
        let mut big = record("galbridge:t1:big", "h");
        big.data = Some(serde_json::json!({ "notes": "€😀x".repeat(40_000) })); // ~240 KB, > 64 KiB property limit
        let mut none = record("galbridge:t1:none", "h");
        none.data = None;
        let records = vec![big, none];
        h.store
            .put_objects("link-a", "mbx", &records)
            .await
            .unwrap();
        assert_eq!(
            h.store.list_objects("link-a", "mbx").await.unwrap(),
            records
        );
    }

    pub async fn run_records_are_capped_and_newest_first(h: &Harness) {
        let store = &h.store;
        // Stored out of order; five more runs than the cap keeps.
        let total = u32::try_from(RUN_RECORDS_KEPT).unwrap() + 5;
        let mut minutes: Vec<u32> = (0..total).collect();
        minutes.reverse();
        minutes.swap(3, 40);
        for minute in &minutes {
            store
                .put_run_record(&report("link-a", &format!("run-{minute:03}"), *minute))
                .await
                .unwrap();
        }
        store
            .put_run_record(&report("link-b", "other", 99))
            .await
            .unwrap();
        let all = store.list_run_records("link-a", 1000).await.unwrap();
        let ids: Vec<_> = all.iter().map(|r| r.run_id.clone()).collect();
        let expected: Vec<_> = (5..total).rev().map(|m| format!("run-{m:03}")).collect();
        assert_eq!(ids, expected);
        assert_eq!(
            all[0],
            report("link-a", &format!("run-{:03}", total - 1), total - 1),
            "a stored report comes back whole"
        );

        let top: Vec<_> = store
            .list_run_records("link-a", 3)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        assert_eq!(top, vec!["run-104", "run-103", "run-102"]);

        // Same run id again replaces it.
        let mut again = report("link-a", "run-104", 104);
        again.outcome = RunOutcome::Quarantined;
        store.put_run_record(&again).await.unwrap();
        let latest = store.list_run_records("link-a", 1000).await.unwrap();
        assert_eq!(latest.len(), RUN_RECORDS_KEPT);
        assert_eq!(latest[0].outcome, RunOutcome::Quarantined);
        assert_eq!(store.list_run_records("link-b", 10).await.unwrap().len(), 1);
    }

    /// The run history behind `status` and the status page's chart: bounded at [`RUN_RECORDS_KEPT`] per link
    /// as runs keep arriving in order (each with its failures), and still there after a restart.
    pub async fn run_history_is_bounded_and_survives_a_restart(h: &Harness) {
        let store = &h.store;
        let total = u32::try_from(RUN_RECORDS_KEPT).unwrap() + 20;
        for minute in 0..total {
            let mut run = report("history", &format!("run-{minute:03}"), minute);
            run.outcome = RunOutcome::PartiallyFailed;
            run.failures = vec![Failure {
                anchor: Some("galbridge:t1:stuck".to_owned()),
                mailbox: None,
                kind: "exchange_error".to_owned(),
                reason: format!("refused in run {minute}"),
            }];
            store.put_run_record(&run).await.unwrap();
            let kept = store.list_run_records("history", usize::MAX).await.unwrap();
            assert_eq!(
                kept.len(),
                (minute as usize + 1).min(RUN_RECORDS_KEPT),
                "after run {minute}"
            );
        }
        let Some(reopened) = h.reopened().await else {
            return;
        };
        let runs = reopened
            .list_run_records("history", usize::MAX)
            .await
            .unwrap();
        assert_eq!(runs.len(), RUN_RECORDS_KEPT);
        assert_eq!(runs[0].run_id, format!("run-{:03}", total - 1));
        assert_eq!(
            runs[RUN_RECORDS_KEPT - 1].run_id,
            format!(
                "run-{:03}",
                total - u32::try_from(RUN_RECORDS_KEPT).unwrap()
            )
        );
        let failing = galbridge::report::failing_objects(&runs);
        assert_eq!(failing.len(), 1);
        assert_eq!(
            (failing[0].runs as usize, failing[0].last_error.as_str()),
            (
                RUN_RECORDS_KEPT,
                format!("refused in run {}", total - 1).as_str()
            )
        );
    }

    pub async fn delete_link_forgets_only_that_link(h: &Harness) {
        let store = &h.store;
        for link in ["doomed", "kept"] {
            store
                .acquire_lease(link, "me", Duration::seconds(60))
                .await
                .unwrap();
            store
                .save_checkpoint(
                    link,
                    &LinkCheckpoint {
                        delta_link: Some("d".into()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            store
                .put_objects(link, LINK_SCOPE, &[record("galbridge:t:1", "h")])
                .await
                .unwrap();
            store
                .put_objects(link, "mbx/1", &[record("galbridge:t:2", "h")])
                .await
                .unwrap();
            store.put_run_record(&report(link, "r1", 1)).await.unwrap();
        }
        store.delete_link("doomed").await.unwrap();

        assert_eq!(
            store.load_checkpoint("doomed").await.unwrap(),
            LinkCheckpoint::default()
        );
        assert!(
            store
                .list_objects("doomed", LINK_SCOPE)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .list_objects("doomed", "mbx/1")
                .await
                .unwrap()
                .is_empty()
        );
        assert!(store.list_scopes("doomed").await.unwrap().is_empty());
        assert!(
            store
                .list_run_records("doomed", 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.current_lease("doomed").await.unwrap(), None);

        assert_eq!(
            store
                .load_checkpoint("kept")
                .await
                .unwrap()
                .delta_link
                .as_deref(),
            Some("d")
        );
        assert_eq!(store.list_objects("kept", "mbx/1").await.unwrap().len(), 1);
        assert_eq!(
            store.list_scopes("kept").await.unwrap(),
            vec!["mbx/1".to_owned()]
        );
        assert!(store.current_lease("kept").await.unwrap().is_some());

        // The forgotten link starts over cleanly.
        store
            .acquire_lease("doomed", "me-again", Duration::seconds(60))
            .await
            .unwrap();
        store
            .save_checkpoint("doomed", &LinkCheckpoint::default())
            .await
            .unwrap();
    }

    /// Claimers racing on one budget (through two store handles, as two processes would) are granted exactly the
    /// limit in all, never more; the counts leave after the window; budgets are apart from each other and from links.
    pub async fn shared_budget_grants_the_limit_once_across_racers(h: &Harness) {
        let rule = BudgetRule::per_10_seconds(600);
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
        let second = h.reopened().await.unwrap_or_else(|| h.store.clone());
        let mut claims = Vec::new();
        for n in 0..12 {
            let store = if n % 2 == 0 {
                h.store.clone()
            } else {
                second.clone()
            };
            claims.push(tokio::spawn(async move {
                let mut granted = 0;
                for _ in 0..10 {
                    granted += store
                        .take_budget("graph|app-1", 7, 1, &rule, now)
                        .await
                        .expect("claim")
                        .granted;
                }
                granted
            }));
        }
        let mut total = 0;
        for claim in claims {
            total += claim.await.expect("joins");
        }
        assert_eq!(
            total, 600,
            "12 × 10 claims of 7 = 840 wanted; exactly the limit granted"
        );
        let refused = h
            .store
            .take_budget("graph|app-1", 20, 20, &rule, now)
            .await
            .unwrap();
        assert_eq!(refused.granted, 0);
        assert_eq!(refused.used, 600);
        assert_eq!(refused.retry_at, now + Duration::milliseconds(11_000));
        // Another app's budget is its own; deleting a link leaves budgets alone.
        let other = h
            .store
            .take_budget("graph|app-2", 50, 1, &rule, now)
            .await
            .unwrap();
        assert_eq!(other.granted, 50);
        h.store.delete_link("graph|app-1").await.unwrap();
        let still = h
            .store
            .take_budget("graph|app-1", 1, 1, &rule, now)
            .await
            .unwrap();
        assert_eq!(still.granted, 0);
        // Once the window (plus the slot it started in) has passed, the whole limit is there again.
        let later = h
            .store
            .take_budget("graph|app-1", 600, 1, &rule, refused.retry_at)
            .await
            .unwrap();
        assert_eq!(later.granted, 600);
        assert_eq!(
            later.spend_by,
            refused.retry_at + Duration::milliseconds(500)
        );
    }

    pub async fn concurrent_links_are_independent(h: &Harness) {
        let links: Vec<String> = (0..4).map(|n| format!("mesh.t{n}-to-t{}", n + 1)).collect();
        let work = links.iter().cloned().map(|link| {
            let store = h.store.clone();
            tokio::spawn(async move {
                let lease = store
                    .acquire_lease(&link, "runner", Duration::seconds(60))
                    .await?;
                for batch in 0..3 {
                    let records: Vec<_> = (0..20)
                        .map(|n| record(&format!("galbridge:{link}:{batch}-{n}"), "h"))
                        .collect();
                    store.put_objects(&link, "mbx", &records).await?;
                }
                store
                    .save_checkpoint(
                        &link,
                        &LinkCheckpoint {
                            delta_link: Some(link.clone()),
                            ..Default::default()
                        },
                    )
                    .await?;
                store.release_lease(&lease).await?;
                Ok::<_, StateError>(())
            })
        });
        for outcome in futures::future::join_all(work).await {
            outcome.unwrap().unwrap();
        }
        for link in &links {
            let records = h.store.list_objects(link, "mbx").await.unwrap();
            assert_eq!(records.len(), 60, "{link}");
            assert!(
                records
                    .iter()
                    .all(|r| r.anchor.starts_with(&format!("galbridge:{link}:")))
            );
            assert_eq!(
                h.store
                    .load_checkpoint(link)
                    .await
                    .unwrap()
                    .delta_link
                    .as_deref(),
                Some(link.as_str())
            );
        }
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let harness = super::Harness::memory().expect("memory store");
                    super::suite::$test(&harness).await;
                }
            )*
        }
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let harness = super::Harness::file().expect("file store");
                    super::suite::$test(&harness).await;
                }
            )*
        }
        mod table {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(harness) = super::Harness::table().await else { return };
                    super::suite::$test(&harness).await;
                }
            )*
        }
    };
}

conformance!(
    lease_is_exclusive_until_expiry_then_taken_over,
    racing_acquirers_get_one_winner,
    checkpoint_round_trips,
    objects_put_list_delete_across_batches_and_awkward_names,
    get_objects_returns_only_the_asked_anchors_of_its_scope,
    snapshots_of_every_size_round_trip,
    run_records_are_capped_and_newest_first,
    run_history_is_bounded_and_survives_a_restart,
    delete_link_forgets_only_that_link,
    concurrent_links_are_independent,
    shared_budget_grants_the_limit_once_across_racers,
);
