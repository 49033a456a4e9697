//! Delta queries [§2]: users/delta rounds, `@removed`, `Prefer: return=minimal`, token expiry, replays, what delta
//! sends for never-set and cleared properties, eventual consistency; contacts/delta following Exchange writes.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{GRAPH, spawn, spawn_with};

const SELECT: &str = "$select=id,displayName,mail,department,jobTitle,userType,accountEnabled";

#[tokio::test]
async fn users_delta_full_then_incremental_with_removed_changed_and_deleted() {
    // [§2] delta: nextLink pages then deltaLink; next round returns only changes; @removed reason changed|deleted.
    let t = spawn_with(
        &[("acme", 30)],
        m365_sim::Knobs {
            default_page_size: 7,
            ..Default::default()
        },
    )
    .await;
    let token = t.token("acme", GRAPH).await;
    let (first, last) = t
        .get_all(&token, &t.url(&format!("/v1.0/users/delta?{SELECT}")), &[])
        .await;
    assert_eq!(first.len(), 30);
    let delta_link = last["@odata.deltaLink"]
        .as_str()
        .expect("deltaLink at the end")
        .to_string();

    let control = t.sim.control();
    let users = control.users("acme").unwrap();
    let (a, b, c) = (
        users[0]["id"].as_str().unwrap(),
        users[1]["id"].as_str().unwrap(),
        users[2]["id"].as_str().unwrap(),
    );
    control
        .update_user("acme", a, json!({"department": "Research"}))
        .unwrap();
    control.delete_user("acme", b, true).unwrap();
    control.delete_user("acme", c, false).unwrap();
    let new_id = control
        .add_user(
            "acme",
            json!({"displayName": "Zoë Newcomer", "department": "Legal"}),
        )
        .unwrap();

    let (changes, last) = t.get_all(&token, &delta_link, &[]).await;
    assert_eq!(changes.len(), 4, "{changes:?}");
    let by_id = |id: &str| changes.iter().find(|v| v["id"] == id).cloned().unwrap();
    assert_eq!(by_id(a)["department"], "Research");
    assert_eq!(by_id(b)["@removed"]["reason"], "changed");
    assert_eq!(by_id(c)["@removed"]["reason"], "deleted");
    assert_eq!(by_id(&new_id)["displayName"], "Zoë Newcomer");

    let (none, _) = t
        .get_all(&token, last["@odata.deltaLink"].as_str().unwrap(), &[])
        .await;
    assert!(none.is_empty(), "a quiet round returns nothing");
}

#[tokio::test]
async fn users_delta_return_minimal_sends_only_changed_properties() {
    // [§2] Prefer: return=minimal returns only the changed properties (plus id) of existing objects.
    let t = spawn(&[("acme", 5)]).await;
    let token = t.token("acme", GRAPH).await;
    let (_, last) = t
        .get_all(&token, &t.url(&format!("/v1.0/users/delta?{SELECT}")), &[])
        .await;
    let link = last["@odata.deltaLink"].as_str().unwrap().to_string();
    let control = t.sim.control();
    let id = control.users("acme").unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    control
        .update_user("acme", &id, json!({"jobTitle": "Chief Tinkerer"}))
        .unwrap();
    let (status, body, headers) = t
        .get_with(&token, &link, &[("Prefer", "return=minimal")])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("preference-applied").unwrap(), "return=minimal");
    let obj = body["value"][0].as_object().unwrap();
    assert_eq!(obj.len(), 2, "{obj:?}");
    assert_eq!(obj["jobTitle"], "Chief Tinkerer");
}

