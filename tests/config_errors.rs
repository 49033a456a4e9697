//! Bad configuration files and the exact message an operator gets: the file, the key path, the reason.

use std::path::Path;

use galbridge::config::Config;

const TENANTS: &str = r#"
[key_vault]
url = "https://kv-galbridge.vault.azure.net/"

[tenants.acme]
tenant_id = "acme.onmicrosoft.com"
client_id = "11111111-1111-4111-8111-111111111111"
credential = { key_vault_secret = "acme-secret" }

[tenants.northern]
tenant_id = "2b7c4a9e-5d3f-4e21-9a8b-7c6d5e4f3a2b"
client_id = "22222222-2222-4222-8222-222222222222"
credential = { env = "NORTHERN_SECRET" }
"#;

/// A link from acme to northern, with `extra` lines added to the `[[links]]` table.
fn link(extra: &str) -> String {
    format!(
        "{TENANTS}\n[[links]]\nname = \"acme-to-northern\"\n{extra}\n[links.source]\ntenant = \"acme\"\n\
         [links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n"
    )
}

fn error_of(text: &str) -> String {
    match Config::from_toml_str(text, Path::new("galbridge.toml")) {
        Ok(_) => panic!("this configuration should be refused:\n{text}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn the_base_configuration_is_valid() {
    let config = Config::from_toml_str(&link(""), Path::new("galbridge.toml")).unwrap();
    assert_eq!(config.links().len(), 1);
}

#[test]
fn unknown_key_in_a_link() {
    assert_eq!(
        error_of(&link("colour = \"blue\"")),
        "galbridge.toml: links[0].colour: unknown field `colour`, expected one of `name`, `enabled`, `interval`, \
         `schedule`, `full_reconcile_every`, `source`, `target`, `safety`, `mapping`, `overrides`"
    );
}

#[test]
fn unknown_top_level_section() {
    let text = format!("[servce]\ndefault_interval = \"5m\"\n{TENANTS}");
    assert_eq!(
        error_of(&text),
        "galbridge.toml: servce: unknown field `servce`, expected one of `service`, `state`, \
         `key_vault`, `tenants`, `links`, `meshes`"
    );
}

#[test]
fn a_secret_written_into_the_file_is_refused_and_not_echoed() {
    let text = TENANTS.replace(
        "credential = { env = \"NORTHERN_SECRET\" }",
        "credential = { env = \"NORTHERN_SECRET\" }\nclient_secret = \"s3cr3t-value~abc\"",
    );
    let error = error_of(&text);
    assert_eq!(
        error,
        "galbridge.toml: tenants.northern.client_secret: unknown field `client_secret`, expected one of `tenant_id`, \
         `initial_domain`, `cloud`, `client_id`, `credential`, `endpoints`"
    );
    assert!(!error.contains("s3cr3t"));
}

#[test]
fn missing_tenant_with_a_suggestion() {
    let text = link("").replace("tenant = \"northern\"", "tenant = \"northen\"");
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].target.tenant: no tenant named \"northen\" (did you mean \"northern\"?)"
    );
}

#[test]
fn link_without_a_source_tenant() {
    let text = link("").replace(
        "[links.source]\ntenant = \"acme\"",
        "[links.source]\ninclude_guests = true",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].source.tenant: missing: name the tenant (a key of [tenants])"
    );
}

#[test]
fn duplicate_link_name() {
    let text = format!(
        "{}\n[[links]]\nname = \"acme-to-northern\"\n[links.source]\ntenant = \"northern\"\n\
         [links.target]\nkind = \"mail_contact\"\ntenant = \"acme\"\n",
        link("")
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[1].name: duplicate link name \"acme-to-northern\" (also links[0])"
    );
}

#[test]
fn mesh_link_name_colliding_with_a_link() {
    let text = format!(
        "{}\n[[links]]\nname = \"m.acme-to-northern\"\n[links.source]\ntenant = \"acme\"\n\
         [links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n\
         [[meshes]]\nname = \"m\"\ntenants = [\"acme\", \"northern\"]\n[meshes.target]\nkind = \"mail_contact\"\n",
        link("")
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: meshes[0].name: expands to link \"m.acme-to-northern\", which links[1] already defines"
    );
}

