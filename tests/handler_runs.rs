//! Runs through the real `galbridge serve` process and the host's protocol, against m365-sim over TLS with the
//! production connector (tokens from the login endpoint, Graph, Exchange `InvokeCommand`): `SyncHttp` runs a link
//! and reports what landed in the target tenant, `?dry_run=true` plans and writes nothing, a second concurrent run
//! of one link is refused with 409 naming the lease holder, `SyncTimer` runs the links that are due, and `Status`
//! shows the last runs. Expected figures come from the simulator's own data, never from the engine.

mod handler_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use handler_support::{
    HOST_NAME, ONE_LINK, Sim, TIMER_PAYLOAD, invoke, res, spawn_app, spawn_with_sim,
    status_payload, sync_payload,
};
use serde_json::{Value, json};

const LINK: &str = "acme-to-northern";

/// Checks the fields of a run report that differ on every run (id, start, duration, request counts) and removes
/// them; returns the start time.
fn take_volatile(report: &mut Value) -> chrono::DateTime<chrono::FixedOffset> {
    let object = report.as_object_mut().expect("a report object");
    let run_id = object.remove("run_id").expect("a run id");
    uuid::Uuid::parse_str(run_id.as_str().expect("a string")).expect("the run id is a UUID");
    let duration = object.remove("duration_ms").expect("a duration");
    assert!(duration.is_u64(), "{duration}");
    let requests = object.remove("requests").expect("request counts");
    if object["mode"] != "dry_run" {
        for service in ["graph", "exchange"] {
            assert!(
                requests[service].as_u64().is_some_and(|count| count > 0),
                "the run reached {service}: {requests}"
            );
        }
    }
    let started = object.remove("started_at").expect("a start time");
    chrono::DateTime::parse_from_rfc3339(started.as_str().expect("a string")).expect("RFC 3339")
}

fn counts(creates: usize) -> Value {
    json!({ "creates": creates, "updates": 0, "deletes": 0, "hides": 0, "adoptions": 0, "conflicts": 0,
            "unchanged": 0 })
}

/// A clean first run of `link` that read `read` users and created (or, dry, planned) `creates` contacts.
fn expected_first_run(link: &str, dry_run: bool, read: usize, creates: usize) -> Value {
    let (mode, outcome) = if dry_run {
        ("dry_run", "planned")
    } else {
        ("full", "succeeded")
    };
    json!({
        "link": link, "mode": mode, "outcome": outcome,
        "source_read": read, "source_changes": read,
        "planned": counts(creates),
        "applied": counts(if dry_run { 0 } else { creates }),
        "failures": [], "throttled_retries": 0, "quarantine": null,
        "summary": format!(
            "{link}: {mode} run {outcome}: read {read}, created {creates}, updated 0, deleted 0, hidden 0, \
             adopted 0, conflicts 0, unchanged 0"
        )
    })
}

/// The email addresses of contacts or users.
fn addresses(objects: &[Value], field: &str) -> BTreeSet<String> {
    objects
        .iter()
        .map(|object| object[field].as_str().expect("an address").to_lowercase())
        .collect()
}

