//! Support for the GAL-to-phones tests: what each mailbox's folder should hold, computed from the simulator's
//! directory independently of the engine, and what it does hold, read through the simulator's control API.

#![allow(dead_code)]

pub mod counting_store;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The anchor property id galbridge writes (the fixed namespace of `personal_contacts::contact`).
pub const ANCHOR_PROPERTY: &str =
    "String {6d1f4b8e-3a2c-4f5e-9b7a-0c8d2e1f5a93} Name galbridgeAnchor";

/// Users of the target tenant whose mailbox an `all` selection fills and that can be written (REST-enabled).
pub fn writable_mailboxes(users: &[Value]) -> Vec<Value> {
    users
        .iter()
        .filter(|u| selected(u) && u["restEnabled"] == true)
        .cloned()
        .collect()
}

/// Users an `all` selection picks: enabled members with an address.
pub fn selected(user: &Value) -> bool {
    user["userType"] == "Member"
        && user["accountEnabled"] == true
        && user["mail"].as_str().is_some_and(|m| m.contains('@'))
}

/// The contacts of one folder (by name) of a mailbox, by anchor (several per anchor = duplicates).
pub fn folder_by_anchor(
    sim: &m365_sim::SimHandle,
    tenant: &str,
    user_id: &str,
    folder: &str,
) -> BTreeMap<String, Vec<m365_sim::control::MailboxContactView>> {
    let mut by_anchor: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for contact in sim
        .control()
        .mailbox_contacts(tenant, user_id)
        .expect("mailbox readable")
    {
        if contact.folder_name != folder {
            continue;
        }
        let anchor = contact
            .extended_properties
            .iter()
            .find(|(id, _)| id.eq_ignore_ascii_case(ANCHOR_PROPERTY))
            .map(|(_, value)| value.clone())
            .unwrap_or_default();
        by_anchor.entry(anchor).or_default().push(contact);
    }
    by_anchor
}

/// The anchor of a source user.
pub fn anchor_of(source_tenant_id: &str, user: &Value) -> String {
    format!(
        "galbridge:{}:{}",
        source_tenant_id.to_ascii_lowercase(),
        user["id"].as_str().expect("id").to_ascii_lowercase()
    )
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// Asserts that a contact holds the person's fields as the default mapping renders them (field by field).
pub fn assert_contact_matches(contact: &Value, person: &Value, category: &str, context: &str) {
    let fields = [
        ("displayName", "displayName"),
        ("givenName", "givenName"),
        ("surname", "surname"),
        ("jobTitle", "jobTitle"),
        ("department", "department"),
        ("companyName", "companyName"),
        ("officeLocation", "officeLocation"),
        ("mobilePhone", "mobilePhone"),
    ];
    for (contact_field, user_field) in fields {
        assert_eq!(
            text(&contact[contact_field]).trim(),
            text(&person[user_field]).trim(),
            "{context}: {contact_field}"
        );
    }
    let business = person["businessPhones"]
        .as_array()
        .and_then(|p| p.first())
        .map(text)
        .unwrap_or("");
    let contact_business = contact["businessPhones"]
        .as_array()
        .and_then(|p| p.first())
        .map(text)
        .unwrap_or("");
    assert_eq!(contact_business, business, "{context}: businessPhones");
    assert_eq!(
        text(&contact["emailAddresses"][0]["address"]).to_lowercase(),
        text(&person["mail"]).to_lowercase(),
        "{context}: email"
    );
    assert_eq!(
        text(&contact["emailAddresses"][0]["name"]),
        text(&person["displayName"]).trim(),
        "{context}: email name"
    );
    assert_eq!(
        text(&contact["businessAddress"]["city"]),
        text(&person["city"]).trim(),
        "{context}: city"
    );
    let categories: Vec<&str> = contact["categories"]
        .as_array()
        .map(|c| c.iter().map(text).collect())
        .unwrap_or_default();
    assert!(
        categories.contains(&category),
        "{context}: categories {categories:?}"
    );
}

/// How many mailboxes an `all` selection picks in Northern (REST-enabled or not: both are in the shards).
pub fn selected_count(sim: &m365_sim::SimHandle) -> usize {
    sim.control()
        .users("northern")
        .expect("northern")
        .iter()
        .filter(|user| selected(user))
        .count()
}

/// Every writable Northern mailbox holds every person of `people` (Acme) exactly once in `folder_name`, and no other
/// anchored contact.
pub fn assert_every_mailbox_complete(
    sim: &m365_sim::SimHandle,
    folder_name: &str,
    people: &[Value],
) {
    let acme_id = sim.tenant("acme").expect("acme").tenant_id;
    let expected: BTreeSet<String> = people.iter().map(|p| anchor_of(&acme_id, p)).collect();
    let users = sim.control().users("northern").expect("northern");
    let mailboxes = writable_mailboxes(&users);
    assert!(mailboxes.len() >= 20, "enough mailboxes for three shards");
    for mailbox in &mailboxes {
        let id = mailbox["id"].as_str().expect("id");
        let folder = folder_by_anchor(sim, "northern", id, folder_name);
        let managed: BTreeSet<String> = folder.keys().filter(|a| !a.is_empty()).cloned().collect();
        let missing: Vec<_> = expected.difference(&managed).collect();
        let extra: Vec<_> = managed.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "mailbox {}: missing {missing:?}, extra {extra:?}",
            mailbox["userPrincipalName"]
        );
        for (anchor, copies) in &folder {
            if !anchor.is_empty() {
                assert_eq!(
                    copies.len(),
                    1,
                    "duplicates of {anchor} in {}",
                    mailbox["userPrincipalName"]
                );
            }
        }
    }
}
