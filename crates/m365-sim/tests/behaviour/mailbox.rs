//! Personal contacts in mailboxes [§3].

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{GRAPH, spawn};

const ANCHOR: &str = "String {00020329-0000-0000-C000-000000000046} Name galbridgeAnchor";

#[tokio::test]
async fn contacts_crud_with_categories_and_extended_properties() {
    // [§3] folders + child folders; contacts with categories; extended property not echoed, read by $expand,
    // found with singleValueExtendedProperties/Any(...).
    let t = spawn(&[("acme", 20)]).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let (status, folder) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contactFolders"),
            json!({"displayName": "Acme Directory"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let fid = folder["id"].as_str().unwrap().to_string();
    let (status, _) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contactFolders"),
            json!({"displayName": "Acme Directory"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "folder names are unique under a parent"
    );
    let (status, _) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contactFolders/{fid}/childFolders"),
            json!({"displayName": "Sales"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, created) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contactFolders/{fid}/contacts"),
            json!({"givenName": "Ada", "surname": "Lovelace", "displayName": "Ada Lovelace", "emailAddresses": [{"name": "Ada", "address": "ada@northern.example"}],
                   "businessPhones": ["+44 20 7946 0000"], "categories": ["Acme Directory"], "businessAddress": {"city": "London"},
                   "singleValueExtendedProperties": [{"id": ANCHOR, "value": "galbridge:t:1"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(
        created.get("singleValueExtendedProperties").is_none(),
        "not echoed back"
    );
    assert_eq!(created["categories"][0], "Acme Directory");
    let cid = created["id"].as_str().unwrap().to_string();

    let filter = format!(
        "singleValueExtendedProperties/Any(ep: ep/id eq '{ANCHOR}' and ep/value eq 'galbridge:t:1')"
    );
    let (all, _) = t
        .get_all(
            &tok,
            &format!(
                "{}?$filter={}",
                t.url(&format!("/v1.0/users/{user}/contactFolders/{fid}/contacts")),
                urlenc(&filter)
            ),
            &[],
        )
        .await;
    assert_eq!(all.len(), 1);
    let expand = format!("singleValueExtendedProperties($filter=id eq '{ANCHOR}')");
    let (status, one, _) = t
        .get(
            &tok,
            &format!(
                "/v1.0/users/{user}/contacts/{cid}?$expand={}",
                urlenc(&expand)
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        one["singleValueExtendedProperties"][0]["value"],
        "galbridge:t:1"
    );

    let (status, patched) = t
        .send_json(
            &tok,
            reqwest::Method::PATCH,
            &format!("/v1.0/users/{user}/contacts/{cid}"),
            json!({"jobTitle": "Analyst"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["jobTitle"], "Analyst");
    let view = t.sim.control().mailbox_contacts("acme", &user).unwrap();
    let mine = view.iter().find(|c| c.id == cid).unwrap();
    assert_eq!(mine.folder_name, "Acme Directory");
    assert_eq!(mine.extended_properties[0].1, "galbridge:t:1");
    assert!(!mine.user_made);

    let resp = t
        .http
        .delete(t.url(&format!("/v1.0/users/{user}/contacts/{cid}")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(
        t.sim
            .control()
            .mailbox_contacts("acme", &user)
            .unwrap()
            .iter()
            .all(|c| c.id != cid)
    );
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn contact_photos_round_trip_and_refuse_over_4_mb() {
    // [§3] PUT /contacts/{id}/photo/$value image/jpeg ≤ 4 MB.
    let t = spawn(&[("acme", 20)]).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let (_, c) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contacts"),
            json!({"displayName": "Pic"}),
        )
        .await;
    let cid = c["id"].as_str().unwrap();
    let jpeg = m365_sim::jpeg::tiny_jpeg(90, b"photo");
    let put = |body: Vec<u8>| {
        t.http
            .put(t.url(&format!("/v1.0/users/{user}/contacts/{cid}/photo/$value")))
            .bearer_auth(&tok)
            .header("Content-Type", "image/jpeg")
            .body(body)
            .send()
    };
    assert_eq!(
        put(jpeg.clone()).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    let got = t
        .http
        .get(t.url(&format!("/v1.0/users/{user}/contacts/{cid}/photo/$value")))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.as_ref(), jpeg.as_slice());
    let mut big = jpeg.clone();
    big.resize(4 * 1024 * 1024 + 1, 0);
    assert_eq!(
        put(big).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let view = t.sim.control().mailbox_contacts("acme", &user).unwrap();
    assert_eq!(view[0].photo_bytes, Some(jpeg.len()));
}

#[tokio::test]
async fn per_folder_contacts_delta_reports_changes_and_deletions() {
    // [§3] GET /contactFolders/{fid}/contacts/delta: full round, then only changes, deletions as @removed.
    let t = spawn(&[("acme", 20)]).await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let (_, folder) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contactFolders"),
            json!({"displayName": "GAL"}),
        )
        .await;
    let fid = folder["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (_, c) = t
            .send_json(
                &tok,
                reqwest::Method::POST,
                &format!("/v1.0/users/{user}/contactFolders/{fid}/contacts"),
                json!({"displayName": format!("P{i}")}),
            )
            .await;
        ids.push(c["id"].as_str().unwrap().to_string());
    }
    t.send_json(
        &tok,
        reqwest::Method::POST,
        &format!("/v1.0/users/{user}/contacts"),
        json!({"displayName": "elsewhere"}),
    )
    .await;
    let (all, last) = t
        .get_all(
            &tok,
            &t.url(&format!(
                "/v1.0/users/{user}/contactFolders/{fid}/contacts/delta"
            )),
            &[("Prefer", "odata.maxpagesize=2")],
        )
        .await;
    assert_eq!(all.len(), 5, "only this folder");
    t.send_json(
        &tok,
        reqwest::Method::PATCH,
        &format!("/v1.0/users/{user}/contacts/{}", ids[0]),
        json!({"jobTitle": "x"}),
    )
    .await;
    t.http
        .delete(t.url(&format!("/v1.0/users/{user}/contacts/{}", ids[1])))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    let (changes, _) = t
        .get_all(&tok, last["@odata.deltaLink"].as_str().unwrap(), &[])
        .await;
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .any(|c| c["id"] == ids[1].as_str() && c["@removed"]["reason"] == "deleted")
    );
}

#[tokio::test]
async fn mailboxes_not_rest_enabled_answer_mailbox_not_enabled_for_rest_api() {
    // [§3] MailboxNotEnabledForRESTAPI for some mailboxes (skip and report).
    let t = spawn(&[("acme", 200)]).await;
    let tok = t.token("acme", GRAPH).await;
    let users = t.sim.control().users("acme").unwrap();
    let off = users
        .iter()
        .find(|u| u["restEnabled"] == false && u["mailbox"] != "none")
        .expect("seeded");
    let (status, body, _) = t
        .get(
            &tok,
            &format!("/v1.0/users/{}/contactFolders", off["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "MailboxNotEnabledForRESTAPI");
}

#[tokio::test]
async fn user_made_contacts_are_listed_and_flagged() {
    // Ownership tests need contacts galbridge did not create.
    let t = spawn(&[("acme", 20)]).await;
    let user = t.rest_mailbox();
    let id = t
        .sim
        .control()
        .create_user_made_contact(
            "acme",
            &user,
            None,
            json!({"displayName": "Mum", "mobilePhone": "+44 7700 900000"}),
        )
        .unwrap();
    let tok = t.token("acme", GRAPH).await;
    let (all, _) = t
        .get_all(&tok, &t.url(&format!("/v1.0/users/{user}/contacts")), &[])
        .await;
    assert!(
        all.iter()
            .any(|c: &Value| c["id"] == id.as_str() && c["displayName"] == "Mum")
    );
    assert!(
        t.sim
            .control()
            .mailbox_contacts("acme", &user)
            .unwrap()
            .iter()
            .any(|c| c.id == id && c.user_made)
    );
}

#[tokio::test]
async fn fresh_personal_contacts_are_missing_from_filtered_lists_during_eventual_consistency() {
    // Outlook search is eventually consistent: a just-created contact is found by id at once but not by an
    // Any() filter on its anchor until consistency_delay_ms has passed; a writer that trusts the filter alone
    // would make a duplicate.
    let t = crate::common::spawn_with(
        &[("acme", 20)],
        m365_sim::Knobs {
            consistency_delay_ms: 20_000,
            ..Default::default()
        },
    )
    .await;
    let tok = t.token("acme", GRAPH).await;
    let user = t.rest_mailbox();
    let (status, created) = t
        .send_json(
            &tok,
            reqwest::Method::POST,
            &format!("/v1.0/users/{user}/contacts"),
            json!({"displayName": "Fresh Face", "singleValueExtendedProperties": [{"id": ANCHOR, "value": "galbridge:fresh"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let cid = created["id"].as_str().unwrap();
    let (status, _, _) = t
        .get(&tok, &format!("/v1.0/users/{user}/contacts/{cid}"))
        .await;
    assert_eq!(status, StatusCode::OK, "found by id at once");
    let filtered = format!(
        "{}?$filter={}",
        t.url(&format!("/v1.0/users/{user}/contacts")),
        urlenc(&format!(
            "singleValueExtendedProperties/Any(ep: ep/id eq '{ANCHOR}' and ep/value eq 'galbridge:fresh')"
        ))
    );
    let (found, _) = t.get_all(&tok, &filtered, &[]).await;
    assert!(found.is_empty(), "not searchable yet");
    t.sim
        .control()
        .advance_clock(std::time::Duration::from_secs(21));
    let (found, _) = t.get_all(&tok, &filtered, &[]).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], cid);
}