fn status_of(port: u16) -> Value {
    let (status, envelope) = invoke(port, "Status", &status_payload());
    assert_eq!(status, 200);
    let (code, body) = res(&envelope);
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn sync_http_runs_the_link_and_reports_what_landed_in_the_target() {
    let sim = Sim::start(12, m365_sim::Knobs::default());
    sim.disable_one_user("acme");
    let read = sim.users("acme").len();
    let in_scope = sim.users_in_scope("acme");
    assert!(in_scope.len() < read, "one user is out of scope");
    let app = spawn_with_sim(&sim, ONE_LINK);

    let (status, envelope) = invoke(app.port, "SyncHttp", &sync_payload(LINK, json!({})));

    assert_eq!(status, 200);
    let (code, mut report) = res(&envelope);
    let stored = report.clone();
    let started = take_volatile(&mut report);
    let expected = expected_first_run(LINK, false, read, in_scope.len());
    assert_eq!((code, &report), (200, &expected));
    assert_eq!(
        envelope["Logs"],
        json!([expected["summary"]]),
        "the host's log carries the summary"
    );
    let mut rest = envelope.clone();
    rest["Outputs"]["res"]["body"].take();
    assert_eq!(
        rest,
        json!({
            "Outputs": { "res": {
                "statusCode": 200, "body": null, "headers": { "Content-Type": "application/json" }
            }},
            "Logs": [expected["summary"]],
            "ReturnValue": null
        })
    );

    // What the report claims is what landed: one anchored contact per in-scope user, at the user's address.
    let (anchored, unanchored) = sim.contacts("northern");
    assert_eq!(anchored.len(), in_scope.len());
    assert!(unanchored.is_empty());
    assert_eq!(
        addresses(&anchored, "ExternalEmailAddress")
            .into_iter()
            .map(|address| address.trim_start_matches("smtp:").to_owned())
            .collect::<BTreeSet<_>>(),
        addresses(&in_scope, "mail")
    );
    let anchors: BTreeSet<String> = anchored
        .iter()
        .map(|contact| {
            contact["CustomAttribute15"]
                .as_str()
                .expect("anchored")
                .to_owned()
        })
        .collect();
    let expected_anchors: BTreeSet<String> = in_scope
        .iter()
        .map(|user| sim.anchor_of("acme", user))
        .collect();
    assert_eq!(anchors, expected_anchors);

    // Status shows that run, the objects it manages and when the link is next due (interval 15 minutes).
    let mut status = status_of(app.port);
    let link = &mut status["links"][0];
    assert_eq!(link["last_run"], stored);
    let next_due = chrono::DateTime::parse_from_rfc3339(link["next_due"].as_str().expect("due"))
        .expect("RFC 3339");
    assert_eq!(next_due, started + chrono::Duration::minutes(15));
    // The run history: one run, so the last success is when it ended.
    let last_success =
        chrono::DateTime::parse_from_rfc3339(link["last_success"].as_str().expect("a success"))
            .expect("RFC 3339");
    let duration = stored["duration_ms"].as_i64().expect("a duration");
    assert_eq!(
        last_success,
        started + chrono::Duration::milliseconds(duration)
    );
    let changes = ["creates", "updates", "deletes", "hides", "adoptions"]
        .iter()
        .map(|kind| stored["applied"][kind].as_u64().expect("a count"))
        .sum::<u64>();
    assert_eq!(
        link["recent_runs"],
        json!([{
            "run_id": stored["run_id"], "started_at": stored["started_at"], "duration_ms": duration,
            "mode": "full", "outcome": "succeeded", "changes": changes, "failures": 0
        }])
    );
    for field in ["last_run", "next_due", "last_success", "recent_runs"] {
        link.as_object_mut().expect("an object").remove(field);
    }
    assert_eq!(
        status["links"],
        json!([{
            "link": LINK, "source_tenant": "acme", "target_tenant": "northern", "target_kind": "mail_contact",
            "managed_objects": in_scope.len(), "quarantine": null, "running": null, "mesh": null,
            "health": "ok", "failing_objects": [], "failing_objects_total": 0
        }])
    );
}

#[test]
fn dry_run_returns_the_plan_and_writes_nothing() {
    let sim = Sim::start(8, m365_sim::Knobs::default());
    let in_scope = sim.users_in_scope("acme");
    let app = spawn_with_sim(&sim, ONE_LINK);

    let (status, envelope) = invoke(
        app.port,
        "SyncHttp",
        &sync_payload(LINK, json!({ "dry_run": "true" })),
    );

    assert_eq!(status, 200);
    let (code, mut report) = res(&envelope);
    let mut plan = report
        .as_object_mut()
        .expect("a report")
        .remove("plan")
        .expect("a dry run carries its plan");
    take_volatile(&mut report);
    let expected = expected_first_run(LINK, true, sim.users("acme").len(), in_scope.len());
    assert_eq!((code, &report), (200, &expected));
    assert_eq!(envelope["Logs"], json!([expected["summary"]]));

    // The plan names every contact it would create, by anchor, and nothing else.
    let creates = plan["creates"].take();
    let planned: BTreeSet<String> = creates
        .as_array()
        .expect("creates")
        .iter()
        .map(|create| create["anchor"].as_str().expect("an anchor").to_owned())
        .collect();
    let expected_anchors: BTreeSet<String> = in_scope
        .iter()
        .map(|user| sim.anchor_of("acme", user))
        .collect();
    assert_eq!(planned, expected_anchors);
    for empty in [
        "updates",
        "removals",
        "adoptions",
        "conflicts",
        "held",
        "forget",
    ] {
        assert_eq!(plan[empty], json!([]), "{empty}");
    }
    assert_eq!((&plan["link"], &plan["full"]), (&json!(LINK), &json!(true)));

    // Nothing was written: no contact in the target, no run record, no managed object.
    let (anchored, unanchored) = sim.contacts("northern");
    assert_eq!((anchored.len(), unanchored.len()), (0, 0));
    let status = status_of(app.port);
    assert_eq!(status["links"][0]["last_run"], Value::Null);
    assert_eq!(status["links"][0]["managed_objects"], 0);
}

#[test]
fn a_second_concurrent_run_of_a_link_is_409_naming_the_holder() {
    // Slow Exchange down so the first run holds the lease long enough to be seen.
    let mut knobs = m365_sim::Knobs::default();
    knobs.latency.exchange = m365_sim::Latency {
        fixed_ms: 150,
        jitter_ms: 0,
    };
    let sim = Sim::start(10, knobs);
    let app = spawn_with_sim(&sim, ONE_LINK);
    let port = app.port;
    let first =
        std::thread::spawn(move || invoke(port, "SyncHttp", &sync_payload(LINK, json!({}))));

    // Status (through the protocol too) shows the holder while the first run is in flight.
    let started = Instant::now();
    let holder = loop {
        let status = status_of(app.port);
        if let Some(holder) = status["links"][0]["running"].as_str() {
            break holder.to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20) && !first.is_finished(),
            "the first run was never seen holding the lease"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (status, envelope) = invoke(app.port, "SyncHttp", &sync_payload(LINK, json!({})));
    let (first_status, first_envelope) = first.join().expect("the first run returns");

    assert_eq!(status, 200, "a handled outcome is 200 to the host");
    let (code, body) = res(&envelope);
    let until = body["until"].as_str().expect("until").to_owned();
    let until_utc = chrono::DateTime::parse_from_rfc3339(&until)
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc);
    let message =
        format!("link \"{LINK}\" is already running (lease held by {holder} until {until_utc})");
    assert_eq!(
        (code, &body),
        (
            409,
            &json!({ "error": message, "holder": holder, "until": until })
        )
    );
    assert_eq!(envelope["Logs"], json!([message]));

    // The holder is the first run: `{host}:{pid}:{run id}`.
    assert_eq!(first_status, 200);
    let (first_code, first_report) = res(&first_envelope);
    assert_eq!(first_code, 200);
    assert_eq!(first_report["outcome"], "succeeded");
    assert_eq!(
        holder,
        format!(
            "{HOST_NAME}:{}:{}",
            app.child.id(),
            first_report["run_id"].as_str().expect("a run id")
        )
    );
    // The refused run wrote nothing of its own: the contacts are the first run's.
    assert_eq!(
        sim.contacts("northern").0.len(),
        sim.users_in_scope("acme").len()
    );
}

#[test]
fn the_timer_runs_the_links_that_are_due_and_status_shows_them() {
    let sim = Sim::start(6, m365_sim::Knobs::default());
    let links = format!(
        "{ONE_LINK}[[links]]\nname = \"northern-to-acme\"\n[links.source]\ntenant = \"northern\"\n\
         [links.target]\nkind = \"mail_contact\"\ntenant = \"acme\"\n"
    );
    let app = spawn_with_sim(&sim, &links);
    let (status, envelope) = invoke(app.port, "SyncHttp", &sync_payload(LINK, json!({})));
    assert_eq!((status, res(&envelope).0), (200, 200));
    let northern_in_scope = sim.users_in_scope("northern").len();

    // acme-to-northern just ran (due again in 15 minutes); only northern-to-acme is due.
    let (status, envelope) = invoke(app.port, "SyncTimer", TIMER_PAYLOAD);

    assert_eq!(status, 200);
    let expected = expected_first_run(
        "northern-to-acme",
        false,
        sim.users("northern").len(),
        northern_in_scope,
    );
    assert_eq!(
        envelope,
        json!({ "Outputs": {}, "Logs": [expected["summary"]], "ReturnValue": null })
    );
    assert_eq!(sim.contacts("acme").0.len(), northern_in_scope);

    let mut status = status_of(app.port);
    let links = status["links"].as_array_mut().expect("links");
    assert_eq!(links.len(), 2);
    let timer_run = &mut links[1]["last_run"];
    take_volatile(timer_run);
    assert_eq!(*timer_run, expected);
    assert_eq!(links[1]["managed_objects"], northern_in_scope);
    assert_eq!(links[0]["last_run"]["outcome"], "succeeded");
    assert_eq!(
        links[0]["managed_objects"],
        sim.users_in_scope("acme").len()
    );

    // Nothing is due any more.
    let (_, envelope) = invoke(app.port, "SyncTimer", TIMER_PAYLOAD);
    assert_eq!(envelope["Logs"], json!(["no link is due"]));
}

#[test]
fn sigterm_lets_a_run_in_flight_finish_and_answer() {
    let mut knobs = m365_sim::Knobs::default();
    knobs.latency.exchange = m365_sim::Latency {
        fixed_ms: 100,
        jitter_ms: 0,
    };
    let sim = Sim::start(8, knobs);
    let mut app = spawn_with_sim(&sim, ONE_LINK);
    let port = app.port;
    let run = std::thread::spawn(move || invoke(port, "SyncHttp", &sync_payload(LINK, json!({}))));
    let started = Instant::now();
    while status_of(app.port)["links"][0]["running"].is_null() {
        assert!(
            started.elapsed() < Duration::from_secs(20) && !run.is_finished(),
            "the run was never seen in flight"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &app.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let (status, envelope) = run.join().expect("the run answers");
    let exit = app.child.wait().expect("galbridge exits");

    assert!(exit.success(), "a clean exit after the run: {exit:?}");
    assert_eq!(status, 200);
    let (code, report) = res(&envelope);
    assert_eq!((code, &report["outcome"]), (200, &json!("succeeded")));
    let in_scope = sim.users_in_scope("acme").len();
    assert_eq!(report["applied"]["creates"], in_scope);
    assert_eq!(
        sim.contacts("northern").0.len(),
        in_scope,
        "the run completed"
    );

    // A new process on the same state sees the run recorded and its lease released.
    let (toml, env) = sim.config(&app.state_dir(), ONE_LINK);
    let next = spawn_app(
        tempfile::tempdir().expect("a temporary directory"),
        &toml,
        &env,
    );
    let status = status_of(next.port);
    assert_eq!(status["links"][0]["last_run"], report);
    assert_eq!(status["links"][0]["running"], Value::Null);
    assert_eq!(status["links"][0]["managed_objects"], in_scope);
}

#[test]
fn sync_without_a_link_runs_every_link() {
    let sim = Sim::start(5, m365_sim::Knobs::default());
    let links = format!(
        "{ONE_LINK}[[links]]\nname = \"northern-to-acme\"\n[links.source]\ntenant = \"northern\"\n\
         [links.target]\nkind = \"mail_contact\"\ntenant = \"acme\"\n"
    );
    let app = spawn_with_sim(&sim, &links);

    let (status, envelope) = invoke(
        app.port,
        "SyncHttp",
        &handler_support::http_payload(
            "POST",
            "https://app.azurewebsites.net/api/sync",
            None,
            json!({}),
        ),
    );

    assert_eq!(status, 200);
    let (code, mut body) = res(&envelope);
    let mut expected = Vec::new();
    for (index, (source, target)) in [("acme", "northern"), ("northern", "acme")]
        .into_iter()
        .enumerate()
    {
        take_volatile(&mut body["reports"][index]);
        expected.push(expected_first_run(
            &format!("{source}-to-{target}"),
            false,
            sim.users(source).len(),
            sim.users_in_scope(source).len(),
        ));
        assert_eq!(
            sim.contacts(target).0.len(),
            sim.users_in_scope(source).len()
        );
    }
    assert_eq!(
        (code, &body),
        (200, &json!({ "reports": expected, "errors": [] }))
    );
    assert_eq!(
        envelope["Logs"],
        json!([expected[0]["summary"], expected[1]["summary"]])
    );
}

#[test]
fn logs_under_the_host_are_json_lines_with_the_invocation_id_and_no_secret() {
    let sim = Sim::start(4, m365_sim::Knobs::default());
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (toml, mut env) = sim.config(&dir.path().join("state"), ONE_LINK);
    let secrets: Vec<String> = env.iter().map(|(_, secret)| secret.clone()).collect();
    env.push(("FUNCTIONS_CUSTOMHANDLER_PORT".to_owned(), "0".to_owned()));
    env.push(("GALBRIDGE_LOG".to_owned(), "debug".to_owned()));
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).expect("a log file");
    let mut app =
        handler_support::spawn_app_logging_to(dir, &toml, &env, std::process::Stdio::from(log));

    let (_, envelope) = invoke(app.port, "SyncHttp", &sync_payload(LINK, json!({})));
    let summary = res(&envelope).1["summary"].clone();
    std::process::Command::new("kill")
        .args(["-TERM", &app.child.id().to_string()])
        .status()
        .expect("kill runs");
    app.child.wait().expect("galbridge exits");

    let text = std::fs::read_to_string(&log_path).expect("the log");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() > 3, "{text}");
    let summary_line = lines
        .iter()
        .find(|line| line["message"] == summary)
        .unwrap_or_else(|| panic!("the run's summary is logged: {text}"));
    assert_eq!(summary_line["level"], "INFO");
    assert_eq!(
        (
            &summary_line["span"]["invocation_id"],
            &summary_line["span"]["function"]
        ),
        (&json!("5d1c7a8e-test"), &json!("SyncHttp")),
        "{summary_line}"
    );
    for secret in &secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a client secret was logged"
        );
    }
    assert!(
        !text.to_lowercase().contains("bearer "),
        "a token was logged"
    );
}
