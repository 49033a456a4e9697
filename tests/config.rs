//! The shipped examples load, and resolve to the links an operator expects (meshes expanded, defaults applied,
//! endpoints per cloud, environment overrides). The committed JSON Schema matches the code.

use std::path::{Path, PathBuf};

use galbridge::config::{
    Cadence, Config, EntryField, Mailboxes, OnDelete, StateSettings, TargetOptions, TenantId,
    json_schema,
};

fn example(name: &str) -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    Config::load(&path).unwrap_or_else(|error| panic!("{name} must load: {error}"))
}

#[test]
fn one_way_example_resolves_to_one_mail_contact_link() {
    let config = example("one-way.toml");

    let links = config.links();
    assert_eq!(links.len(), 1);
    let link = &links[0];
    assert_eq!(link.name, "acme-to-northern");
    assert_eq!(link.source_tenant.name, "acme");
    assert_eq!(link.target_tenant.name, "northern");
    assert_eq!(link.cadence, Cadence::Every("30m".parse().unwrap()));
    assert_eq!(link.full_reconcile_every.to_string(), "1d");
    let TargetOptions::MailContact(target) = &link.target else {
        panic!("mail contact target expected")
    };
    assert_eq!(
        (
            target.anchor_attribute,
            target.on_delete,
            target.adopt_existing
        ),
        (15, OnDelete::Hide, true)
    );
    assert!(link.safety.trips(26, 10_000), "more than 25 deletes trips");
    assert!(link.safety.trips(6, 100), "more than 5% trips");
    assert!(!link.safety.trips(5, 100));
    assert!(link.scope.accepts_email("Ada@ACME.com"));
    assert!(!link.scope.accepts_email("ada@globex.com"));
    let render = |field| {
        link.mapping.get(field).map(|template| {
            template.render(|name| match name {
                "displayName" => Some("Ada Lovelace".into()),
                "jobTitle" => Some("Engineer".into()),
                _ => None,
            })
        })
    };
    assert_eq!(
        render(EntryField::DisplayName).as_deref(),
        Some("Ada Lovelace (Acme)")
    );
    assert_eq!(
        render(EntryField::Company).as_deref(),
        Some("Acme Construction")
    );
    assert_eq!(
        render(EntryField::JobTitle).as_deref(),
        Some("Engineer"),
        "unmapped fields keep the defaults"
    );
    assert_eq!(
        render(EntryField::HomePhone),
        None,
        "home phone is not synced by default"
    );
    let state = match config.state() {
        StateSettings::File(file) => file.path.clone(),
        other => panic!("file state expected, got {other:?}"),
    };
    assert!(
        state.ends_with("examples/.galbridge/state"),
        "relative to the file's folder: {state:?}"
    );
}

#[test]
fn two_tenant_mesh_expands_both_ways() {
    let config = example("two-way.toml");

    let names: Vec<&str> = config
        .links()
        .iter()
        .map(|link| link.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["partners.acme-to-globex", "partners.globex-to-acme"]
    );
    let back = config.link("partners.globex-to-acme").unwrap();
    assert_eq!(
        (
            back.source_tenant.name.as_str(),
            back.target_tenant.name.as_str()
        ),
        ("globex", "acme")
    );
    assert_eq!(back.mesh.as_deref(), Some("partners"));
    let display = back
        .mapping
        .get(EntryField::DisplayName)
        .unwrap()
        .render(|name| match name {
            "displayName" => Some("Hank Scorpio".into()),
            "sourceTenant" => Some(back.source_tenant.name.clone()),
            _ => None,
        });
    assert_eq!(display, "Hank Scorpio (globex)");
}

#[test]
fn three_tenant_mesh_gives_six_links_on_a_cron_schedule() {
    let config = example("mesh.toml");

    assert_eq!(config.links().len(), 6);
    let link = config.link("group.northern-to-globex").unwrap();
    let Cadence::Cron(schedule) = &link.cadence else {
        panic!("cron cadence expected")
    };
    assert_eq!(schedule.as_str(), "0 */30 * * * *");
    let excluded = "77777777-7777-4777-8777-777777777777".parse().unwrap();
    assert!(link.excludes_id(&excluded));
    assert_eq!(link.mapping_for(&excluded), None);
    let StateSettings::Table(table) = config.state() else {
        panic!("table state expected")
    };
    assert_eq!(
        table.endpoint.as_ref().unwrap().as_str(),
        "https://stgalbridge.table.core.windows.net/"
    );
}

#[test]
fn gal_to_phones_example_targets_mailboxes_with_defaults() {
    let config = example("gal-to-phones.toml");

    let link = config.link("northern-phones").unwrap();
    let TargetOptions::PersonalContacts(target) = &link.target else {
        panic!("personal contacts expected")
    };
    assert!(matches!(&target.mailboxes, Mailboxes::Groups(groups) if groups.len() == 1));
    assert_eq!(target.folder.as_deref(), Some("Northern Directory"));
    assert_eq!(target.categories, ["Northern"]);
    assert!(target.photos);
    assert!(
        target
            .exclude_mailboxes
            .contains("shared-reception@northern.example")
    );
    assert_eq!(link.mapping.get(EntryField::HomePhone), None);
    assert!(link.mapping.get(EntryField::Notes).is_some());
}

