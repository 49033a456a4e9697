//! Issue 12 through the real binary (`galbridge plan`, `sync`) against m365-sim over TLS, state in Table Storage on
//! Azurite: a source tenant whose app lacks the Exchange permission fails the plan and the sync (exit code 1) with
//! a message naming the tenant and what to grant; with the permission, a person hidden in Exchange leaves the
//! partner's GAL and an incremental run with no change sends one Exchange request.

#[path = "support/azurite.rs"]
mod azurite;
#[path = "engine_support/cli.rs"]
mod cli;

use cli::{Bed, by_address, in_default_scope};
use serde_json::{Value, json};

const ONE_WAY: &str = r#"
[[links]]
name = "acme-to-northern"
[links.source]
tenant = "acme"
[links.target]
kind = "mail_contact"
tenant = "northern"
[links.safety]
max_deletes = 10
max_delete_percent = 50
"#;

fn reason(report: &Value) -> String {
    report["failures"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_exchange_permission_plan_and_sync_fail_saying_what_to_grant_then_hidden_people_leave()
 {
    let Some(bed) = Bed::start(&[("acme", 30), ("northern", 5)], ONE_WAY).await else {
        return;
    };
    let control = bed.sim.control();
    let without_exchange: Vec<&str> = m365_sim::DEFAULT_PERMISSIONS
        .iter()
        .copied()
        .filter(|p| *p != "Exchange.ManageAsApp")
        .collect();
    control.set_permissions("acme", &without_exchange).unwrap();

    let plan = bed.run(&["plan", "--json"]).await;
    assert_eq!(plan.code, 1, "{}\n{}", plan.stdout, plan.stderr);
    let report = plan.report();
    assert_eq!(report["outcome"], "failed", "{report:#}");
    let text = reason(&report);
    for needle in [
        "source tenant \"acme\"",
        "Exchange.ManageAsApp",
        "View-Only Recipients",
        "docs/app-registrations.md",
    ] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let sync = bed.sync_expecting(1, &[]).await;
    assert_eq!(sync["outcome"], "failed", "{sync:#}");
    assert!(bed.anchored("northern").is_empty(), "nobody synced");

    // Granted: the people in scope, none of the hidden ones.
    control
        .set_permissions("acme", m365_sim::DEFAULT_PERMISSIONS)
        .unwrap();
    let first = bed.sync_expecting(0, &[]).await;
    assert_eq!(first["mode"], "full", "{first:#}");
    let users = control.users("acme").unwrap();
    let shown: Vec<&Value> = users.iter().filter(|u| in_default_scope(u)).collect();
    assert_eq!(bed.anchored("northern").len(), shown.len());

    // Hidden in Exchange only: gone after an incremental run.
    let person = shown[0];
    control
        .update_user(
            "acme",
            person["id"].as_str().unwrap(),
            json!({"hiddenFromAddressLists": true}),
        )
        .unwrap();
    let second = bed.sync_expecting(0, &[]).await;
    assert_eq!(second["mode"], "incremental", "{second:#}");
    assert_eq!(second["applied"]["deletes"], 1, "{second:#}");
    let contacts = bed.anchored("northern");
    assert!(by_address(&contacts, person["mail"].as_str().unwrap()).is_none());

    let quiet = bed.sync_expecting(0, &[]).await;
    assert_eq!(quiet["mode"], "incremental", "{quiet:#}");
    assert_eq!(quiet["requests"]["exchange"], 1, "{quiet:#}");
    assert_eq!(quiet["requests"]["graph"], 1, "{quiet:#}");
}
