//! Change notifications through the real `galbridge serve` process (issue 19): m365-sim plays Graph (subscriptions,
//! the validation handshake, notifications with `clientState`, lifecycle events, expiry) and delivers to a stand-in
//! of the Functions host (`handler_support/host.rs`), which invokes the anonymous `Notify` function as the host
//! would. No test invokes the timer after the setup tick that creates the subscription: what lands in the target
//! comes from the notification, the debounce and the serving process's own pass.

mod handler_support;

use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use handler_support::host::{self, FakeHost};
use handler_support::{
    Sim, TIMER_PAYLOAD, TestApp, http_payload, invoke, res, spawn_app_logging_to, status_payload,
    sync_payload,
};
use serde_json::{Value, json};

const LINK: &str = "acme-to-northern";

/// One link from acme to northern, due only once a day: the timer never runs it during a test.
const DAILY_LINK: &str = "[[links]]\nname = \"acme-to-northern\"\ninterval = \"1d\"\n[links.source]\n\
                          tenant = \"acme\"\n[links.target]\nkind = \"mail_contact\"\ntenant = \"northern\"\n";

/// The simulator, the host stand-in and `galbridge serve` with notifications on (`extra` keys added to them), its
/// log (JSON lines) going to a file.
struct World {
    sim: Sim,
    host: FakeHost,
    app: TestApp,
    log: std::path::PathBuf,
}

fn world(extra: &str) -> World {
    let sim = Sim::start(6, m365_sim::Knobs::default());
    let handler_port = Arc::new(AtomicUsize::new(0));
    let host = host::start("Notify", Arc::clone(&handler_port));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (toml, env) = sim.config(&dir.path().join("state"), DAILY_LINK);
    let toml = toml.replacen(
        "[service]\n",
        &format!(
            "[service]\nnotifications = {{ public_url = {:?}{extra} }}\n",
            host.notify_url()
        ),
        1,
    );
    let log = dir.path().join("serve.log");
    let log_file = std::fs::File::create(&log).expect("a log file");
    let mut env = env;
    env.push(("GALBRIDGE_LOG".to_owned(), "info".to_owned()));
    env.push(("FUNCTIONS_CUSTOMHANDLER_PORT".to_owned(), "0".to_owned()));
    let app = spawn_app_logging_to(dir, &toml, &env, Stdio::from(log_file));
    handler_port.store(usize::from(app.port), Ordering::SeqCst);
    World {
        sim,
        host,
        app,
        log,
    }
}

impl World {
    fn status(&self) -> Value {
        let (code, body) = res(&invoke(self.app.port, "Status", &status_payload()).1);
        assert_eq!(code, 200, "{body}");
        body["links"][0].clone()
    }

