//! The delete safety through the real `galbridge serve` process and the host's protocol, against m365-sim: a run
//! that would delete more than the link's threshold is answered 200 with a `quarantined` report that says how to
//! release it (naming the contacts it holds back), deletes nothing, and shows in `Status`; `POST /api/sync/{link}?allow_deletes=true` releases it once.

mod handler_support;

use std::collections::BTreeSet;

use handler_support::{ONE_LINK, Sim, invoke, res, spawn_with_sim, status_payload, sync_payload};
use serde_json::{Value, json};

const LINK: &str = "acme-to-northern";

fn anchors(sim: &Sim) -> BTreeSet<String> {
    sim.contacts("northern")
        .0
        .iter()
        .map(|contact| {
            contact["CustomAttribute15"]
                .as_str()
                .expect("an anchor")
                .to_owned()
        })
        .collect()
}

/// Removes the fields that differ on every run.
fn without_volatile(mut report: Value) -> Value {
    for field in ["run_id", "started_at", "duration_ms", "requests"] {
        report.as_object_mut().expect("a report").remove(field);
    }
    if let Some(quarantine) = report["quarantine"].as_object_mut() {
        let since = quarantine.remove("since").expect("since");
        quarantine.remove("held"); // asserted on its own
        chrono::DateTime::parse_from_rfc3339(since.as_str().expect("a time")).expect("RFC 3339");
    }
    report
}

fn counts(deletes: usize) -> Value {
    json!({ "creates": 0, "updates": 0, "deletes": deletes, "hides": 0, "adoptions": 0, "conflicts": 0,
            "unchanged": 0 })
}

#[test]
fn too_many_deletes_quarantine_the_link_until_released_over_http() {
    let sim = Sim::start(12, m365_sim::Knobs::default());
    let app = spawn_with_sim(&sim, ONE_LINK);
    let (_, envelope) = invoke(app.port, "SyncHttp", &sync_payload(LINK, json!({})));
    assert_eq!(res(&envelope).1["outcome"], "succeeded");
    let managed = anchors(&sim);
    // Three of twelve leave (soft-deleted in Entra): 25 %, over the default max_delete_percent of 10.
    let leavers: Vec<Value> = sim.users_in_scope("acme").into_iter().take(3).collect();
    for user in &leavers {
        sim.handle
            .control()
            .delete_user("acme", user["id"].as_str().expect("an id"), true)
            .expect("the user is deleted");
    }
    let left: BTreeSet<String> = leavers
        .iter()
        .map(|user| sim.anchor_of("acme", user))
        .collect();

    let (status, envelope) = invoke(app.port, "SyncHttp", &sync_payload(LINK, json!({})));

    assert_eq!(status, 200);
    let (code, report) = res(&envelope);
    let threshold = format!(
        "{} removals of {} managed objects exceed max_delete_percent = 10",
        left.len(),
        managed.len()
    );
    let summary = format!(
        "{LINK}: incremental run quarantined: read {n}, created 0, updated 0, deleted 0, hidden 0, adopted 0, \
         conflicts 0, unchanged 0, QUARANTINED: {n} deletes held ({threshold})",
        n = left.len()
    );
    let mut held: Vec<Value> = report["quarantine"]["held"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    held.sort_by_key(|held| held["anchor"].as_str().unwrap_or_default().to_owned());
    let mut expected_held: Vec<Value> = leavers
        .iter()
        .map(|user| json!({ "anchor": sim.anchor_of("acme", user), "display_name": user["displayName"] }))
        .collect();
    expected_held.sort_by_key(|held| held["anchor"].as_str().unwrap_or_default().to_owned());
    assert_eq!(held, expected_held, "the quarantine names what it holds");
    let quarantine = json!({
        "held_deletes": left.len(),
        "threshold": threshold,
        "release_hint": format!(
            "review with `galbridge plan --link {LINK}`, then release once with `galbridge sync --link {LINK} \
             --allow-deletes` or POST /api/sync/{LINK}?allow_deletes=true"
        )
    });
    assert_eq!(
        (code, without_volatile(report)),
        (
            200,
            json!({
                "link": LINK, "mode": "incremental", "outcome": "quarantined",
                "source_read": left.len(), "source_changes": left.len(),
                "planned": counts(0), "applied": counts(0), "failures": [], "throttled_retries": 0,
                "quarantine": quarantine, "summary": summary
            })
        )
    );
    assert_eq!(envelope["Logs"], json!([summary]));
    assert_eq!(anchors(&sim), managed, "nothing was deleted");
    let (_, status_envelope) = invoke(app.port, "Status", &status_payload());
    let mut shown = res(&status_envelope).1["links"][0]["quarantine"].clone();
    shown.as_object_mut().expect("a quarantine").remove("since");
    assert_eq!(
        shown
            .as_object_mut()
            .expect("a quarantine")
            .remove("held")
            .and_then(|held| held.as_array().map(Vec::len)),
        Some(left.len()),
        "status names the held deletes too"
    );
    assert_eq!(shown, quarantine);

    // Released once over HTTP: the held deletes are applied, and the quarantine is gone.
    let (status, envelope) = invoke(
        app.port,
        "SyncHttp",
        &sync_payload(LINK, json!({ "allow_deletes": "true" })),
    );

    assert_eq!(status, 200);
    let (code, report) = res(&envelope);
    let summary = format!(
        "{LINK}: incremental run succeeded: read {n}, created 0, updated 0, deleted {n}, hidden 0, adopted 0, \
         conflicts 0, unchanged 0",
        n = left.len()
    );
    assert_eq!(
        (code, without_volatile(report)),
        (
            200,
            json!({
                "link": LINK, "mode": "incremental", "outcome": "succeeded",
                "source_read": left.len(), "source_changes": left.len(),
                "planned": counts(left.len()), "applied": counts(left.len()), "failures": [],
                "throttled_retries": 0, "quarantine": null, "summary": summary
            })
        )
    );
    assert_eq!(
        anchors(&sim),
        managed.difference(&left).cloned().collect::<BTreeSet<_>>(),
        "exactly the leavers' contacts are gone"
    );
    let (_, status_envelope) = invoke(app.port, "Status", &status_payload());
    let link = &res(&status_envelope).1["links"][0];
    assert_eq!(
        (&link["quarantine"], &link["managed_objects"]),
        (&Value::Null, &json!(managed.len() - left.len()))
    );
}