#[test]
fn link_from_a_tenant_to_itself_with_a_gal_target() {
    let text = link("").replace("tenant = \"northern\"", "tenant = \"acme\"");
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].target.tenant: a mail_contact link cannot write into its own source tenant \
         \"acme\" (its people are already in that GAL)"
    );
}

#[test]
fn bad_client_id_guid() {
    let text = link("").replace("11111111-1111-4111-8111-111111111111", "1111-1111");
    assert_eq!(
        error_of(&text),
        "galbridge.toml: tenants.acme.client_id: \"1111-1111\" is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
    );
}

#[test]
fn bad_tenant_id() {
    let text = link("").replace("acme.onmicrosoft.com", "acme");
    assert_eq!(
        error_of(&text),
        "galbridge.toml: tenants.acme.tenant_id: \"acme\" is neither a tenant GUID nor a domain name \
         (e.g. \"contoso.onmicrosoft.com\")"
    );
}

#[test]
fn bad_cloud() {
    let text = link("").replace(
        "tenant_id = \"acme.onmicrosoft.com\"",
        "tenant_id = \"acme.onmicrosoft.com\"\ncloud = \"gcchigh\"",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: tenants.acme.cloud: unknown variant `gcchigh`, expected one of `global`, `usgov`, \
         `usgovdod`, `china`"
    );
}

#[test]
fn bad_interval() {
    assert_eq!(
        error_of(&link("interval = \"15 minutes\"")),
        "galbridge.toml: links[0].interval: \"15 minutes\" is not a duration (write a number and a unit: \
         \"30s\", \"15m\", \"24h\", \"7d\", \"1h30m\")"
    );
}

#[test]
fn bad_schedule() {
    assert_eq!(
        error_of(&link("schedule = \"*/15 * * * *\"")),
        "galbridge.toml: links[0].schedule: \"*/15 * * * *\" is not a 6-field cron schedule (second minute hour \
         day month weekday, UTC, e.g. \"0 0 2 * * *\"); it has 5 fields"
    );
}

#[test]
fn interval_and_schedule_together() {
    assert_eq!(
        error_of(&link("interval = \"15m\"\nschedule = \"0 0 2 * * *\"")),
        "galbridge.toml: links[0].schedule: set either interval or schedule, not both"
    );
}

#[test]
fn empty_mesh() {
    let text = format!(
        "{TENANTS}\n[[meshes]]\nname = \"group\"\ntenants = []\n[meshes.target]\nkind = \"mail_contact\"\n"
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: meshes[0].tenants: a mesh needs at least two tenants; it has 0"
    );
}

#[test]
fn single_tenant_mesh_with_an_unknown_tenant() {
    let text = format!(
        "{TENANTS}\n[[meshes]]\nname = \"group\"\ntenants = [\"acm\"]\n[meshes.target]\nkind = \"mail_contact\"\n"
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: meshes[0].tenants: a mesh needs at least two tenants; it has 1\n\
         galbridge.toml: meshes[0].tenants[0]: no tenant named \"acm\" (did you mean \"acme\"?)"
    );
}

#[test]
fn anchor_attribute_out_of_range() {
    let text = link("").replace(
        "kind = \"mail_contact\"",
        "kind = \"mail_contact\"\nanchor_attribute = 16",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].target.anchor_attribute: must be between 1 and 15 (CustomAttribute1..15); got 16"
    );
}

#[test]
fn bad_regex_in_a_filter() {
    let text = link("").replace(
        "[links.target]",
        "[[links.source.filters]]\nattribute = \"department\"\nmatches = \"(Sales\"\n[links.target]",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].source.filters[0].matches: \"(Sales\" is not a valid regular expression: \
         error: unclosed group"
    );
}

