//! A mailbox's contact folder as a source (issue 15), end to end through the real binary against m365-sim over TLS:
//! Acme fills its "Acme Staff Export" mailbox with its GAL (a `personal_contacts` link aimed at that one mailbox),
//! Northern reads the mailbox's "ACME GAL" folder (`kind = "mailbox_folder"`) into every Northern phone. Asserted on
//! what the Northern mailboxes hold: every export contact, field by field, under the anchor
//! `galbridge:{acme}:mailbox:{immutable id}`; a person added, changed and removed at Acme reaching every phone in
//! one incremental run that reads the export folder with one delta request; Acme's app limited to the export mailbox
//! by RBAC for Applications, any other mailbox refused with what to grant, and nothing removed. The delegated
//! sign-in runs twice: on file state (refresh token in the state folder) and on table state with a vault (refresh token
//! in the simulated Key Vault, written with the simulated managed identity).

#[path = "support/azurite.rs"]
mod azurite;
#[path = "engine_support/cli.rs"]
mod cli;

use std::collections::{BTreeMap, BTreeSet};

use cli::Bed;
use m365_sim::Service;
use m365_sim::control::MailboxContactView;
use serde_json::{Value, json};

const FOLDER: &str = "ACME GAL";

fn links(export: &str, extra: &str) -> String {
    links_signed_in(export, "app", extra)
}

fn links_signed_in(export: &str, sign_in: &str, extra: &str) -> String {
    format!(
        r#"
[[links]]
name = "acme-export"
[links.source]
tenant = "acme"
[links.target]
kind = "personal_contacts"
tenant = "acme"
mailboxes = {{ list = ["{export}"] }}
folder = "{FOLDER}"
categories = ["Acme"]
photos = true
[links.safety]
max_deletes = 1000
max_delete_percent = 100

[[links]]
name = "acme-to-northern-phones"
[links.source]
kind = "mailbox_folder"
tenant = "acme"
mailbox = "{export}"
folder = "{FOLDER}"
sign_in = "{sign_in}"
[links.target]
kind = "personal_contacts"
tenant = "northern"
mailboxes = {{ all = true }}
folder = "{FOLDER}"
photos = true
[links.safety]
max_deletes = 1000
max_delete_percent = 100

[[links]]
name = "acme-to-northern-gal"
[links.source]
kind = "mailbox_folder"
tenant = "acme"
mailbox = "{export}"
folder = "{FOLDER}"
sign_in = "{sign_in}"
[links.target]
kind = "mail_contact"
tenant = "northern"
[links.safety]
max_deletes = 1000
max_delete_percent = 100
{extra}"#
    )
}

/// The anchor property galbridge writes on personal contacts.
const ANCHOR_PROPERTY: &str = "String {6d1f4b8e-3a2c-4f5e-9b7a-0c8d2e1f5a93} Name galbridgeAnchor";

fn folder_contacts(bed: &Bed, tenant: &str, user_id: &str) -> Vec<MailboxContactView> {
    bed.sim
        .control()
        .mailbox_contacts(tenant, user_id)
        .expect("mailbox readable")
        .into_iter()
        .filter(|contact| contact.folder_name == FOLDER)
        .collect()
}

fn anchor(contact: &MailboxContactView) -> String {
    contact
        .extended_properties
        .iter()
        .find(|(id, _)| id.eq_ignore_ascii_case(ANCHOR_PROPERTY))
        .map(|(_, value)| value.clone())
        .unwrap_or_default()
}

fn text<'a>(fields: &'a Value, name: &str) -> &'a str {
    fields[name].as_str().unwrap_or_default().trim()
}