#[tokio::test]
async fn users_delta_token_expiry_answers_410_with_location_or_sync_state_not_found() {
    // [§2] Directory delta tokens live about 7 days; expired: 410 Gone + Location (or 400 syncStateNotFound).
    let t = spawn(&[("acme", 3)]).await;
    let token = t.token("acme", GRAPH).await;
    let (_, last) = t
        .get_all(
            &token,
            &t.url("/v1.0/users/delta?$select=id,displayName"),
            &[],
        )
        .await;
    let link = last["@odata.deltaLink"].as_str().unwrap().to_string();
    let control = t.sim.control();
    control.advance_clock(std::time::Duration::from_secs(8 * 24 * 3600));
    let token = t.token("acme", GRAPH).await;
    let (status, _, headers) = t.get(&token, &link).await;
    assert_eq!(status, StatusCode::GONE);
    let location = headers.get("location").unwrap().to_str().unwrap();
    assert!(
        location.contains("/v1.0/users/delta?$select=id,displayName"),
        "{location}"
    );
    assert!(
        location.ends_with("$deltatoken="),
        "delta overview: the initial query with an empty $deltaToken: {location}"
    );

    control
        .update_knobs(|k| k.delta_expiry_style = m365_sim::DeltaExpiryStyle::SyncStateNotFound400);
    let (_, last) = t.get_all(&token, location, &[]).await;
    control.expire_delta_tokens("acme").unwrap();
    let (status, body, _) = t
        .get(&token, last["@odata.deltaLink"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "syncStateNotFound");
}

#[tokio::test]
async fn users_delta_latest_starts_from_now_and_replays_repeat_entries() {
    // [§2] $deltaToken=latest returns no data and a deltaLink from now; replays happen (the sim can force them).
    let t = spawn_with(
        &[("acme", 12)],
        m365_sim::Knobs {
            default_page_size: 5,
            delta_replays: true,
            ..Default::default()
        },
    )
    .await;
    let token = t.token("acme", GRAPH).await;
    let (status, body, _) = t.get(&token, "/v1.0/users/delta?$deltaToken=latest").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["value"].as_array().unwrap().is_empty());
    assert!(body["@odata.deltaLink"].is_string());
    let (all, _) = t
        .get_all(&token, &t.url("/v1.0/users/delta?$select=id"), &[])
        .await;
    let unique: std::collections::BTreeSet<_> =
        all.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), 12);
    assert!(all.len() > 12, "replayed entries appear more than once");
}