#[test]
fn filter_on_an_unknown_attribute_with_two_tests() {
    let text = link("").replace(
        "[links.target]",
        "[[links.source.filters]]\nattribute = \"departement\"\nequals = \"Sales\"\nstarts_with = \"S\"\n[links.target]",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].source.filters[0].attribute: unknown source attribute \"departement\" \
         (did you mean \"department\"?)\n\
         galbridge.toml: links[0].source.filters[0]: set exactly one of equals, starts_with, matches"
    );
}

#[test]
fn unknown_template_variable() {
    let text = format!(
        "{}\n[links.mapping]\ndisplay_name = \"{{displayName}} ({{compnyName}})\"\n",
        link("")
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].mapping.display_name: unknown template variable {compnyName} (did you mean companyName?)"
    );
}

#[test]
fn key_vault_credential_without_a_key_vault() {
    let text = link("").replace(
        "[key_vault]\nurl = \"https://kv-galbridge.vault.azure.net/\"",
        "",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: tenants.acme.credential: names a Key Vault item but there is no [key_vault] section \
         (add one with its url, or set GALBRIDGE_KEY_VAULT_URL)"
    );
}

#[test]
fn invalid_link_name() {
    let text = link("").replace("name = \"acme-to-northern\"", "name = \"Acme to Northern\"");
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].name: \"Acme to Northern\" must be lowercase letters, digits, '-', '_' or '.', \
         starting with a letter or digit"
    );
}

#[test]
fn plain_http_endpoint_off_loopback() {
    let text = format!(
        "{}\n[tenants.northern.endpoints]\ngraph = \"http://graph.example.com/\"\n",
        link("")
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: tenants.northern.endpoints.graph: \"http://graph.example.com/\" must use https (http is \
         only accepted for loopback test doubles)"
    );
}

#[test]
fn hide_is_for_mail_contacts_only() {
    let text = link("").replace(
        "kind = \"mail_contact\"\ntenant = \"northern\"",
        "kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = { all = true }\non_delete = \"hide\"",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].target.on_delete: \"hide\" applies to mail contacts only; use \"delete\" or \"keep\""
    );
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    let text = "[service]\ndefault_interval = 15m\n";
    let error = error_of(text);
    assert!(
        error.starts_with("galbridge.toml: line 2, column 20: "),
        "{error}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = link("interval = \"15m\"\nschedule = \"0 0 2 * * *\"")
        .replace("tenant = \"northern\"", "tenant = \"nobody\"")
        .replace(
            "[key_vault]\nurl = \"https://kv-galbridge.vault.azure.net/\"",
            "",
        );
    let error = error_of(&text);
    assert_eq!(error.lines().count(), 3, "{error}");
    assert!(
        error
            .lines()
            .all(|line| line.starts_with("galbridge.toml: ")),
        "{error}"
    );
}

#[test]
fn missing_file() {
    let error = Config::load(Path::new("/nonexistent/galbridge.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("/nonexistent/galbridge.toml: cannot read: "),
        "{error}"
    );
}

#[test]
fn unknown_key_inside_a_target_kind() {
    let text = link("").replace(
        "kind = \"mail_contact\"",
        "kind = \"mail_contact\"\nanchor_atribute = 3",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].target: unknown field `anchor_atribute`, expected one of `tenant`, \
         `anchor_attribute`, `on_delete`, `adopt_existing`"
    );
}

#[test]
fn unknown_target_kind() {
    let text = link("").replace("kind = \"mail_contact\"", "kind = \"guest\"");
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].target.kind: unknown variant `guest`, expected one of `mail_contact`, \
         `personal_contacts`, `guest_user`"
    );
}

/// The base link as a `guest_user` link, with `extra` lines in its target.
fn guest(extra: &str) -> String {
    link("").replace(
        "kind = \"mail_contact\"",
        &format!("kind = \"guest_user\"\n{extra}"),
    )
}

#[test]
fn a_guest_user_link_with_every_option_is_valid() {
    let text = guest(
        "user_type = \"Guest\"\nshow_in_gal = false\nanchor_attribute = 3\non_delete = \"delete\"\n\
         adopt_existing = true\nmigrate_from_mail_contact = true\nredirect_url = \"https://portal.acme.com\"",
    );
    let config = Config::from_toml_str(&text, Path::new("galbridge.toml")).unwrap();
    assert_eq!(config.links()[0].target.kind_name(), "guest_user");
}