#[test]
fn endpoints_follow_the_cloud_and_overrides_win() {
    let text = r#"
        [tenants.gov]
        tenant_id = "gov.onmicrosoft.us"
        cloud = "usgovdod"
        client_id = "11111111-1111-4111-8111-111111111111"
        credential = { env = "GOV_SECRET" }
        [tenants.sim]
        tenant_id = "22222222-2222-4222-8222-222222222222"
        client_id = "11111111-1111-4111-8111-111111111111"
        credential = { env = "SIM_SECRET" }
        [tenants.sim.endpoints]
        graph = "https://127.0.0.1:8443/graph"
        exchange = "http://localhost:9000"
    "#;
    let config = Config::from_toml_str(text, Path::new("galbridge.toml")).unwrap();

    let gov = config.tenant("gov").unwrap().endpoints();
    assert_eq!(gov.login.as_str(), "https://login.microsoftonline.us/");
    assert_eq!(gov.graph.as_str(), "https://dod-graph.microsoft.us/");
    assert_eq!(gov.exchange.as_str(), "https://outlook-dod.office365.us/");
    let sim = config.tenant("sim").unwrap();
    let endpoints = sim.endpoints();
    assert_eq!(
        endpoints.login.as_str(),
        "https://login.microsoftonline.com/"
    );
    assert_eq!(endpoints.graph.as_str(), "https://127.0.0.1:8443/graph/");
    assert_eq!(endpoints.exchange.as_str(), "http://localhost:9000/");
    assert_eq!(
        endpoints.graph_audience, "https://graph.microsoft.com",
        "audience follows the cloud"
    );
    assert!(matches!(sim.tenant_id, TenantId::Guid(_)));
    assert_eq!(sim.known_initial_domain(), None);
}

#[test]
fn environment_overrides_the_deployment_settings() {
    let text = r#"
        [state]
        kind = "table"
        auth = { connection_string_env = "AZURITE_CONNECTION_STRING" }
        [tenants.acme]
        tenant_id = "acme.onmicrosoft.com"
        client_id = "11111111-1111-4111-8111-111111111111"
        credential = { key_vault_secret = "acme" }
    "#;
    let env = |name: &str| match name {
        "GALBRIDGE_KEY_VAULT_URL" => Some("https://kv-test.vault.azure.net".to_owned()),
        "GALBRIDGE_STATE_TABLE_ENDPOINT" => {
            Some("http://127.0.0.1:10002/devstoreaccount1".to_owned())
        }
        "GALBRIDGE_STATE_TABLE_NAME" => Some("galbridgetest".to_owned()),
        "GALBRIDGE_EXTRA_CA_FILE" => Some("/tmp/ca.pem".to_owned()),
        _ => None,
    };

    let config =
        Config::from_toml_str_with_env(text, Path::new("/etc/galbridge.toml"), env).unwrap();

    assert_eq!(
        config.key_vault().unwrap().url.as_str(),
        "https://kv-test.vault.azure.net/"
    );
    let StateSettings::Table(table) = config.state() else {
        panic!("table state expected")
    };
    assert_eq!(
        table.endpoint.as_ref().unwrap().as_str(),
        "http://127.0.0.1:10002/devstoreaccount1/"
    );
    assert_eq!(table.table, "galbridgetest");
    assert_eq!(
        config.service().extra_ca_file.as_deref(),
        Some(Path::new("/tmp/ca.pem"))
    );
}

#[test]
fn a_minimal_file_gets_every_default() {
    let config = Config::from_toml_str("", Path::new("dir/galbridge.toml")).unwrap();

    assert!(config.links().is_empty());
    assert_eq!(config.service().default_interval.to_string(), "15m");
    assert_eq!(config.service().max_concurrency, 8);
    assert_eq!(config.service().mailboxes_in_flight, 256);
    assert_eq!(config.service().graph_requests_per_10s, 130_000);
    let StateSettings::File(file) = config.state() else {
        panic!("file state by default")
    };
    assert_eq!(file.path, Path::new("dir/.galbridge/state"));
}

#[test]
fn interval_cadence_counts_a_link_due_within_a_minute_as_due() {
    let cadence = Cadence::Every("15m".parse().unwrap());
    let started = chrono::DateTime::parse_from_rfc3339("2026-01-01T10:00:05Z")
        .unwrap()
        .to_utc();
    let tick = |text| chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc();

    assert!(
        cadence.is_due(None, tick("2026-01-01T10:01:00Z")),
        "never ran: due"
    );
    assert!(!cadence.is_due(Some(started), tick("2026-01-01T10:05:00Z")));
    assert!(
        cadence.is_due(Some(started), tick("2026-01-01T10:15:00Z")),
        "next 15-minute tick runs it"
    );
}