    fn runs(&self) -> Vec<Value> {
        self.status()["recent_runs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The first sync (all of acme into northern), then one timer tick, which creates the subscription (the link
    /// is not due: it just ran). Returns the subscription as the simulator holds it.
    fn synced_and_subscribed(&self) -> Value {
        let (code, report) =
            res(&invoke(self.app.port, "SyncHttp", &sync_payload(LINK, json!({}))).1);
        assert_eq!(
            (code, report["outcome"].as_str()),
            (200, Some("succeeded")),
            "{report}"
        );
        let (status, envelope) = invoke(self.app.port, "SyncTimer", TIMER_PAYLOAD);
        assert_eq!(status, 200);
        let logs = envelope["Logs"].to_string();
        assert!(
            logs.contains("subscription to /users of acme created until"),
            "{logs}"
        );
        assert!(
            !logs.contains("no link is due") || logs.contains("created"),
            "{logs}"
        );
        let subscriptions = self.subscriptions();
        assert_eq!(subscriptions.len(), 1, "{subscriptions:?}");
        subscriptions[0].clone()
    }

    fn subscriptions(&self) -> Vec<Value> {
        self.sim
            .handle
            .control()
            .subscriptions("acme")
            .expect("acme is seeded")
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        std::fs::File::open(&self.log)
            .and_then(|mut file| file.read_to_string(&mut text))
            .expect("the log is readable");
        text
    }

    /// A notification POST as the host passes it to `Notify`.
    fn notify(&self, body: &Value) -> (u64, Value) {
        let payload = json!({
            "Data": { "req": {
                "Url": "https://app.azurewebsites.net/api/notify", "Method": "POST", "Query": {},
                "Headers": { "Content-Type": ["application/json"] }, "Params": {},
                "Body": body.to_string(), "Identities": []
            }},
            "Metadata": {}
        })
        .to_string();
        let (status, envelope) = invoke(self.app.port, "Notify", &payload);
        assert_eq!(status, 200, "{envelope}");
        let out = &envelope["Outputs"]["res"];
        (out["statusCode"].as_u64().expect("a status"), out.clone())
    }
}

/// Waits up to `limit` for `done`, checking every 200 ms.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The contact in northern whose anchor is `anchor`.
fn contact(sim: &Sim, anchor: &str) -> Option<Value> {
    sim.contacts("northern")
        .0
        .into_iter()
        .find(|contact| contact["CustomAttribute15"] == anchor)
}

#[test]
fn validation_handshake_echoes_the_decoded_token_as_plain_text() {
    let world = world(", debounce = \"2s\"");
    let token = "Validation: Testing client application reachability for subscription Request-Id: 8c4f&x=1 +%";

    let payload = http_payload(
        "POST",
        "https://app.azurewebsites.net/api/notify",
        None,
        json!({ "validationToken": token }),
    );
    let (status, envelope) = invoke(world.app.port, "Notify", &payload);

    assert_eq!(status, 200);
    let out = &envelope["Outputs"]["res"];
    assert_eq!(out["statusCode"], 200, "{envelope}");
    assert_eq!(out["body"], token, "the token comes back unchanged");
    assert_eq!(out["headers"]["Content-Type"], "text/plain; charset=utf-8");

    // The simulator's own handshake (its token has spaces and colons, URL-encoded in the query) goes through the
    // host stand-in: creating the subscription succeeds only if the echo was right.
    let subscription = world.synced_and_subscribed();
    assert_eq!(subscription["notificationUrl"], world.host.notify_url());
    assert_eq!(subscription["resource"], "/users");
    assert_eq!(subscription["changeType"], "updated,deleted");

    let (status, envelope) = invoke(
        world.app.port,
        "Notify",
        &http_payload(
            "GET",
            "https://app.azurewebsites.net/api/notify",
            None,
            json!({}),
        ),
    );
    assert_eq!(
        (status, envelope["Outputs"]["res"]["statusCode"].as_u64()),
        (200, Some(405))
    );
}

#[test]
fn a_changed_user_reaches_the_target_through_the_notification_alone() {
    let world = world(", debounce = \"2s\"");
    world.synced_and_subscribed();
    let runs_before = world.runs().len();
    let user = world.sim.users_in_scope("acme").remove(0);
    let anchor = world.sim.anchor_of("acme", &user);
    assert_ne!(
        contact(&world.sim, &anchor).expect("synced")["DisplayName"],
        "Ada Notified"
    );

    world
        .sim
        .handle
        .control()
        .update_user(
            "acme",
            user["id"].as_str().expect("an id"),
            json!({ "displayName": "Ada Notified" }),
        )
        .expect("the user changes");

    wait_for(Duration::from_secs(60), "the new name in northern", || {
        contact(&world.sim, &anchor).is_some_and(|contact| contact["DisplayName"] == "Ada Notified")
    });
    // The contact lands before the run records itself.
    wait_for(Duration::from_secs(10), "the run record", || {
        world.runs().len() > runs_before
    });
    let runs = world.runs();
    assert_eq!(runs.len(), runs_before + 1, "one run: {runs:?}");
    assert_eq!(runs[0]["mode"], "incremental");
    assert_eq!(runs[0]["outcome"], "succeeded");
    assert!(
        world.host.forwarded.load(Ordering::SeqCst) >= 2,
        "handshake and notification"
    );
}

#[test]
fn a_forged_client_state_is_refused_logged_without_secrets_and_runs_nothing() {
    let world = world(", debounce = \"1s\"");
    let subscription = world.synced_and_subscribed();
    let real_secret = subscription["clientState"]
        .as_str()
        .expect("a clientState")
        .to_owned();
    let runs_before = world.runs().len();
    let forged_secret = "forged-client-state-0123456789";

    let (wrong_state, _) = world.notify(&json!({ "value": [{
        "subscriptionId": subscription["id"], "clientState": forged_secret, "changeType": "updated",
        "resource": "Users/x", "tenantId": "t" }]}));
    let (unknown_subscription, _) = world.notify(&json!({ "value": [{
        "subscriptionId": "00000000-0000-0000-0000-000000000000", "clientState": real_secret,
        "changeType": "updated", "resource": "Users/x" }]}));
    let (no_state, _) =
        world.notify(&json!({ "value": [{ "subscriptionId": subscription["id"] }]}));
    let (not_json, _) = world.notify(&json!("{not a collection"));

    assert_eq!(
        (wrong_state, unknown_subscription, no_state),
        (403, 403, 403)
    );
    assert_eq!(not_json, 400);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(world.runs().len(), runs_before, "nothing ran");
    let log = world.log_text();
    assert!(
        log.contains("clientState does not match"),
        "the refusal is logged"
    );
    assert!(
        log.contains(subscription["id"].as_str().expect("an id")),
        "with the subscription id"
    );
    assert!(!log.contains(forged_secret), "never the secret given");
    assert!(!log.contains(&real_secret), "never the secret kept");

    // The real secret is accepted: the link runs after the debounce.
    let (accepted, out) = world.notify(&json!({ "value": [{
        "subscriptionId": subscription["id"], "clientState": real_secret, "changeType": "updated",
        "resource": "Users/x" }]}));
    assert_eq!(accepted, 202, "{out}");
    wait_for(Duration::from_secs(30), "the notified run", || {
        world.runs().len() == runs_before + 1
    });
}

#[test]
fn a_missed_lifecycle_notification_runs_a_full_read() {
    let world = world(", debounce = \"1s\"");
    let subscription = world.synced_and_subscribed();
    let runs_before = world.runs().len();

    world
        .sim
        .handle
        .control()
        .lifecycle_event(
            "acme",
            subscription["id"].as_str().expect("an id"),
            "missed",
        )
        .expect("the event is sent");

    wait_for(Duration::from_secs(60), "the full run", || {
        world.runs().len() == runs_before + 1
    });
    let runs = world.runs();
    assert_eq!(runs[0]["mode"], "full", "{runs:?}");
    assert_eq!(runs[0]["outcome"], "succeeded");
}

#[test]
fn subscriptions_are_renewed_before_they_expire_and_replaced_after() {
    let world = world(", debounce = \"1s\", subscription_lifetime = \"20s\"");
    let first = world.synced_and_subscribed();
    let expiry = |subscription: &Value| {
        chrono::DateTime::parse_from_rfc3339(
            subscription["expirationDateTime"].as_str().expect("a time"),
        )
        .expect("RFC 3339")
    };
    let tick = || {
        let (status, envelope) = invoke(world.app.port, "SyncTimer", TIMER_PAYLOAD);
        assert_eq!(status, 200);
        envelope["Logs"].to_string()
    };

    // More than half its life left: left alone.
    let logs = tick();
    assert!(
        !logs.contains("renewed") && !logs.contains("created"),
        "{logs}"
    );
    assert_eq!(world.subscriptions(), vec![first.clone()]);

    // Less than half left: renewed, same subscription, later expiry.
    std::thread::sleep(Duration::from_secs(11));
    let logs = tick();
    assert!(
        logs.contains("subscription to /users of acme renewed until"),
        "{logs}"
    );
    let renewed = world.subscriptions();
    assert_eq!(renewed.len(), 1);
    assert_eq!(renewed[0]["id"], first["id"]);
    assert!(
        expiry(&renewed[0]) > expiry(&first),
        "{renewed:?} after {first}"
    );

    // reauthorizationRequired renews at once, without the timer (a second later, for a later expiry: Graph's
    // times are whole seconds).
    std::thread::sleep(Duration::from_millis(1_100));
    world
        .sim
        .handle
        .control()
        .lifecycle_event(
            "acme",
            first["id"].as_str().expect("an id"),
            "reauthorizationRequired",
        )
        .expect("the event is sent");
    wait_for(Duration::from_secs(20), "the renewal", || {
        world
            .subscriptions()
            .first()
            .is_some_and(|now| expiry(now) > expiry(&renewed[0]))
    });

    // Left to expire, it is gone from Graph; the next tick makes a new one.
    wait_for(Duration::from_secs(30), "the expiry", || {
        world.subscriptions().is_empty()
    });
    let logs = tick();
    assert!(
        logs.contains("subscription to /users of acme created until"),
        "{logs}"
    );
    let replaced = world.subscriptions();
    assert_eq!(replaced.len(), 1);
    assert_ne!(replaced[0]["id"], first["id"]);
}

#[test]
fn a_storm_of_a_thousand_notifications_is_one_run() {
    // The default debounce (20 s).
    let world = world("");
    world.synced_and_subscribed();
    let runs_before = world.runs().len();
    let user = world.sim.users_in_scope("acme").remove(0);
    let id = user["id"].as_str().expect("an id");
    let anchor = world.sim.anchor_of("acme", &user);
    let forwarded_before = world.host.forwarded.load(Ordering::SeqCst);
    let control = world.sim.handle.control();
    let started = Instant::now();

    for n in 0..1_000 {
        control
            .update_user("acme", id, json!({ "jobTitle": format!("Storm {n}") }))
            .expect("the user changes");
    }
    wait_for(Duration::from_secs(60), "1,000 deliveries", || {
        world.host.forwarded.load(Ordering::SeqCst) >= forwarded_before + 1_000
    });
    let delivered_in = started.elapsed();

    wait_for(
        Duration::from_secs(90),
        "the last title in northern",
        || contact(&world.sim, &anchor).is_some_and(|contact| contact["Title"] == "Storm 999"),
    );
    // Long enough for a second debounce to have run anything left.
    std::thread::sleep(Duration::from_secs(23));
    let runs = world.runs();
    assert!(
        delivered_in < Duration::from_secs(20),
        "the storm must fit in one debounce for this test to mean anything ({delivered_in:?})"
    );
    assert_eq!(
        runs.len(),
        runs_before + 1,
        "one run for the storm: {runs:?}"
    );
}
