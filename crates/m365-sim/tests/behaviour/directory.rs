//! Graph directory reads: users, delta, org contacts, groups, photos, invitations.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{GRAPH, spawn, spawn_with};

const SELECT: &str = "$select=id,displayName,mail,department,jobTitle,userType,accountEnabled";

#[tokio::test]
async fn users_list_pages_with_next_link_and_keeps_select() {
    // [§2] $top pages, @odata.nextLink carries the query options, $select limits properties.
    let t = spawn(&[("acme", 23)]).await;
    let token = t.token("acme", GRAPH).await;
    let (all, _) = t
        .get_all(
            &token,
            &t.url("/v1.0/users?$select=id,displayName&$top=5"),
            &[],
        )
        .await;
    assert_eq!(all.len(), 23);
    let ids: std::collections::BTreeSet<_> = all
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 23, "no user twice across pages");
    assert!(
        all.iter().all(|u| u.as_object().unwrap().len() == 2),
        "only the selected properties"
    );
}

#[tokio::test]
async fn users_filter_subset_and_advanced_query_rule() {
    // Graph: eq/startswith filters work; `ne` needs ConsistencyLevel: eventual (advanced query), else 400.
    let t = spawn(&[("acme", 40)]).await;
    let token = t.token("acme", GRAPH).await;
    let (all, _) = t
        .get_all(
            &token,
            &t.url("/v1.0/users?$filter=userType eq 'Member'&$select=id,userType"),
            &[],
        )
        .await;
    assert!(!all.is_empty() && all.iter().all(|u| u["userType"] == "Member"));
    let (status, body, _) = t
        .get(&token, "/v1.0/users?$filter=department ne 'Sales'")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "Request_UnsupportedQuery");
    let (status, _, _) = t
        .get_with(
            &token,
            "/v1.0/users?$filter=department ne 'Sales'&$count=true",
            &[("ConsistencyLevel", "eventual")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

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
async fn photos_of_users_without_mailbox_answer_error_non_existent_mailbox() {
    // [§2] GET /users/{id}/photo/$value: JPEG bytes; users without a mailbox: 404 ErrorNonExistentMailbox.
    let t = spawn(&[("acme", 120)]).await;
    let token = t.token("acme", GRAPH).await;
    let users = t.sim.control().users("acme").unwrap();
    let with_photo = users
        .iter()
        .find(|u| !u["photoSha256"].is_null())
        .expect("seeded photos");
    let resp = t
        .http
        .get(t.url(&format!(
            "/v1.0/users/{}/photo/$value",
            with_photo["id"].as_str().unwrap()
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "image/jpeg");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
    let no_mailbox = users
        .iter()
        .find(|u| u["mailbox"] == "none")
        .expect("seeded users without mailbox");
    let (status, body, _) = t
        .get(
            &token,
            &format!(
                "/v1.0/users/{}/photo/$value",
                no_mailbox["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "ErrorNonExistentMailbox");
}

#[tokio::test]
async fn seeded_tenants_are_deterministic_and_realistic() {
    // Seeds: same seed → same people; several scripts, guests, shared mailboxes, disabled, hidden users.
    let a = spawn(&[("acme", 300)]).await;
    let b = spawn(&[("acme", 300)]).await;
    let ua = a.sim.control().users("acme").unwrap();
    let ub = b.sim.control().users("acme").unwrap();
    assert_eq!(ua, ub);
    assert_eq!(
        a.sim.tenant("acme").unwrap().tenant_id,
        b.sim.tenant("acme").unwrap().tenant_id
    );
    let has = |f: &dyn Fn(&Value) -> bool| ua.iter().any(f);
    assert!(has(&|u| u["userType"] == "Guest"));
    assert!(has(&|u| u["mailbox"] == "shared"));
    assert!(has(&|u| u["accountEnabled"] == false));
    assert!(has(&|u| u["hiddenFromAddressLists"] == true));
    assert!(has(&|u| u["restEnabled"] == false));
    assert!(has(&|u| !u["manager"].is_null()));
    assert!(
        has(&|u| u["displayName"]
            .as_str()
            .unwrap()
            .chars()
            .any(|c| ('\u{0400}'..='\u{04FF}').contains(&c))),
        "Cyrillic names"
    );
    assert!(
        has(&|u| u["displayName"]
            .as_str()
            .unwrap()
            .chars()
            .any(|c| ('\u{4E00}'..='\u{9FFF}').contains(&c))),
        "CJK names"
    );
    assert!(has(&|u| u["streetAddress"].is_string()
        && u["postalCode"].is_string()
        && u["mobilePhone"].is_string()));
}

#[tokio::test]
async fn org_contacts_are_read_only_and_appear_after_replication_delay() {
    // [§1] Graph cannot write orgContacts; Exchange mail contacts show up as orgContacts with the same id.
    let t = spawn_with(
        &[("acme", 2)],
        m365_sim::Knobs {
            replication_delay_ms: 60_000,
            ..Default::default()
        },
    )
    .await;
    let graph = t.token("acme", GRAPH).await;
    let exo = t.token("acme", crate::common::EXCHANGE).await;
    let (status, body) = t.exo("acme", &exo, "New-MailContact", json!({"Name": "Ada Lovelace (Northern)", "ExternalEmailAddress": "SMTP:ada@northern.example"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["value"][0]["ExternalDirectoryObjectId"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, _) = t.get(&graph, &format!("/v1.0/contacts/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not replicated yet");
    t.sim
        .control()
        .advance_clock(std::time::Duration::from_secs(61));
    let graph = t.token("acme", GRAPH).await;
    let (status, body, _) = t.get(&graph, &format!("/v1.0/contacts/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["mail"], "ada@northern.example");
    let (all, last) = t.get_all(&graph, &t.url("/v1.0/contacts/delta"), &[]).await;
    assert_eq!(all.len(), 1);
    assert!(last["@odata.deltaLink"].is_string());
    let (status, body) = t
        .send_json(
            &graph,
            reqwest::Method::POST,
            "/v1.0/contacts",
            json!({"displayName": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"]["code"].is_string());
}

#[tokio::test]
async fn group_transitive_members_expand_nested_groups() {
    // [§2] /groups/{id}/transitiveMembers/microsoft.graph.user returns users of nested groups too.
    let t = spawn(&[("acme", 60)]).await;
    let token = t.token("acme", GRAPH).await;
    let groups = t.sim.control().group_ids("acme").unwrap();
    let gtm = groups
        .iter()
        .find(|(_, n)| n == "Go To Market")
        .unwrap()
        .0
        .clone();
    let (members, _) = t
        .get_all(
            &token,
            &t.url(&format!(
                "/v1.0/groups/{gtm}/transitiveMembers/microsoft.graph.user?$select=id,department"
            )),
            &[],
        )
        .await;
    assert!(!members.is_empty());
    assert!(
        members
            .iter()
            .all(|m| m["department"] == "Sales" || m["department"] == "Marketing")
    );
}

#[tokio::test]
async fn invitations_make_guests_and_collide_with_mail_contacts() {
    // [§5] POST /invitations creates a guest; an address owned by a mail contact gives a guest without mail.
    let t = spawn(&[("acme", 2)]).await;
    let graph = t.token("acme", GRAPH).await;
    t.sim
        .control()
        .create_user_made_mail_contact("acme", "Existing Person", "taken@partner.example")
        .unwrap();
    let (status, body) = t
        .send_json(&graph, reqwest::Method::POST, "/v1.0/invitations", json!({"invitedUserEmailAddress": "taken@partner.example", "inviteRedirectUrl": "https://myapps.microsoft.com", "sendInvitationMessage": false}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let guest = body["invitedUser"]["id"].as_str().unwrap().to_string();
    let (_, user, _) = t
        .get(
            &graph,
            &format!("/v1.0/users/{guest}?$select=id,mail,userType,proxyAddresses"),
        )
        .await;
    assert_eq!(user["userType"], "Guest");
    assert!(user["mail"].is_null(), "collision: no mail");
    let (status, _) = t.send_json(&graph, reqwest::Method::PATCH, &format!("/v1.0/users/{guest}"), json!({"jobTitle": "Partner", "onPremisesExtensionAttributes": {"extensionAttribute1": "galbridge:x"}})).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, user, _) = t
        .get(
            &graph,
            &format!("/v1.0/users/{guest}?$select=jobTitle,onPremisesExtensionAttributes"),
        )
        .await;
    assert_eq!(user["jobTitle"], "Partner");
    assert_eq!(
        user["onPremisesExtensionAttributes"]["extensionAttribute1"],
        "galbridge:x"
    );
}

#[tokio::test]
async fn manager_is_expandable_and_tracked_by_delta() {
    // [§2] users delta tracks the manager navigation property as manager@delta when selected; lists take
    // $expand=manager($select=…), omitted when a user has no manager.
    let t = spawn(&[("acme", 40)]).await;
    let token = t.token("acme", GRAPH).await;
    let control = t.sim.control();
    let users = control.users("acme").unwrap();
    let managed = users.iter().find(|u| u["manager"].is_string()).unwrap();
    let (status, body, _) = t
        .get(
            &token,
            &format!(
                "/v1.0/users/{}?$select=id&$expand=manager($select=id,displayName)",
                managed["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["manager"]["id"], managed["manager"]);

    let (all, last) = t
        .get_all(
            &token,
            &t.url("/v1.0/users/delta?$select=id,displayName,manager"),
            &[],
        )
        .await;
    let entry = all.iter().find(|u| u["id"] == managed["id"]).unwrap();
    assert_eq!(entry["manager@delta"][0]["id"], managed["manager"]);
    let other = users
        .iter()
        .find(|u| u["id"] != managed["manager"] && u["id"] != managed["id"])
        .unwrap();
    control
        .update_user(
            "acme",
            managed["id"].as_str().unwrap(),
            json!({"manager": other["id"]}),
        )
        .unwrap();
    let (changes, _) = t
        .get_all(
            &token,
            last["@odata.deltaLink"].as_str().unwrap(),
            &[("Prefer", "return=minimal")],
        )
        .await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["manager@delta"][0]["id"], other["id"]);
}
