//! A mailbox's contact folder read as a source [§12]: immutable ids across moves, RBAC for Applications.

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
    // [§12] Outlook ids change when an item moves between folders, unless `Prefer: IdType="ImmutableId"` is sent;
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
    // [§12] A management role assignment for the app with a scope: mailboxes outside it answer 403 ErrorAccessDenied.
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

async fn form(t: &TestSim, url: &reqwest::Url, fields: &[(&str, &str)]) -> (StatusCode, Value) {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let response = t
        .http
        .post(url.clone())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn device_code_sign_in_then_refresh_tokens_rotate_and_can_be_revoked() {
    // [§12] Device authorization grant (authorization_pending until the user signs in), refresh-token grant with a
    // new refresh token each time (the sim refuses a redeemed one: stricter), revoked grants answer invalid_grant; a
    // delegated token reaches the user's own mailbox only.
    let t = spawn(&[("acme", 20)]).await;
    let info = t.sim.tenant("acme").expect("acme");
    let devicecode = info
        .token_url
        .join("devicecode")
        .expect("devicecode endpoint");
    let scope = "https://graph.microsoft.com/Contacts.Read offline_access";
    let (status, started) = form(
        &t,
        &devicecode,
        &[("client_id", &info.client_id), ("scope", scope)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let device_code = started["device_code"].as_str().expect("device_code");
    let user_code = started["user_code"].as_str().expect("user_code");
    assert!(
        started["message"]
            .as_str()
            .expect("message")
            .contains(user_code)
    );
    let poll = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("client_id", info.client_id.as_str()),
        ("device_code", device_code),
    ];
    let (status, pending) = form(&t, &info.token_url, &poll).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(pending["error"], "authorization_pending");

    let user = t.rest_mailbox();
    let control = t.sim.control();
    assert_eq!(
        control.pending_device_codes("acme").expect("acme"),
        vec![user_code.to_owned()]
    );
    control
        .approve_device_code("acme", user_code, &user)
        .expect("approve");
    let (status, tokens) = form(&t, &info.token_url, &poll).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().expect("access token");
    let first = tokens["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();

    // The user's own mailbox only.
    let (status, _, _) = t
        .get(access, &format!("/v1.0/users/{user}/contactFolders"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let other = control
        .users("acme")
        .expect("users")
        .iter()
        .find(|u| u["mailbox"] == "user" && u["restEnabled"] == true && u["id"] != user.as_str())
        .and_then(|u| u["id"].as_str().map(str::to_owned))
        .expect("another mailbox");
    let (status, _, _) = t
        .get(access, &format!("/v1.0/users/{other}/contactFolders"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let refresh = |token: String| {
        let client_id = info.client_id.clone();
        let url = info.token_url.clone();
        let t = &t;
        async move {
            form(
                t,
                &url,
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", &client_id),
                    ("refresh_token", &token),
                    ("scope", scope),
                ],
            )
            .await
        }
    };
    let (status, renewed) = refresh(first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let second = renewed["refresh_token"]
        .as_str()
        .expect("a new refresh token")
        .to_owned();
    assert_ne!(second, first);
    let (status, reused) = refresh(first).await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(control.revoke_sign_ins("acme", &user).expect("revoke"), 1);
    let (status, revoked) = refresh(second).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(revoked["error"], "invalid_grant");
    assert!(
        revoked["error_description"]
            .as_str()
            .expect("description")
            .contains("AADSTS50173")
    );
}
