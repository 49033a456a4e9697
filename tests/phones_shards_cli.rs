//! GAL to phones in shards (issue 17) from the CLI: `galbridge sync` of a `personal_contacts` link with
//! `mailboxes_per_shard = 10` and no queue runs the shards in its own process: every mailbox complete, no duplicate,
//! and `status` shows the shard set (in process, every shard done).

#[path = "support/azurite.rs"]
mod azurite;
#[path = "engine_support/cli.rs"]
mod cli;
mod phones_support;

use phones_support::{assert_every_mailbox_complete, selected_count};
use serde_json::Value;

const FOLDER: &str = "Acme Directory";
const LINK: &str = "acme-phones";

fn link_toml() -> String {
    format!(
        "[[links]]\nname = \"{LINK}\"\n[links.source]\ntenant = \"acme\"\n[links.target]\n\
         kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"{FOLDER}\"\n\
         mailboxes_per_shard = 10\n"
    )
}

#[tokio::test]
async fn the_cli_runs_the_shards_in_process_without_a_queue() {
    let Some(mut bed) = cli::Bed::start(&[("acme", 12), ("northern", 30)], &link_toml()).await
    else {
        return;
    };
    bed.use_file_state();
    let report = bed.sync_expecting(0, &["--link", LINK]).await;
    assert_eq!(report["outcome"], "succeeded", "{report:#}");
    let people: Vec<Value> = bed
        .sim
        .control()
        .users("acme")
        .expect("acme")
        .into_iter()
        .filter(cli::in_default_scope)
        .collect();
    assert_every_mailbox_complete(&bed.sim, FOLDER, &people);
    let status = bed.run(&["status", "--json"]).await;
    assert_eq!(status.code, 0, "{}", status.stderr);
    let status = status.json();
    let link = status["links"]
        .as_array()
        .and_then(|links| links.iter().find(|l| l["link"] == LINK))
        .expect("the link")
        .clone();
    let shards = &link["shards"];
    let expected = selected_count(&bed.sim).div_ceil(10) as u64;
    assert!(shards.get("queue").is_none(), "in process: {shards}");
    assert_eq!(shards["shards"].as_u64(), Some(expected), "{shards}");
    assert_eq!(shards["done"].as_u64(), Some(expected), "{shards}");
    let human = bed.run(&["status"]).await;
    assert!(
        human
            .stdout
            .contains(&format!("{expected}/{expected} done")),
        "{}",
        human.stdout
    );
}