#[tokio::test]
async fn users_delta_refuses_top_and_expand() {
    // [§2] no $expand/$top/$orderby on users delta.
    let t = spawn(&[("acme", 2)]).await;
    let token = t.token("acme", GRAPH).await;
    let (status, _, _) = t.get(&token, "/v1.0/users/delta?$top=5").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn users_delta_omits_never_set_properties_and_sends_cleared_ones_as_null() {
    // user-delta doc: "If the property has never been set before it will not be included in the response at all";
    // a property set to null is included as null (default and return=minimal alike).
    let t = spawn(&[("acme", 2)]).await;
    let token = t.token("acme", GRAPH).await;
    let control = t.sim.control();
    let fresh = control
        .add_user(
            "acme",
            json!({"displayName": "Nomen Nescio", "jobTitle": "Scribe"}),
        )
        .unwrap();
    let select = "/v1.0/users/delta?$select=id,displayName,jobTitle,department,mobilePhone";
    let (all, last) = t.get_all(&token, &t.url(select), &[]).await;
    let entry = all.iter().find(|u| u["id"] == fresh.as_str()).unwrap();
    let keys: std::collections::BTreeSet<&str> = entry
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["displayName", "id", "jobTitle"].into_iter().collect(),
        "never-set department and mobilePhone are left out: {entry}"
    );
    let link = last["@odata.deltaLink"].as_str().unwrap().to_string();

    control
        .update_user("acme", &fresh, json!({"jobTitle": null}))
        .unwrap();
    let (changes, last) = t.get_all(&token, &link, &[]).await;
    assert_eq!(changes.len(), 1);
    let entry = changes[0].as_object().unwrap();
    assert!(entry["jobTitle"].is_null(), "cleared → null: {entry:?}");
    assert!(entry.contains_key("jobTitle"));
    assert_eq!(
        entry["displayName"], "Nomen Nescio",
        "default: unchanged values too"
    );
    assert!(!entry.contains_key("department"), "still never set");

    control
        .update_user("acme", &fresh, json!({"department": "Archive"}))
        .unwrap();
    let (status, body, _) = t
        .get_with(
            &token,
            last["@odata.deltaLink"].as_str().unwrap(),
            &[("Prefer", "return=minimal")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let entry = body["value"][0].as_object().unwrap();
    let keys: std::collections::BTreeSet<&str> = entry.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["department", "id"].into_iter().collect(),
        "{entry:?}"
    );
}

#[tokio::test]
async fn created_users_are_missing_from_lists_filters_and_delta_during_eventual_consistency() {
    // Directory replication is eventually consistent: a new user is missing from lists, filters and delta for a
    // while (consistency_delay_ms), then appears; nothing is lost from the delta round that skipped it.
    let t = spawn_with(
        &[("acme", 3)],
        m365_sim::Knobs {
            consistency_delay_ms: 30_000,
            ..Default::default()
        },
    )
    .await;
    let token = t.token("acme", GRAPH).await;
    let (_, last) = t
        .get_all(
            &token,
            &t.url("/v1.0/users/delta?$select=id,displayName"),
            &[],
        )
        .await;
    let link = last["@odata.deltaLink"].as_str().unwrap().to_string();
    let control = t.sim.control();
    let id = control
        .add_user(
            "acme",
            json!({"displayName": "Late Arrival", "department": "Lag"}),
        )
        .unwrap();
    let (listed, _) = t.get_all(&token, &t.url("/v1.0/users"), &[]).await;
    assert_eq!(listed.len(), 3, "not listed yet");
    let (filtered, _) = t
        .get_all(
            &token,
            &t.url("/v1.0/users?$filter=department eq 'Lag'"),
            &[],
        )
        .await;
    assert!(filtered.is_empty(), "not found by filter yet");
    let (changes, last) = t.get_all(&token, &link, &[]).await;
    assert!(changes.is_empty(), "not in delta yet: {changes:?}");

    control.advance_clock(std::time::Duration::from_secs(31));
    let (filtered, _) = t
        .get_all(
            &token,
            &t.url("/v1.0/users?$filter=department eq 'Lag'"),
            &[],
        )
        .await;
    assert_eq!(filtered.len(), 1);
    let (changes, _) = t
        .get_all(&token, last["@odata.deltaLink"].as_str().unwrap(), &[])
        .await;
    assert_eq!(
        changes.len(),
        1,
        "the skipped user arrives in the next round"
    );
    assert_eq!(changes[0]["id"], id.as_str());
}

#[tokio::test]
async fn org_contacts_delta_reports_exchange_changes_and_removals() {
    // [§1, §2] contacts/delta follows the mail contacts Exchange writes: a Set-MailContact comes back as a change,
    // a Remove-MailContact as `@removed` (deleted), with the ExternalDirectoryObjectId as id.
    let t = spawn(&[("acme", 2)]).await;
    let graph = t.token("acme", GRAPH).await;
    let exo = t.token("acme", crate::common::EXCHANGE).await;
    let mut ids = Vec::new();
    for (name, mail) in [
        ("Kept Contact", "kept@x.example"),
        ("Gone Contact", "gone@x.example"),
    ] {
        let (status, body) = t
            .exo(
                "acme",
                &exo,
                "New-MailContact",
                json!({"Name": name, "ExternalEmailAddress": mail}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(
            body["value"][0]["ExternalDirectoryObjectId"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (all, last) = t.get_all(&graph, &t.url("/v1.0/contacts/delta"), &[]).await;
    assert_eq!(all.len(), 2);
    let link = last["@odata.deltaLink"].as_str().unwrap().to_string();
    let (status, body) = t
        .exo(
            "acme",
            &exo,
            "Set-MailContact",
            json!({"Identity": ids[0], "DisplayName": "Kept, Renamed"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = t
        .exo(
            "acme",
            &exo,
            "Remove-MailContact",
            json!({"Identity": ids[1], "Confirm": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (changes, _) = t.get_all(&graph, &link, &[]).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    let kept = changes.iter().find(|c| c["id"] == ids[0].as_str()).unwrap();
    assert_eq!(kept["displayName"], "Kept, Renamed");
    let gone = changes.iter().find(|c| c["id"] == ids[1].as_str()).unwrap();
    assert_eq!(gone["@removed"]["reason"], "deleted");
}

#[tokio::test]
async fn users_delta_first_round_may_carry_removed_entries() {
    // Delta overview: "The @removed object can be returned in the initial delta query response and in tracked
    // (deltaLink) responses"; the sim sends them by default so clients prove they cope (knob to turn off).
    let t = spawn(&[("acme", 6)]).await;
    let token = t.token("acme", GRAPH).await;
    let control = t.sim.control();
    let users = control.users("acme").unwrap();
    let (soft, hard) = (
        users[0]["id"].as_str().unwrap().to_string(),
        users[1]["id"].as_str().unwrap().to_string(),
    );
    control.delete_user("acme", &soft, true).unwrap();
    control.delete_user("acme", &hard, false).unwrap();
    let (all, _) = t
        .get_all(
            &token,
            &t.url("/v1.0/users/delta?$select=id,displayName"),
            &[],
        )
        .await;
    assert_eq!(all.len(), 6, "4 live users and 2 removals: {all:?}");
    let reason = |id: &str| {
        all.iter()
            .find(|v| v["id"] == id)
            .map(|v| v["@removed"]["reason"].clone())
            .unwrap()
    };
    assert_eq!(reason(&soft), "changed");
    assert_eq!(reason(&hard), "deleted");

    control.update_knobs(|k| k.delta_removed_in_initial_round = false);
    let (all, _) = t
        .get_all(
            &token,
            &t.url("/v1.0/users/delta?$select=id,displayName"),
            &[],
        )
        .await;
    assert_eq!(all.len(), 4, "only live users when turned off");
    assert!(all.iter().all(|v| v.get("@removed").is_none()));
}