#[test]
fn guest_user_options_are_checked_by_key() {
    assert_eq!(
        error_of(&guest("anchor_attribute = 0")),
        "galbridge.toml: links[0].target.anchor_attribute: must be between 1 and 15 \
         (onPremisesExtensionAttributes.extensionAttribute1..15); got 0"
    );
    assert_eq!(
        error_of(&guest("redirect_url = \"myapps.microsoft.com\"")),
        "galbridge.toml: links[0].target.redirect_url: must be an https URL; got \"myapps.microsoft.com\""
    );
    assert_eq!(
        error_of(&guest("on_delete = \"hide\"")),
        // Inside the tagged target table serde reports the table, not the key (as for the other kinds).
        "galbridge.toml: links[0].target: unknown variant `hide`, expected one of `block_sign_in`, \
         `delete`, `keep`"
    );
    assert_eq!(
        error_of(&guest("user_type = \"member\"")),
        "galbridge.toml: links[0].target: unknown variant `member`, expected `Member` or `Guest`"
    );
    assert_eq!(
        error_of(&guest("").replace("tenant = \"northern\"", "tenant = \"acme\"")),
        "galbridge.toml: links[0].target.tenant: a guest_user link cannot write into its own source tenant \
         \"acme\" (its people are already in that GAL)"
    );
}

/// `link("")` with the `[links.source]` table given `line` too.
fn link_with_source_line(line: &str) -> String {
    link("").replace(
        "[links.source]\ntenant = \"acme\"",
        &format!("[links.source]\ntenant = \"acme\"\n{line}"),
    )
}

#[test]
fn table_state_with_managed_identity_but_no_endpoint() {
    let text = format!(
        "[state]\nkind = \"table\"\nauth = \"managed_identity\"\n{}",
        link("")
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: state.endpoint: required with auth = \"managed_identity\" (or set \
         GALBRIDGE_STATE_TABLE_ENDPOINT)"
    );
}

#[test]
fn invalid_table_name() {
    let text = format!(
        "[state]\nkind = \"table\"\ntable = \"gal-bridge\"\nendpoint = \"https://st.table.core.windows.net\"\n\
         auth = \"managed_identity\"\n{}",
        link("")
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: state.table: \"gal-bridge\" is not a valid table name (3-63 letters and digits, starting \
         with a letter)"
    );
}

#[test]
fn delete_percentage_above_100() {
    let text = format!("{}[links.safety]\nmax_delete_percent = 150\n", link(""));
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].safety.max_delete_percent: must be a percentage between 0 and 100; got 150"
    );
}

#[test]
fn zero_concurrency() {
    let text = format!("[service]\nmax_concurrency = 0\n{}", link(""));
    assert_eq!(
        error_of(&text),
        "galbridge.toml: service.max_concurrency: must be at least 1"
    );
}

#[test]
fn a_graph_limit_below_one_batch_or_above_graphs() {
    for value in [5, 200_000] {
        let text = format!("[service]\ngraph_requests_per_10s = {value}\n{}", link(""));
        assert!(
            error_of(&text).starts_with(&format!(
                "galbridge.toml: service.graph_requests_per_10s: must be between 20 (one $batch) and 130,000 \
                 (Graph's limit per app), not {value}"
            )),
            "{}",
            error_of(&text)
        );
    }
}

#[test]
fn zero_mailboxes_in_flight() {
    let text = format!("[service]\nmailboxes_in_flight = 0\n{}", link(""));
    assert_eq!(
        error_of(&text),
        "galbridge.toml: service.mailboxes_in_flight: must be at least 1"
    );
}

#[test]
fn zero_interval() {
    let text = format!("[service]\ndefault_interval = \"0s\"\n{}", link(""));
    assert_eq!(
        error_of(&text),
        "galbridge.toml: service.default_interval: \"0s\": a duration must be longer than zero"
    );
}

