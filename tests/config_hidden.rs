//! `[links.source] hidden` (issue 12): `exclude` by default, `include`, `graph`; the deprecated `include_hidden`; on
//! meshes too; and the exact messages of bad values.

use std::path::Path;

use galbridge::config::{Config, HiddenSource};

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

/// A link from acme to northern, with `source` lines added to `[links.source]`.
fn link(source: &str) -> String {
    format!(
        "{TENANTS}\n[[links]]\nname = \"acme-to-northern\"\n[links.source]\ntenant = \"acme\"\n{source}\n\
         [links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n"
    )
}

fn hidden_of(text: &str) -> Vec<HiddenSource> {
    Config::from_toml_str(text, Path::new("galbridge.toml"))
        .unwrap_or_else(|error| panic!("valid: {error}"))
        .links()
        .iter()
        .map(|link| link.scope.hidden)
        .collect()
}

fn error_of(text: &str) -> String {
    match Config::from_toml_str(text, Path::new("galbridge.toml")) {
        Ok(_) => panic!("this configuration should be refused:\n{text}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn hidden_people_are_excluded_by_default() {
    assert_eq!(hidden_of(&link("")), vec![HiddenSource::Exclude]);
    assert_eq!(
        hidden_of(&link("hidden = \"exclude\"")),
        vec![HiddenSource::Exclude]
    );
    assert_eq!(
        hidden_of(&link("hidden = \"include\"")),
        vec![HiddenSource::Include]
    );
    assert_eq!(
        hidden_of(&link("hidden = \"graph\"")),
        vec![HiddenSource::Graph]
    );
}

#[test]
fn the_deprecated_include_hidden_still_means_what_it_said() {
    assert_eq!(
        hidden_of(&link("include_hidden = true")),
        vec![HiddenSource::Include]
    );
    assert_eq!(
        hidden_of(&link("include_hidden = false")),
        vec![HiddenSource::Exclude]
    );
}

#[test]
fn include_hidden_next_to_hidden_is_refused() {
    assert_eq!(
        error_of(&link("hidden = \"exclude\"\ninclude_hidden = true")),
        "galbridge.toml: links[0].source.include_hidden: replaced by `hidden`; remove it (it says true, `hidden` \
         says \"exclude\")"
    );
}

#[test]
fn an_unknown_hidden_value_names_the_three_choices() {
    assert_eq!(
        error_of(&link("hidden = \"sometimes\"")),
        "galbridge.toml: links[0].source.hidden: unknown variant `sometimes`, expected one of `exclude`, `include`, \
         `graph`"
    );
}

#[test]
fn a_mesh_takes_hidden_for_every_tenant() {
    let mesh = format!(
        "{TENANTS}\n[[meshes]]\nname = \"partners\"\ntenants = [\"acme\", \"northern\"]\n\
         [meshes.source]\nhidden = \"include\"\n[meshes.target]\nkind = \"mail_contact\"\n"
    );
    assert_eq!(
        hidden_of(&mesh),
        vec![HiddenSource::Include, HiddenSource::Include]
    );
    let default = mesh.replace("hidden = \"include\"\n", "");
    assert_eq!(
        hidden_of(&default),
        vec![HiddenSource::Exclude, HiddenSource::Exclude]
    );
}
