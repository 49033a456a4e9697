//! Graph directory reads: users, org contacts, groups, photos, invitations, seeds (delta tests: delta.rs).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{GRAPH, spawn, spawn_with};

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

#[tokio::test]
async fn invitations_are_rate_limited_per_tenant_and_show_in_address_list_is_refused() {
    // [§4] Invitations: 150 / 5 s per tenant (a knob here) → 429 + Retry-After, then allowed again once the window
    // has passed. [§5] showInAddressList can no longer be set through Graph.
    let t = spawn_with(
        &[("acme", 2)],
        m365_sim::Knobs {
            invitations_per_5_s: 3,
            ..Default::default()
        },
    )
    .await;
    let graph = t.token("acme", GRAPH).await;
    let invite = |n: usize| json!({"invitedUserEmailAddress": format!("guest{n}@partner.example"), "inviteRedirectUrl": "https://myapps.microsoft.com", "sendInvitationMessage": false});
    let mut guest = String::new();
    for n in 0..3 {
        let (status, body) = t
            .send_json(
                &graph,
                reqwest::Method::POST,
                "/v1.0/invitations",
                invite(n),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        guest = body["invitedUser"]["id"].as_str().unwrap().to_string();
    }
    let resp = t
        .http
        .post(t.url("/v1.0/invitations"))
        .bearer_auth(&graph)
        .json(&invite(3))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&wait), "Retry-After {wait}");
    t.sim
        .control()
        .advance_clock(std::time::Duration::from_secs(wait));
    let (status, _) = t
        .send_json(
            &graph,
            reqwest::Method::POST,
            "/v1.0/invitations",
            invite(3),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "the window has moved on");

    let (status, body) = t
        .send_json(
            &graph,
            reqwest::Method::PATCH,
            &format!("/v1.0/users/{guest}"),
            json!({"showInAddressList": true}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn users_query_options_are_validated_as_graph_does() {
    // Graph: $top must be 1..999; an unknown $select property is a 400; `in` and `startswith` are basic filters,
    // `endswith` is an advanced query (ConsistencyLevel: eventual + $count=true).
    let t = spawn(&[("acme", 30)]).await;
    let token = t.token("acme", GRAPH).await;
    for bad in ["$top=0", "$top=1000", "$top=ten"] {
        let (status, body, _) = t.get(&token, &format!("/v1.0/users?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(
        t.get(&token, "/v1.0/users?$top=999").await.0,
        StatusCode::OK
    );
    let (status, body, _) = t.get(&token, "/v1.0/users?$select=id,shoeSize").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shoeSize")
    );

    let users = t.sim.control().users("acme").unwrap();
    let (a, b) = (
        users[3]["id"].as_str().unwrap(),
        users[7]["id"].as_str().unwrap(),
    );
    let (found, _) = t
        .get_all(
            &token,
            &t.url(&format!(
                "/v1.0/users?$filter=id in ('{a}','{b}')&$select=id"
            )),
            &[],
        )
        .await;
    let mut ids: Vec<&str> = found.iter().map(|u| u["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want = vec![a, b];
    want.sort_unstable();
    assert_eq!(ids, want);

    let name = users[5]["displayName"].as_str().unwrap();
    let prefix: String = name.chars().take(2).collect();
    let (found, _) = t
        .get_all(
            &token,
            &t.url(&format!(
                "/v1.0/users?$filter=startswith(displayName,'{}')&$select=id,displayName",
                prefix.to_lowercase()
            )),
            &[],
        )
        .await;
    assert!(
        found.iter().any(|u| u["id"] == users[5]["id"]),
        "startswith is case-insensitive"
    );
    assert!(found.iter().all(|u| {
        u["displayName"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .starts_with(&prefix.to_lowercase())
    }));
    let (status, _, _) = t
        .get(&token, "/v1.0/users?$filter=endswith(mail,'.example')")
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "advanced query needs ConsistencyLevel"
    );
}
