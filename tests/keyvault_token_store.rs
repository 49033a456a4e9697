//! A delegated sign-in's refresh token kept in Key Vault ([`KeyVaultTokenStore`]), through the shipped code against
//! m365-sim's Key Vault over TLS: the token provider's configured vault, read and written with a platform credential
//! through the official SDK. Nothing stored reads as "no token"; a save is read back; a second save rotates it (a new
//! version, the older one kept by the vault); another mailbox's secret is separate; a first write goes through the
//! challenge; no token in names, descriptions or a refused write's error.

use galbridge::m365::delegated::RefreshTokenStore;
use galbridge::m365::secret::Secret;
use galbridge::m365::vault_token_store::{KeyVaultTokenStore, refresh_token_secret_name};
use galbridge::m365::{
    HttpSettings, PlatformIdentity, RequestCounters, TokenProvider, build_http_client,
};

async fn provider_for(sim: &m365_sim::SimHandle) -> TokenProvider {
    let http = build_http_client(&HttpSettings {
        extra_ca_file: Some(sim.ca_pem_path().to_owned()),
        ..HttpSettings::default()
    })
    .expect("an HTTP client trusting the simulator's CA");
    let counters = RequestCounters::shared();
    // The platform identity (the managed identity in Azure) is played by acme's app, which the simulated vault
    // authorises like the managed identity.
    let acme = sim.tenant("acme").expect("tenant acme");
    let credential = azure_identity::ClientSecretCredential::new(
        &acme.tenant_id,
        acme.client_id.clone(),
        azure_core::credentials::Secret::new(acme.client_secret.clone()),
        Some(azure_identity::ClientSecretCredentialOptions {
            client_options: galbridge::m365::sdk::login_client_options(
                &http,
                &counters,
                sim.base_url(),
            ),
        }),
    )
    .expect("a client secret credential");
    TokenProvider::new(
        http,
        Vec::new(),
        Some(sim.base_url().clone()),
        PlatformIdentity::Custom(credential),
        counters,
    )
    .expect("a token provider with a vault")
}

#[tokio::test]
async fn a_refresh_token_round_trips_and_rotates_in_key_vault() {
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![m365_sim::TenantSeed::new("acme", 1)],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let tokens = provider_for(&sim).await;
    let store = KeyVaultTokenStore::in_configured_vault(
        tokens.clone(),
        "acme",
        "Staff.Export@acme.example",
    );
    let other =
        KeyVaultTokenStore::in_configured_vault(tokens.clone(), "acme", "other@acme.example");
    assert_eq!(
        store.secret_name(),
        refresh_token_secret_name("acme", "staff.export@acme.example")
    );

    assert!(
        store
            .load()
            .await
            .expect("a missing secret is no error")
            .is_none(),
        "nothing stored yet"
    );
    store
        .save(&Secret::new("refresh-token-one"))
        .await
        .expect("the first save");
    let read = store.load().await.expect("read back").expect("a token");
    assert_eq!(read.expose(), "refresh-token-one");

    store
        .save(&Secret::new("refresh-token-two"))
        .await
        .expect("the rotation");
    let read = store.load().await.expect("read back").expect("a token");
    assert_eq!(
        read.expose(),
        "refresh-token-two",
        "the latest version wins"
    );
    assert!(
        other.load().await.expect("another mailbox").is_none(),
        "another mailbox has its own secret"
    );

    // `galbridge login` on a fresh process writes before it ever read: the PUT goes through the 401 challenge.
    let fresh = KeyVaultTokenStore::in_configured_vault(
        provider_for(&sim).await,
        "acme",
        "other@acme.example",
    );
    fresh
        .save(&Secret::new("refresh-token-other"))
        .await
        .expect("a first write");
    let read = other.load().await.expect("read back").expect("a token");
    assert_eq!(read.expose(), "refresh-token-other");

    assert_eq!(
        sim.control().vault_secret_versions(store.secret_name()),
        ["refresh-token-one", "refresh-token-two"],
        "a rotation is a new version of the same secret"
    );
    let described = format!("{} {store:?}", store.describe());
    assert!(described.contains(store.secret_name()), "{described}");
    assert!(!described.contains("refresh-token"), "{described}");
}

#[tokio::test]
async fn a_refused_write_names_the_secret_and_never_the_value() {
    // The vault refuses the write (here: a name outside Key Vault's rule, answered 400 BadParameter and not retried):
    // the error says which vault and secret, and holds no token.
    let sim = m365_sim::start(m365_sim::SimConfig {
        tenants: vec![m365_sim::TenantSeed::new("acme", 1)],
        ..m365_sim::SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let vault = provider_for(&sim)
        .await
        .key_vault_client("acme")
        .await
        .expect("the configured vault");
    let error = vault
        .set(
            "not_a_vault_name",
            &Secret::new("refresh-token-never-shown"),
        )
        .await
        .expect_err("the write is refused");
    let message = format!("{error} {error:?}");
    assert!(
        message.contains("cannot write secret") && message.contains("not_a_vault_name"),
        "{message}"
    );
    assert!(
        message.contains("invalid name"),
        "the vault's reason: {message}"
    );
    assert!(!message.contains("refresh-token-never-shown"), "{message}");
    assert!(
        sim.control()
            .vault_secret_versions("not_a_vault_name")
            .is_empty(),
        "nothing was written"
    );
}