#[test]
fn mesh_listing_a_tenant_twice() {
    let text = format!(
        "{TENANTS}\n[[meshes]]\nname = \"group\"\ntenants = [\"acme\", \"northern\", \"acme\"]\n\
         [meshes.target]\nkind = \"mail_contact\"\n"
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: meshes[0].tenants[2]: \"acme\" is listed twice"
    );
}

#[test]
fn personal_contacts_with_an_empty_mailbox_list() {
    let text = link("").replace(
        "kind = \"mail_contact\"",
        "kind = \"personal_contacts\"\nmailboxes = { list = [] }",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].target.mailboxes: list is empty"
    );
}

#[test]
fn personal_contacts_with_shards_of_no_mailbox() {
    for (value, got) in [("0", "0"), ("5000", "5000")] {
        let text = link("").replace(
            "kind = \"mail_contact\"",
            &format!(
                "kind = \"personal_contacts\"\nmailboxes = {{ all = true }}\nmailboxes_per_shard = {value}"
            ),
        );
        assert_eq!(
            error_of(&text),
            format!(
                "galbridge.toml: links[0].target.mailboxes_per_shard: must be between 1 and 1000; got {got}"
            )
        );
    }
}

#[test]
fn override_with_a_bad_source_id() {
    let text = format!(
        "{}[[links.overrides]]\nsource_id = \"nope\"\nexclude = true\n",
        link("")
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].overrides[0].source_id: \"nope\" is not a GUID (expected \
         xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
    );
}

#[test]
fn group_scope_given_by_name_instead_of_object_id() {
    assert_eq!(
        error_of(&link_with_source_line("groups = [\"Sales\"]")),
        "galbridge.toml: links[0].source.groups[0]: \"Sales\" is not a GUID (expected \
         xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
    );
}

#[test]
fn include_domain_that_is_not_a_domain() {
    assert_eq!(
        error_of(&link_with_source_line(
            "include_domains = [\"not a domain\"]"
        )),
        "galbridge.toml: links[0].source.include_domains[0]: \"not a domain\" is not a domain name"
    );
}

#[test]
fn extra_ca_file_that_cannot_be_read() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("galbridge.toml");
    let write = |ca: &str| {
        std::fs::write(
            &path,
            format!("[service]\nextra_ca_file = {ca:?}\n{}", link("")),
        )
        .expect("the file is written");
    };
    let error_of_file = || match Config::load(&path) {
        Ok(_) => panic!("the configuration should be refused"),
        Err(error) => error.to_string(),
    };

    write("missing-ca.pem");
    assert_eq!(
        error_of_file(),
        format!(
            "{}: service.extra_ca_file: cannot read {:?}: No such file or directory (os error 2)",
            path.display(),
            dir.path().join("missing-ca.pem").display().to_string()
        ),
        "relative to the configuration's folder"
    );

    write(".");
    assert_eq!(
        error_of_file(),
        format!(
            "{}: service.extra_ca_file: {:?} is not a file",
            path.display(),
            dir.path().join(".").display().to_string()
        )
    );

    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n")
        .expect("the CA file is written");
    write("ca.pem");
    assert!(Config::load(&path).is_ok(), "a readable file is accepted");
}

#[test]
fn group_filters_on_a_person_attribute_or_without_include_groups() {
    let text = link("").replace(
        "[links.target]",
        "[[links.source.group_filters]]\nattribute = \"displayname\"\nequals = \"Sales\"\n[links.target]",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].source.group_filters: filters groups, but groups are not read: set \
         include_groups = true or remove group_filters\n\
         galbridge.toml: links[0].source.group_filters[0].attribute: \"displayname\" is not a group attribute \
         galbridge reads: use one of displayName, mail, groupTypes (did you mean \"displayName\"?)"
    );
    let text = link("").replace(
        "[links.target]",
        "include_groups = true\n[[links.source.group_filters]]\nattribute = \"department\"\nequals = \"Sales\"\n\
         [links.target]",
    );
    assert_eq!(
        error_of(&text),
        "galbridge.toml: links[0].source.group_filters[0].attribute: \"department\" is not a group attribute \
         galbridge reads: use one of displayName, mail, groupTypes"
    );
}
