//! Hidden from the address lists lives in Exchange only [§2]: Graph's `showInAddressList` is "do not use", out of
//! sync with Exchange and null for cloud mailboxes (Graph known issue); the truth is Exchange's
//! `HiddenFromAddressListsEnabled`, read with `Get-Recipient -Filter` through InvokeCommand.

use std::collections::BTreeSet;
use std::time::Duration;

use m365_sim::Service;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{EXCHANGE, GRAPH, TestSim, spawn};

/// Users Exchange lists as recipients (mailboxes and mail-enabled guests), per the control API.
fn recipients(t: &TestSim) -> Vec<Value> {
    t.sim
        .control()
        .users("acme")
        .expect("tenant")
        .into_iter()
        .filter(|u| u["mailbox"] != "none" || (u["userType"] == "Guest" && u["mail"].is_string()))
        .collect()
}

fn ids(values: &[Value]) -> BTreeSet<String> {
    values
        .iter()
        .map(|v| {
            v["ExternalDirectoryObjectId"]
                .as_str()
                .expect("ExternalDirectoryObjectId")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn graph_show_in_address_list_is_null_whatever_exchange_says() {
    // [§2] Graph's showInAddressList is not kept in step with Exchange and is null for cloud mailboxes; Exchange's
    // HiddenFromAddressListsEnabled says who is hidden.
    let t = spawn(&[("acme", 120)]).await;
    let users = t.sim.control().users("acme").unwrap();
    let hidden = users
        .iter()
        .find(|u| u["hiddenFromAddressLists"] == true)
        .expect("the seed hides some people");
    let shown = users
        .iter()
        .find(|u| u["hiddenFromAddressLists"] == false && u["mailbox"] == "user")
        .unwrap();
    let graph = t.token("acme", GRAPH).await;
    for u in [hidden, shown] {
        let (status, body, _) = t
            .get(
                &graph,
                &format!(
                    "/v1.0/users/{}?$select=id,showInAddressList",
                    u["id"].as_str().unwrap()
                ),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.as_object().unwrap().contains_key("showInAddressList"),
            "{body}"
        );
        assert_eq!(body["showInAddressList"], Value::Null, "{body}");
    }
    let (all, _) = t
        .get_all(
            &graph,
            "/v1.0/users?$select=id,showInAddressList&$top=999",
            &[],
        )
        .await;
    assert!(all.iter().all(|u| u["showInAddressList"].is_null()));
    let (delta, _) = t
        .get_all(
            &graph,
            "/v1.0/users/delta?$select=id,displayName,showInAddressList",
            &[],
        )
        .await;
    assert!(delta.iter().all(|u| u["showInAddressList"].is_null()));

    let exo = t.token("acme", EXCHANGE).await;
    let (status, body) = t
        .exo(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"Identity": hidden["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"][0]["HiddenFromAddressListsEnabled"], true);
    assert_eq!(body["value"][0]["ExternalDirectoryObjectId"], hidden["id"]);
}

#[tokio::test]
async fn hiding_in_exchange_moves_when_changed_utc_but_not_graph_users_delta() {
    // [§2] Hiding or un-hiding a person in Exchange (control API, Set-Mailbox) changes the recipient's
    // WhenChangedUTC; Graph is not kept in step, so users/delta has nothing new. A Graph change still shows.
    let t = spawn(&[("acme", 40)]).await;
    let graph = t.token("acme", GRAPH).await;
    let exo = t.token("acme", EXCHANGE).await;
    let (_, last) = t
        .get_all(
            &graph,
            "/v1.0/users/delta?$select=id,displayName,showInAddressList",
            &[],
        )
        .await;
    let delta_link = last["@odata.deltaLink"].as_str().unwrap().to_string();

    t.sim.control().advance_clock(Duration::from_secs(600));
    let since = (chrono::Utc::now() + chrono::Duration::seconds(590))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let users = recipients(&t);
    let mailboxes: Vec<&Value> = users
        .iter()
        .filter(|u| u["mailbox"] == "user" && u["hiddenFromAddressLists"] == false)
        .collect();
    let (a, b) = (
        mailboxes[0]["id"].as_str().unwrap(),
        mailboxes[1]["id"].as_str().unwrap(),
    );
    t.sim
        .control()
        .update_user("acme", a, json!({"hiddenFromAddressLists": true}))
        .unwrap();
    let (status, body) = t
        .exo(
            "acme",
            &exo,
            "Set-Mailbox",
            json!({"Identity": mailboxes[1]["mail"], "HiddenFromAddressListsEnabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (changes, _) = t.get_all(&graph, &delta_link, &[]).await;
    assert!(
        changes.is_empty(),
        "hiding is not a Graph change: {changes:?}"
    );

    let (status, body) = t
        .exo(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"Filter": format!("WhenChangedUTC -ge '{since}'")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let changed = ids(body["value"].as_array().unwrap());
    assert_eq!(changed, BTreeSet::from([a.to_string(), b.to_string()]));
    for r in body["value"].as_array().unwrap() {
        assert_eq!(r["HiddenFromAddressListsEnabled"], true);
        let when = r["WhenChangedUTC"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(when).is_ok(), "{when}");
        assert!(when >= since.as_str());
    }

    // Un-hiding is the same kind of change; a Graph change does reach users/delta.
    t.sim.control().advance_clock(Duration::from_secs(60));
    t.sim
        .control()
        .update_user("acme", a, json!({"hiddenFromAddressLists": false}))
        .unwrap();
    t.sim
        .control()
        .update_user("acme", b, json!({"jobTitle": "Hidden Engineer"}))
        .unwrap();
    let (changes, _) = t.get_all(&graph, &delta_link, &[]).await;
    let changed: Vec<&str> = changes.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(changed, [b], "only the Graph change");
    let (_, body) = t
        .exo("acme", &exo, "Get-Recipient", json!({"Identity": a}))
        .await;
    assert_eq!(body["value"][0]["HiddenFromAddressListsEnabled"], false);
    assert!(body["value"][0]["WhenChangedUTC"].as_str().unwrap() > since.as_str());
}

#[tokio::test]
async fn get_recipient_filters_the_hidden_set_ids_with_or_and_when_changed_with_paging() {
    // [§1, §2] Get-Recipient -Filter on HiddenFromAddressListsEnabled ($true or 'True'), ExternalDirectoryObjectId
    // joined with -or (and parentheses, -and), ResultSize, @odata.nextLink pages honouring odata.maxpagesize;
    // every request counted per cmdlet.
    let t = spawn(&[("acme", 300)]).await;
    let exo = t.token("acme", EXCHANGE).await;
    let users = recipients(&t);
    let expected: BTreeSet<String> = users
        .iter()
        .filter(|u| u["hiddenFromAddressLists"] == true)
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        expected.len() >= 3,
        "the seed hides a few people: {}",
        expected.len()
    );
    t.sim.control().reset_counters();

    let (all, requests) = t
        .exo_all(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"Filter": "HiddenFromAddressListsEnabled -eq $true", "ResultSize": "Unlimited"}),
            1000,
        )
        .await;
    assert_eq!(requests, 1);
    assert_eq!(ids(&all), expected);
    for r in &all {
        for key in [
            "ExternalDirectoryObjectId",
            "HiddenFromAddressListsEnabled",
            "RecipientTypeDetails",
            "PrimarySmtpAddress",
            "WhenChangedUTC",
        ] {
            assert!(!r[key].is_null(), "{key} in {r}");
        }
    }
    let (paged, requests) = t
        .exo_all(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"Filter": "HiddenFromAddressListsEnabled -eq 'True'", "ResultSize": "Unlimited"}),
            2,
        )
        .await;
    assert_eq!(ids(&paged), expected);
    assert_eq!(paged.len(), expected.len(), "no entry twice across pages");
    assert_eq!(requests, expected.len().div_ceil(2));
    let pages_so_far = 1 + requests as u64;

    let (capped, requests) = t
        .exo_all(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"Filter": "HiddenFromAddressListsEnabled -eq $true", "ResultSize": 2}),
            1000,
        )
        .await;
    assert_eq!((capped.len(), requests), (2, 1));

    // By ids, joined with -or, combined with the hidden flag.
    let some: Vec<&Value> = users.iter().take(4).collect();
    let by_id = some
        .iter()
        .map(|u| {
            format!(
                "ExternalDirectoryObjectId -eq '{}'",
                u["id"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join(" -or ");
    let (status, body) = t
        .exo("acme", &exo, "Get-Recipient", json!({"Filter": by_id}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let want: BTreeSet<String> = some
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids(body["value"].as_array().unwrap()), want);
    let hidden_id = expected.iter().next().unwrap();
    let (_, body) = t
        .exo(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"Filter": format!("({by_id} -or ExternalDirectoryObjectId -eq '{hidden_id}') -and HiddenFromAddressListsEnabled -eq $true")}),
        )
        .await;
    let hidden_among: BTreeSet<String> = want
        .iter()
        .filter(|id| expected.contains(*id))
        .cloned()
        .chain([hidden_id.clone()])
        .collect();
    assert_eq!(ids(body["value"].as_array().unwrap()), hidden_among);

    // Seeded people changed long ago: nothing is newer than the start of this test; -gt and -ge both parse.
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for op in ["-ge", "-gt"] {
        let (status, body) = t
            .exo(
                "acme",
                &exo,
                "Get-Recipient",
                json!({"Filter": format!("WhenChangedUTC {op} '{now}'")}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body["value"].as_array().unwrap().is_empty(), "{op}: {body}");
    }
    let (_, body) = t
        .exo(
            "acme",
            &exo,
            "Get-Recipient",
            json!({"Filter": "WhenChangedUTC -ge '2000-01-01T00:00:00Z' -and HiddenFromAddressListsEnabled -eq $true", "ResultSize": "Unlimited"}),
        )
        .await;
    assert_eq!(ids(body["value"].as_array().unwrap()), expected);

    let counted = t
        .sim
        .control()
        .count(Service::Exchange, "Get-Recipient", Some(200));
    assert_eq!(
        counted,
        pages_so_far + 1 + 2 + 2 + 1,
        "one counter per Get-Recipient request"
    );
}
