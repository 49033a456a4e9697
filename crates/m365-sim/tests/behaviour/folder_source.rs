//! A mailbox's contact folder read as a source [§11]: immutable ids across moves, RBAC for Applications.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{GRAPH, TestSim, spawn};

const IMMUTABLE: &str = "odata.maxpagesize=100, IdType=\"ImmutableId\"";

async fn folder(t: &TestSim, tok: &str, user: &str, name: &str) -> String {
    let (status, folder) = t
        .send_json(
            tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contactFolders"),
            json!({"displayName": name}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    folder["id"].as_str().expect("folder id").to_owned()
}

fn ids(items: &[Value]) -> Vec<(String, bool)> {
    items
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_owned(),
                c.get("@removed").is_some(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_moved_contact_keeps_its_immutable_id_and_gets_a_new_regular_one() {
    // [§11] Outlook ids change when an item moves between folders, unless `Prefer: IdType="ImmutableId"` is sent;
    // the header applies to the request it is on.
    let t = spawn(&[("acme", 20)]).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let a = folder(&t, &tok, &user, "A").await;
    let b = folder(&t, &tok, &user, "B").await;
    let (_, created) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contactFolders/{a}/contacts"),
            json!({"displayName": "Ada"}),
        )
        .await;
    let original = created["id"].as_str().expect("id").to_owned();
    let delta = |fid: &str| {
        t.url(&format!(
            "/v1.0/users/{user}/contactFolders/{fid}/contacts/delta"
        ))
    };
    let (_, last_a) = t.get_all(&tok, &delta(&a), &[("Prefer", IMMUTABLE)]).await;
    let (_, last_b) = t.get_all(&tok, &delta(&b), &[("Prefer", IMMUTABLE)]).await;

    let moved = t
        .sim
        .control()
        .move_contact("acme", &user, &original, &b)
        .expect("move");
    assert_ne!(moved, original, "the regular id changes on a move");

    let link = |last: &Value| {
        last["@odata.deltaLink"]
            .as_str()
            .expect("delta link")
            .to_owned()
    };
    let (from_a, _) = t
        .get_all(&tok, &link(&last_a), &[("Prefer", IMMUTABLE)])
        .await;
    let (into_b, _) = t
        .get_all(&tok, &link(&last_b), &[("Prefer", IMMUTABLE)])
        .await;
    assert_eq!(ids(&from_a), vec![(original.clone(), true)]);
    assert_eq!(
        ids(&into_b),
        vec![(original.clone(), false)],
        "same immutable id in the new folder"
    );

    // Without the header, the new folder shows the new regular id.
    let (plain, _) = t.get_all(&tok, &delta(&b), &[]).await;
    assert_eq!(ids(&plain), vec![(moved, false)]);
}

#[tokio::test]
async fn an_app_scoped_by_rbac_for_applications_reaches_only_its_mailboxes() {
    // [§11] A management role assignment for the app with a scope: mailboxes outside it answer 403 ErrorAccessDenied.
    let t = spawn(&[("acme", 40)]).await;
    let tok = t.token("acme", GRAPH).await;
    let users = t.sim.control().users("acme").expect("users");
    let mailboxes: Vec<String> = users
        .iter()
        .filter(|u| u["mailbox"] == "user" && u["restEnabled"] == true)
        .filter_map(|u| u["id"].as_str().map(str::to_owned))
        .take(2)
        .collect();
    let (allowed, other) = (&mailboxes[0], &mailboxes[1]);
    t.sim
        .control()
        .set_app_mailbox_scope("acme", Some(&[allowed.as_str()]))
        .expect("scope");
    let (status, _, _) = t
        .get(&tok, &format!("/v1.0/users/{allowed}/contactFolders"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = t
        .get(&tok, &format!("/v1.0/users/{other}/contactFolders"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "ErrorAccessDenied");
    t.sim
        .control()
        .set_app_mailbox_scope("acme", None)
        .expect("unscope");
    let (status, _, _) = t
        .get(&tok, &format!("/v1.0/users/{other}/contactFolders"))
        .await;
    assert_eq!(status, StatusCode::OK);
}
