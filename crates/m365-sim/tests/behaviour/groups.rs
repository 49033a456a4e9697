//! Groups as a source [§10]: `groups/delta` lists every group (security groups without mail included) with
//! `$select` encoded in its tokens, a rename is a change, hiding a group in Exchange is not, a deletion is `@removed`;
//! `GET /groups/{id}`; Exchange's `Get-Recipient` lists mail-enabled groups (not security groups) with their Entra
//! id, kind and `HiddenFromAddressListsEnabled`.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{EXCHANGE, GRAPH, spawn};

const SELECT: &str = "/v1.0/groups/delta?$select=id,displayName,mail,mailEnabled,groupTypes";

fn ids(values: &[Value], key: &str) -> BTreeSet<String> {
    values
        .iter()
        .filter_map(|v| v[key].as_str())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn groups_delta_tracks_mail_enabled_groups_renames_and_deletions_but_not_exchange_hiding() {
    let t = spawn(&[("acme", 20)]).await;
    let control = t.sim.control();
    let seeded = control.groups("acme").unwrap();
    assert!(seeded.iter().all(|g| g["mailEnabled"] == false));
    let dl = control
        .add_group(
            "acme",
            json!({"displayName": "Sales Team", "mail": "sales@acme.example"}),
        )
        .unwrap();
    let m365 = control
        .add_group(
            "acme",
            json!({"displayName": "Project X", "mail": "projectx@acme.example", "groupTypes": ["Unified"],
                   "securityEnabled": false}),
        )
        .unwrap();
    let graph = t.token("acme", GRAPH).await;

    let (all, last) = t.get_all(&graph, SELECT, &[]).await;
    assert_eq!(
        all.len(),
        seeded.len() + 2,
        "every group, mail-enabled or not"
    );
    let sales = all.iter().find(|g| g["id"] == dl.as_str()).unwrap();
    assert_eq!(sales["mail"], "sales@acme.example");
    assert_eq!(sales["mailEnabled"], true);
    assert_eq!(sales["groupTypes"], json!([]));
    assert!(
        sales.get("securityEnabled").is_none(),
        "$select honoured: {sales}"
    );
    let delta_link = last["@odata.deltaLink"].as_str().unwrap().to_string();

    // Hidden in Exchange: no Graph change. Renamed: a change. Deleted: @removed.
    control
        .update_group("acme", &m365, json!({"hiddenFromAddressLists": true}))
        .unwrap();
    let (changes, last) = t.get_all(&graph, &delta_link, &[]).await;
    assert!(
        changes.is_empty(),
        "hiding is not a Graph change: {changes:?}"
    );
    let delta_link = last["@odata.deltaLink"].as_str().unwrap().to_string();
    control
        .update_group("acme", &dl, json!({"displayName": "Sales EMEA"}))
        .unwrap();
    control.delete_group("acme", &m365, false).unwrap();
    let (changes, _) = t.get_all(&graph, &delta_link, &[]).await;
    assert_eq!(changes.len(), 2, "{changes:?}");
    let renamed = changes.iter().find(|g| g["id"] == dl.as_str()).unwrap();
    assert_eq!(renamed["displayName"], "Sales EMEA");
    assert!(
        renamed.get("securityEnabled").is_none(),
        "the token keeps $select"
    );
    let removed = changes.iter().find(|g| g["id"] == m365.as_str()).unwrap();
    assert_eq!(removed["@removed"]["reason"], "deleted");

    let (status, body, _) = t
        .get(
            &graph,
            &format!("/v1.0/groups/{dl}?$select=id,displayName,mail"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["displayName"], "Sales EMEA");
    let (status, _, _) = t.get(&graph, &format!("/v1.0/groups/{m365}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body, _) = t
        .get(&graph, "/v1.0/groups/delta?$select=id,department")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // An expired token: 410 (or the knob's 400), as for users.
    control.expire_delta_tokens("acme").unwrap();
    let (status, _, _) = t.get(&graph, &delta_link).await;
    assert!(status == StatusCode::GONE || status == StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn get_recipient_lists_mail_enabled_groups_with_kind_and_hidden_flag() {
    let t = spawn(&[("acme", 20)]).await;
    let control = t.sim.control();
    let dl = control
        .add_group(
            "acme",
            json!({"displayName": "Sales", "mail": "sales@acme.example"}),
        )
        .unwrap();
    let secure = control
        .add_group(
            "acme",
            json!({"displayName": "Admins", "mail": "admins@acme.example", "securityEnabled": true}),
        )
        .unwrap();
    let m365 = control
        .add_group(
            "acme",
            json!({"displayName": "Project X", "mail": "px@acme.example", "groupTypes": ["Unified"],
                   "hiddenFromAddressLists": true}),
        )
        .unwrap();
    let plain = control
        .add_group(
            "acme",
            json!({"displayName": "Badge access", "securityEnabled": true}),
        )
        .unwrap();
    let exo = t.token("acme", EXCHANGE).await;
    let (all, _) = t
        .exo_all(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"ResultSize": "Unlimited"}),
            1000,
        )
        .await;
    let listed = ids(&all, "ExternalDirectoryObjectId");
    assert!(listed.contains(&dl) && listed.contains(&secure) && listed.contains(&m365));
    assert!(
        !listed.contains(&plain),
        "a security group without mail is no recipient"
    );
    let kind = |id: &str| {
        let r = all
            .iter()
            .find(|r| r["ExternalDirectoryObjectId"] == id)
            .unwrap();
        r["RecipientTypeDetails"].as_str().unwrap().to_string()
    };
    assert_eq!(kind(&dl), "MailUniversalDistributionGroup");
    assert_eq!(kind(&secure), "MailUniversalSecurityGroup");
    assert_eq!(kind(&m365), "GroupMailbox");

    let (hidden, _) = t
        .exo_all(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"Filter": "HiddenFromAddressListsEnabled -eq $true"}),
            1000,
        )
        .await;
    assert!(ids(&hidden, "ExternalDirectoryObjectId").contains(&m365));

    // Hiding a group moves its WhenChangedUTC.
    control.advance_clock(Duration::from_secs(600));
    let since = (chrono::Utc::now() + chrono::Duration::seconds(590))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    control
        .update_group("acme", &dl, json!({"hiddenFromAddressLists": true}))
        .unwrap();
    let (status, body) = t
        .exo(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"Filter": format!("WhenChangedUTC -ge '{since}'")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let changed = body["value"].as_array().unwrap();
    assert_eq!(
        ids(changed, "ExternalDirectoryObjectId"),
        BTreeSet::from([dl.clone()])
    );
    assert_eq!(changed[0]["HiddenFromAddressListsEnabled"], true);
}
