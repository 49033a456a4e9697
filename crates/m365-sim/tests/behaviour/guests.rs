//! Guests made by invitation as a GAL target uses them: `#EXT#` UPN, hidden in Exchange, a mail user only after
//! replication, `Set-MailUser` unhides, `DELETE /users/{id}` is a soft delete (docs/microsoft-facts.md §5).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{EXCHANGE, GRAPH, spawn_with};

#[tokio::test]
async fn an_invited_guest_reaches_exchange_after_replication_and_can_be_unhidden_then_soft_deleted()
{
    // [§5] The guest's UPN is `local_domain#EXT#@initialdomain`; Exchange knows it as a GuestMailUser only after a
    // replication delay (Get-MailUser/Set-MailUser say "not found" before), hidden from the GAL until Set-MailUser.
    let t = spawn_with(
        &[("acme", 2)],
        m365_sim::Knobs {
            guest_mail_user_delay_ms: 60_000,
            ..Default::default()
        },
    )
    .await;
    let graph = t.token("acme", GRAPH).await;
    let exo = t.token("acme", EXCHANGE).await;
    let (status, body) = t
        .send_json(&graph, Method::POST, "/v1.0/invitations", json!({"invitedUserEmailAddress": "ada@partner.example", "invitedUserDisplayName": "Ada", "inviteRedirectUrl": "https://myapps.microsoft.com", "sendInvitationMessage": false}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["invitedUser"]["id"].as_str().expect("id").to_owned();
    let initial = t.sim.tenant("acme").expect("tenant").initial_domain;
    let (_, user, _) = t
        .get(
            &graph,
            &format!("/v1.0/users/{id}?$select=userPrincipalName,mail,userType"),
        )
        .await;
    assert_eq!(
        user["userPrincipalName"],
        format!("ada_partner.example#EXT#@{initial}")
    );
    assert_eq!(user["mail"], "ada@partner.example");

    let (status, body) = t
        .exo(
            "acme",
            &exo,
            "Set-MailUser",
            json!({"Identity": id, "HiddenFromAddressListsEnabled": false}),
        )
        .await;
    assert_ne!(
        status,
        StatusCode::OK,
        "not a mail user before replication: {body}"
    );
    let (status, _) = t
        .exo("acme", &exo, "Get-MailUser", json!({"Identity": id}))
        .await;
    assert_ne!(status, StatusCode::OK);

    t.sim.control().advance_clock(Duration::from_secs(61));
    let (status, body) = t
        .exo("acme", &exo, "Get-MailUser", json!({"Identity": id}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"][0]["HiddenFromAddressListsEnabled"], true);
    assert_eq!(body["value"][0]["RecipientTypeDetails"], "GuestMailUser");
    let (status, body) = t
        .exo(
            "acme",
            &exo,
            "Set-MailUser",
            json!({"Identity": id, "HiddenFromAddressListsEnabled": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = t
        .exo("acme", &exo, "Get-MailUser", json!({"Identity": id}))
        .await;
    assert_eq!(body["value"][0]["HiddenFromAddressListsEnabled"], false);

    let (status, _) = t
        .send_json(
            &graph,
            Method::DELETE,
            &format!("/v1.0/users/{id}"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = t.get(&graph, &format!("/v1.0/users/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    t.sim
        .control()
        .restore_user("acme", &id)
        .expect("a deleted guest is restorable");
}