#[test]
fn committed_schema_matches_the_code() {
    let committed = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("galbridge.schema.json"),
    )
    .expect("galbridge.schema.json is committed at the repository root");

    assert!(
        committed == json_schema(),
        "galbridge.schema.json is stale: run `cargo run -- config schema > galbridge.schema.json`"
    );
}

#[test]
fn export_mailbox_example_reads_a_mailbox_folder_into_phones() {
    use galbridge::config::{MailboxFolderSource, MailboxSignIn};
    let config = example("export-mailbox-to-phones.toml");
    let links = config.links();
    assert_eq!(links.len(), 2);
    assert_eq!(
        links[0].scope.mailbox_folder, None,
        "link 1 reads Acme's directory"
    );
    let phones = &links[1];
    assert_eq!(phones.source_tenant.name, "acme");
    assert_eq!(phones.target_tenant.name, "northern");
    assert_eq!(
        phones.scope.mailbox_folder,
        Some(MailboxFolderSource {
            mailbox: "staff-export@acme.com".into(),
            folder: vec!["ACME GAL".into()],
            include_subfolders: false,
            sign_in: MailboxSignIn::App,
        })
    );
}

#[test]
fn the_functions_queue_connection_settings_configure_the_shard_queue() {
    let env = |name: &str| match name {
        "GALBRIDGE_QUEUE__queueServiceUri" => {
            Some("https://stgal.queue.core.windows.net".to_owned())
        }
        "GALBRIDGE_QUEUE__credential" => Some("managedidentity".to_owned()),
        "GALBRIDGE_QUEUE__clientId" => Some("22222222-2222-4222-8222-222222222222".to_owned()),
        _ => None,
    };

    let config =
        Config::from_toml_str_with_env("", Path::new("/etc/galbridge.toml"), env).expect("loads");

    let queue = config
        .service()
        .shard_queue
        .as_ref()
        .expect("configured from the environment");
    assert_eq!(
        queue.endpoint.as_ref().map(|e| e.as_str()),
        Some("https://stgal.queue.core.windows.net/")
    );
    assert_eq!(queue.name, "galbridge-phones-shards");
    assert_eq!(queue.auth, galbridge::config::TableAuth::ManagedIdentity);
    assert_eq!(
        queue
            .managed_identity_client_id
            .as_ref()
            .map(|id| id.as_str()),
        Some("22222222-2222-4222-8222-222222222222")
    );

    // A connection string under the connection's own name (local use) works too.
    let local = Config::from_toml_str_with_env("", Path::new("/etc/galbridge.toml"), |name| {
        (name == "GALBRIDGE_QUEUE").then(|| "UseDevelopmentStorage=true".to_owned())
    })
    .expect("loads");
    assert_eq!(
        local.service().shard_queue.as_ref().map(|q| q.auth.clone()),
        Some(galbridge::config::TableAuth::ConnectionStringEnv(
            "GALBRIDGE_QUEUE".to_owned()
        ))
    );
    // Nothing set: no queue, shards run in-process.
    let none = Config::from_toml_str("", Path::new("/etc/galbridge.toml")).expect("loads");
    assert!(none.service().shard_queue.is_none());
}

#[test]
fn shard_queue_mistakes_are_reported_with_their_key() {
    let cases = [
        (
            "[service.shard_queue]\nname = \"Phones_Shards\"\nauth = { connection_string_env = \"Q\" }\n",
            "service.shard_queue.name",
        ),
        (
            // 57 characters: its poison queue would be 64.
            "[service.shard_queue]\nname = \"abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcdefghij-ab\"\nauth = { connection_string_env = \"Q\" }\n",
            "service.shard_queue.name",
        ),
        (
            "[service.shard_queue]\nname = \"shards\"\n",
            "service.shard_queue.endpoint",
        ),
        (
            "[service.shard_queue]\nauth = { connection_string_env = \"not a name\" }\n",
            "service.shard_queue.auth.connection_string_env",
        ),
    ];
    for (text, key) in cases {
        let error = Config::from_toml_str(text, Path::new("/etc/galbridge.toml"))
            .expect_err("refused")
            .to_string();
        assert!(error.contains(key), "{key}: {error}");
    }
    let bad_env =
        Config::from_toml_str_with_env("", Path::new("/etc/galbridge.toml"), |name| match name {
            "GALBRIDGE_QUEUE__queueServiceUri" => Some("https://q.example".to_owned()),
            "GALBRIDGE_QUEUE__credential" => Some("secret".to_owned()),
            _ => None,
        })
        .expect_err("refused")
        .to_string();
    assert!(bad_env.contains("GALBRIDGE_QUEUE__credential"), "{bad_env}");
}