fn email(fields: &Value) -> String {
    fields["emailAddresses"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase()
}

/// Northern users whose mailbox an `all` selection fills and that can be written.
fn northern_phones(bed: &Bed) -> Vec<String> {
    bed.sim
        .control()
        .users("northern")
        .expect("northern")
        .iter()
        .filter(|u| {
            u["userType"] == "Member"
                && u["accountEnabled"] == true
                && u["restEnabled"] == true
                && u["mail"].as_str().is_some_and(|m| m.contains('@'))
        })
        .filter_map(|u| u["id"].as_str().map(str::to_owned))
        .collect()
}

/// Asserts every Northern phone's folder holds exactly the export folder's contacts (by immutable-id anchor, with
/// their fields); returns the export contacts by email.
fn assert_phones_match_export(bed: &Bed, export_id: &str) -> BTreeMap<String, Value> {
    let acme = bed
        .sim
        .tenant("acme")
        .expect("acme")
        .tenant_id
        .to_lowercase();
    let export = folder_contacts(bed, "acme", export_id);
    assert!(!export.is_empty(), "the export folder was filled");
    assert!(
        export.iter().filter(|c| c.photo_sha256.is_some()).count() > export.len() / 2,
        "most export contacts carry a photo"
    );
    // No contact was moved, so its regular id is its immutable id.
    let expected: BTreeMap<String, &MailboxContactView> = export
        .iter()
        .map(|c| {
            (
                format!("galbridge:{acme}:mailbox:{}", c.id.to_lowercase()),
                c,
            )
        })
        .collect();
    let phones = northern_phones(bed);
    assert!(phones.len() >= 5, "several Northern phones");
    for phone in &phones {
        let held = folder_contacts(bed, "northern", phone);
        let anchors: Vec<String> = held.iter().map(anchor).collect();
        assert_eq!(
            anchors.iter().collect::<BTreeSet<_>>(),
            expected.keys().collect::<BTreeSet<_>>(),
            "phone {phone} holds exactly the export folder"
        );
        assert_eq!(anchors.len(), expected.len(), "no duplicates in {phone}");
        for contact in &held {
            let source = &expected[&anchor(contact)].fields;
            for field in [
                "displayName",
                "givenName",
                "surname",
                "jobTitle",
                "department",
                "companyName",
                "mobilePhone",
            ] {
                assert_eq!(
                    text(&contact.fields, field),
                    text(source, field),
                    "{phone}: {field}"
                );
            }
            assert_eq!(email(&contact.fields), email(source), "{phone}: email");
            assert_eq!(
                contact.photo_sha256,
                expected[&anchor(contact)].photo_sha256,
                "{phone}: the export contact's photo"
            );
            assert_eq!(
                contact.fields["businessAddress"]["city"], source["businessAddress"]["city"],
                "{phone}: city"
            );
        }
    }
    export
        .iter()
        .map(|c| (email(&c.fields), c.fields.clone()))
        .collect()
}

/// Asserts Northern's GAL holds one mail contact per export contact, under its immutable-id anchor and address.
fn assert_gal_matches_export(bed: &Bed, export_id: &str) {
    let acme = bed
        .sim
        .tenant("acme")
        .expect("acme")
        .tenant_id
        .to_lowercase();
    let expected: BTreeMap<String, String> = folder_contacts(bed, "acme", export_id)
        .iter()
        .map(|c| {
            (
                format!("galbridge:{acme}:mailbox:{}", c.id.to_lowercase()),
                email(&c.fields),
            )
        })
        .collect();
    let held: BTreeMap<String, String> = bed
        .anchored("northern")
        .iter()
        .map(|c| {
            (
                c["CustomAttribute15"].as_str().expect("anchor").to_owned(),
                c["ExternalEmailAddress"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_start_matches("SMTP:")
                    .to_lowercase(),
            )
        })
        .collect();
    assert_eq!(held, expected, "Northern's GAL lists the export folder");
}

async fn sync_link(bed: &Bed, link: &str) -> Value {
    bed.sync_expecting(0, &["--link", link]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_export_mailbox_feeds_every_northern_phone_incrementally() {
    let Some(mut bed) = Bed::start(&[("acme", 30), ("northern", 10)], "").await else {
        return;
    };
    let control = bed.sim.control();
    let export_id = control
        .add_user("acme", json!({"displayName": "Acme Staff Export"}))
        .expect("export mailbox");
    let users = control.users("acme").expect("acme");
    let upn = |id: &str| {
        users
            .iter()
            .find(|u| u["id"] == id)
            .and_then(|u| u["userPrincipalName"].as_str())
            .expect("upn")
            .to_owned()
    };
    let export = upn(&export_id);
    // Another Acme mailbox, outside the app's scope.
    let other_id = users
        .iter()
        .find(|u| {
            u["mailbox"] == "user" && u["restEnabled"] == true && u["id"] != export_id.as_str()
        })
        .and_then(|u| u["id"].as_str())
        .expect("another mailbox")
        .to_owned();
    let other = upn(&other_id);
    // RBAC for Applications: Acme's app reaches the export mailbox only.
    control
        .set_app_mailbox_scope("acme", Some(&[export_id.as_str()]))
        .expect("scope");
    bed.set_links(&links(&export, ""));

    // First runs: Acme's GAL into the export mailbox, then the export folder into every Northern phone.
    sync_link(&bed, "acme-export").await;
    let report = sync_link(&bed, "acme-to-northern-phones").await;
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    let before = assert_phones_match_export(&bed, &export_id);
    let in_scope = bed.in_scope("acme").len();
    assert_eq!(
        before.len(),
        in_scope,
        "the export holds Acme's people in scope"
    );
    sync_link(&bed, "acme-to-northern-gal").await;
    assert_gal_matches_export(&bed, &export_id);

    // A person added, one changed, one removed at Acme.
    let people = bed.in_scope("acme");
    let changed = people
        .iter()
        .find(|p| p["id"] != export_id.as_str())
        .expect("a person")
        .clone();
    let removed = people
        .iter()
        .rev()
        .find(|p| p["id"] != export_id.as_str() && p["id"] != changed["id"])
        .expect("another person")
        .clone();
    let newcomer = control
        .add_user(
            "acme",
            json!({"displayName": "Zoe Newcomer", "jobTitle": "Analyst", "city": "Leeds"}),
        )
        .expect("new person");
    let newcomer_mail = control
        .users("acme")
        .expect("acme")
        .iter()
        .find(|u| u["id"] == newcomer.as_str())
        .and_then(|u| u["mail"].as_str())
        .expect("the newcomer's address")
        .to_lowercase();
    control
        .update_user(
            "acme",
            changed["id"].as_str().expect("id"),
            json!({"jobTitle": "Chief Cartographer"}),
        )
        .expect("change");
    control
        .delete_user("acme", removed["id"].as_str().expect("id"), false)
        .expect("delete");
    sync_link(&bed, "acme-export").await;

    // One incremental run brings all three to every phone, reading the export folder with one delta request.
    let delta_path = "/v1.0/users/{id}/contactFolders/{fid}/contacts/delta";
    let deltas_before = control.count(Service::Graph, delta_path, Some(200));
    let report = sync_link(&bed, "acme-to-northern-phones").await;
    let deltas = control.count(Service::Graph, delta_path, Some(200)) - deltas_before;
    assert_eq!(report["mode"], "incremental", "{report:#}");
    assert_eq!(report["source_read"], 3, "three changes read: {report:#}");
    assert_eq!(
        deltas, 1,
        "one delta round trip for the source folder, none in the phones"
    );
    let after = assert_phones_match_export(&bed, &export_id);
    assert!(!before.contains_key(&newcomer_mail));
    let new_contact = after
        .get(&newcomer_mail)
        .expect("the newcomer reached the export folder and every phone");
    assert_eq!(text(new_contact, "jobTitle"), "Analyst");
    let changed_mail = changed["mail"].as_str().expect("mail").to_lowercase();
    assert_eq!(
        text(&after[&changed_mail], "jobTitle"),
        "Chief Cartographer"
    );
    let removed_mail = removed["mail"].as_str().expect("mail").to_lowercase();
    assert!(before.contains_key(&removed_mail) && !after.contains_key(&removed_mail));
    // The same export folder feeds Northern's GAL as mail contacts, incrementally too.
    let report = sync_link(&bed, "acme-to-northern-gal").await;
    assert_eq!(report["source_read"], 3, "{report:#}");
    assert_gal_matches_export(&bed, &export_id);

    // Any other mailbox is refused: the plan says what to grant, and nothing changes in Northern's phones.
    bed.set_links(&links(
        &export,
        &format!(
            "\n[[links]]\nname = \"other-mailbox\"\n[links.source]\nkind = \"mailbox_folder\"\ntenant = \"acme\"\n\
             mailbox = \"{other}\"\nfolder = \"{FOLDER}\"\n[links.target]\nkind = \"personal_contacts\"\n\
             tenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"{FOLDER}\"\n"
        ),
    ));
    let planned = bed
        .run(&["plan", "--json", "--link", "other-mailbox"])
        .await;
    assert_eq!(planned.code, 1, "{}\n{}", planned.stdout, planned.stderr);
    let said = format!("{}{}", planned.stdout, planned.stderr);
    assert!(
        said.contains("ErrorAccessDenied")
            && said.contains("Contacts.Read")
            && said.contains("RBAC for Applications"),
        "the refusal says what to grant: {said}"
    );
    let synced = bed
        .run(&["sync", "--json", "--link", "other-mailbox"])
        .await;
    assert_eq!(synced.code, 1, "{}\n{}", synced.stdout, synced.stderr);
    assert_phones_match_export(&bed, &export_id);
    let _ = other_id;
}

/// Where the delegated sign-in keeps its refresh token in a test: the file state's folder, or (table state) the
/// simulated Key Vault, reached with the simulated App Service managed identity.
#[derive(Clone, Copy, PartialEq)]
enum TokenHome {
    File,
    KeyVault,
}

/// The refresh token `galbridge login` stored for the export mailbox, where `home` keeps it.
fn stored_refresh_token(bed: &Bed, export: &str, home: TokenHome) -> String {
    if home == TokenHome::KeyVault {
        let name = galbridge::m365::vault_token_store::refresh_token_secret_name("acme", export);
        return bed
            .sim
            .control()
            .vault_secret_versions(&name)
            .pop()
            .expect("the refresh token secret");
    }
    let path = bed
        .dir
        .path()
        .join("state/refresh-tokens")
        .join(format!("acme-{}.json", export.to_lowercase()));
    let text = std::fs::read_to_string(&path).expect("the refresh token file");
    let stored: Value = serde_json::from_str(&text).expect("JSON");
    stored["refresh_token"]
        .as_str()
        .expect("a token")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_sign_in_rotates_its_refresh_token_and_a_revoked_one_fails_clearly() {
    delegated_sign_in(TokenHome::File).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_sign_in_on_table_state_keeps_its_refresh_token_in_key_vault() {
    delegated_sign_in(TokenHome::KeyVault).await;
}

async fn delegated_sign_in(home: TokenHome) {
    let Some(mut bed) = Bed::start(&[("acme", 20), ("northern", 8)], "").await else {
        return;
    };
    match home {
        TokenHome::File => bed.use_file_state(),
        TokenHome::KeyVault => {
            // Table state (the bed's Azurite table) with a vault: the Functions deployment's shape.
            let identity = bed.sim.identity();
            let vault = bed.sim.base_url().to_string();
            bed.set_env("GALBRIDGE_KEY_VAULT_URL", &vault);
            bed.set_env("IDENTITY_ENDPOINT", identity.endpoint.as_str());
            bed.set_env("IDENTITY_HEADER", &identity.header);
        }
    }
    let control = bed.sim.control();
    let export_id = control
        .add_user("acme", json!({"displayName": "Acme Staff Export"}))
        .expect("export mailbox");
    let export = control
        .users("acme")
        .expect("acme")
        .iter()
        .find(|u| u["id"] == export_id.as_str())
        .and_then(|u| u["userPrincipalName"].as_str())
        .expect("upn")
        .to_owned();
    bed.set_links(&links_signed_in(&export, "delegated", ""));
    let login_command = format!("galbridge login --tenant acme --mailbox {export}");
    sync_link(&bed, "acme-export").await;

    // Before anyone signed in, the run says which command to run.
    let unsigned = bed
        .run(&["sync", "--json", "--link", "acme-to-northern-phones"])
        .await;
    assert_eq!(unsigned.code, 1, "{}\n{}", unsigned.stdout, unsigned.stderr);
    assert!(
        format!("{}{}", unsigned.stdout, unsigned.stderr).contains(&login_command),
        "names the command: {}\n{}",
        unsigned.stdout,
        unsigned.stderr
    );

    // `galbridge login`: the device code is approved as the export mailbox's user, as in a browser.
    let child = bed
        .command(&["login", "--tenant", "acme", "--mailbox", &export])
        .spawn()
        .expect("galbridge login starts");
    let code = loop {
        if let Some(code) = control
            .pending_device_codes("acme")
            .expect("acme")
            .into_iter()
            .next()
        {
            break code;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    control
        .approve_device_code("acme", &code, &export)
        .expect("approved");
    let output = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("login finishes")
        .expect("login output");
    let said = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{said}");
    assert!(
        said.contains(&code),
        "the operator is shown the code: {said}"
    );
    let first = stored_refresh_token(&bed, &export, home);
    assert!(!said.contains(&first), "no token on the console");
    if home == TokenHome::KeyVault {
        let name = galbridge::m365::vault_token_store::refresh_token_secret_name("acme", &export);
        assert!(said.contains(&name), "names the secret: {said}");
    }

    // Each run redeems the stored token and keeps the rotated one (the simulator refuses a redeemed token again).
    let mut previous = first;
    for round in 0..2 {
        if round == 1 {
            let person = bed.in_scope("acme")[0]["id"]
                .as_str()
                .expect("id")
                .to_owned();
            control
                .update_user("acme", &person, json!({"jobTitle": "Rotated Round Two"}))
                .expect("change");
            sync_link(&bed, "acme-export").await;
        }
        let report = sync_link(&bed, "acme-to-northern-phones").await;
        assert_eq!(report["outcome"], "succeeded", "{report:#}");
        let stored = stored_refresh_token(&bed, &export, home);
        assert_ne!(
            stored, previous,
            "round {round}: the rotated refresh token is stored"
        );
        assert!(
            !report.to_string().contains(&stored),
            "no token in the report"
        );
        previous = stored;
    }
    assert_eq!(control.refresh_tokens_redeemed("acme").expect("acme"), 2);
    let held = assert_phones_match_export(&bed, &export_id);
    assert!(
        held.values()
            .any(|c| text(c, "jobTitle") == "Rotated Round Two")
    );

    // The sign-in is revoked (password reset): the run fails naming the command, and nothing is removed.
    control.revoke_sign_ins("acme", &export).expect("revoke");
    let leaving = bed
        .in_scope("acme")
        .iter()
        .find(|p| p["id"] != export_id.as_str())
        .and_then(|p| p["id"].as_str())
        .expect("a person")
        .to_owned();
    control
        .delete_user("acme", &leaving, false)
        .expect("delete");
    sync_link(&bed, "acme-export").await;
    let revoked = bed
        .run(&["sync", "--json", "--link", "acme-to-northern-phones"])
        .await;
    assert_eq!(revoked.code, 1, "{}\n{}", revoked.stdout, revoked.stderr);
    let said = format!("{}{}", revoked.stdout, revoked.stderr);
    assert!(
        said.contains(&login_command) && said.contains("revoked"),
        "{said}"
    );
    let status = bed.run(&["status", "--json"]).await;
    assert!(
        status.stdout.contains(&login_command),
        "status names the command: {}",
        status.stdout
    );
    for phone in northern_phones(&bed) {
        assert_eq!(
            folder_contacts(&bed, "northern", &phone).len(),
            held.len(),
            "nothing was removed from {phone}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_moved_between_subfolders_keeps_its_identity_on_every_phone() {
    let Some(mut bed) = Bed::start(&[("acme", 10), ("northern", 8)], "").await else {
        return;
    };
    let control = bed.sim.control();
    // An export mailbox kept by hand: "ACME GAL" with a "Sales" subfolder (filled in Outlook, say).
    let export_id = control
        .add_user("acme", json!({"displayName": "Acme Staff Export"}))
        .expect("export mailbox");
    let export = control
        .users("acme")
        .expect("acme")
        .iter()
        .find(|u| u["id"] == export_id.as_str())
        .and_then(|u| u["userPrincipalName"].as_str())
        .expect("upn")
        .to_owned();
    let top = control
        .create_contact_folder("acme", &export_id, None, FOLDER)
        .expect("folder");
    let sales = control
        .create_contact_folder("acme", &export_id, Some(&top), "Sales")
        .expect("subfolder");
    let mut ids = Vec::new();
    for (n, folder) in [&top, &top, &sales].into_iter().enumerate() {
        ids.push(
            control
                .create_user_made_contact(
                    "acme",
                    &export_id,
                    Some(folder),
                    json!({"displayName": format!("Partner {n}"), "emailAddresses": [{"address": format!("partner{n}@acme.example")}],
                           "jobTitle": "Buyer"}),
                )
                .expect("contact"),
        );
    }
    bed.set_links(&format!(
        "[[links]]\nname = \"export-to-phones\"\n[links.source]\nkind = \"mailbox_folder\"\ntenant = \"acme\"\n\
         mailbox = \"{export}\"\nfolder = \"{FOLDER}\"\ninclude_subfolders = true\n[links.target]\n\
         kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"{FOLDER}\"\n"
    ));
    sync_link(&bed, "export-to-phones").await;
    let phones = northern_phones(&bed);
    let held = |phone: &str| -> BTreeMap<String, String> {
        folder_contacts(&bed, "northern", phone)
            .iter()
            .map(|c| (email(&c.fields), format!("{} {}", anchor(c), c.id)))
            .collect()
    };
    let before: Vec<BTreeMap<String, String>> = phones.iter().map(|p| held(p)).collect();
    assert!(
        before.iter().all(|h| h.len() == 3),
        "three partners, subfolder included: {before:?}"
    );

    // Partner 0 moves into Sales (a new regular id in Outlook), partner 2 changes title in Sales.
    control
        .move_contact("acme", &export_id, &ids[0], &sales)
        .expect("move");
    control
        .update_mailbox_contact(
            "acme",
            &export_id,
            &ids[2],
            json!({"jobTitle": "Head Buyer"}),
        )
        .expect("change");
    let report = sync_link(&bed, "export-to-phones").await;
    assert_eq!(report["mode"], "incremental", "{report:#}");
    let after: Vec<BTreeMap<String, String>> = phones.iter().map(|p| held(p)).collect();
    assert_eq!(
        after, before,
        "same anchors and the same contacts on every phone: the move was neither a delete nor a create"
    );
    for phone in &phones {
        let titles: BTreeMap<String, String> = folder_contacts(&bed, "northern", phone)
            .iter()
            .map(|c| (email(&c.fields), text(&c.fields, "jobTitle").to_owned()))
            .collect();
        assert_eq!(titles["partner2@acme.example"], "Head Buyer", "{phone}");
    }

    // The export folder's delta tokens expire: the next run reads the folders in full, and nothing moves.
    control.expire_delta_tokens("acme").expect("expire");
    let report = sync_link(&bed, "export-to-phones").await;
    assert_eq!(
        report["source_read"], 3,
        "a full read of both folders: {report:#}"
    );
    let again: Vec<BTreeMap<String, String>> = phones.iter().map(|p| held(p)).collect();
    assert_eq!(again, before);
}
