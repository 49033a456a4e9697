//! The status page in a real browser: the real `galbridge serve` process, spoken to with the Functions host's
//! envelopes, syncs a mesh of two tenants on m365-sim (one person's display name is hostile markup, an address
//! conflict in each direction fails run after run, and three leavers quarantine one direction), then answers
//! `GET /api/status` with `Accept: text/html`. Headless Chromium (Debian's `chromium` package, installed by
//! `.ci/test`) loads that page; its DOM is checked (a card per link, the quarantine banner with the release
//! command and URL, the charts, the hostile name as text and nowhere as markup), and screenshots are kept under
//! `target/test-artifacts/` (`status.png` desktop, `status-phone.png` phone width).
//!
//! Without Chromium the test says so and passes, except under `CI=true`, where a missing browser is a failure.

mod handler_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use handler_support::{Sim, TestApp, galbridge_command, invoke, res, spawn_with_sim, sync_payload};
use serde_json::{Value, json};

const FORWARD: &str = "partners.acme-to-northern";
const BACKWARD: &str = "partners.northern-to-acme";
const PHONES: &str = "northern-phones";

/// Markup in a display name: must show as text, never become an element or run.
const HOSTILE: &str = "<img src=x onerror=alert(1)><script>alert(2)</script> Bobby \"Tables\" & Co";

/// What only the caller's request carries; none of it may reach the page.
const FUNCTION_KEY: &str = "fnkey-SECRET-2f9c41d7";
const QUERY_CODE: &str = "code-SECRET-8e1b77a0";

/// Incremental runs of each mesh link between its first full run and the last two.
const INCREMENTAL_RUNS: usize = 8;

const CHROME_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,\
                             image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";

fn links(sim: &Sim) -> String {
    let mailbox = sim.users("northern")[0]["userPrincipalName"]
        .as_str()
        .expect("a UPN")
        .to_owned();
    format!(
        "[[links]]\nname = \"{PHONES}\"\nschedule = \"0 0 5 * * *\"\n[links.source]\ntenant = \"northern\"\n\
         [links.target]\nkind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ list = [\"{mailbox}\"] }}\n\
         [[meshes]]\nname = \"partners\"\ntenants = [\"acme\", \"northern\"]\ninterval = \"15m\"\n\
         [meshes.target]\nkind = \"mail_contact\"\n"
    )
}

fn sync(app: &TestApp, link: &str, query: Value) -> Value {
    let (host_status, envelope) = invoke(app.port, "SyncHttp", &sync_payload(link, query));
    assert_eq!(host_status, 200);
    let (code, report) = res(&envelope);
    assert_eq!(code, 200, "{report}");
    report
}

fn status_envelope(app: &TestApp, accept: &str) -> Value {
    let payload = json!({
        "Data": { "req": {
            "Url": format!("https://app.azurewebsites.net/api/status?code={QUERY_CODE}"),
            "Method": "GET",
            "Query": { "code": QUERY_CODE },
            "Headers": { "Accept": [accept], "x-functions-key": [FUNCTION_KEY], "User-Agent": ["Mozilla/5.0"] },
            "Params": {}, "Body": null, "Identities": []
        }},
        "Metadata": { "sys": { "MethodName": "Status", "UtcNow": "2026-12-06T10:00:00Z" } }
    })
    .to_string();
    let (host_status, envelope) = invoke(app.port, "Status", &payload);
    assert_eq!(host_status, 200);
    envelope
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("the artifacts directory");
    dir
}

/// Debian's `chromium`, or whatever `GALBRIDGE_CHROMIUM` names.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("GALBRIDGE_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Runs headless Chromium on `page` with `args`; returns its stdout. Bounded: a hung browser fails the test.
fn run_chromium(browser: &Path, profile: &Path, args: &[String], page: &Path) -> String {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("{} does not start: {error}", browser.display()));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).expect("chromium's output");
        text
    });
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("chromium's status") {
            assert!(status.success(), "chromium {args:?} exited with {status}");
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {args:?} did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("the reader thread")
}

#[test]
fn the_status_page_served_by_the_handler_renders_in_chromium() {
    let browser = chromium();
    if browser.is_none() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI needs Chromium for the status page test (.ci/test installs Debian's chromium package)"
        );
        eprintln!(
            "SKIPPED: no chromium on PATH (apt-get install chromium, or set GALBRIDGE_CHROMIUM)"
        );
        return;
    }

    // Acme: 12 people, one with a hostile display name; a contact made by hand in each tenant holds the address
    // of a person of the other (a conflict on every full run).
    let sim = Sim::start(12, m365_sim::Knobs::default());
    let acme = sim.users_in_scope("acme");
    let northern = sim.users_in_scope("northern");
    let hostile = &acme[0];
    sim.handle
        .control()
        .update_user(
            "acme",
            hostile["id"].as_str().expect("an id"),
            json!({ "displayName": HOSTILE }),
        )
        .expect("the display name is changed");
    let twin = &acme[4];
    sim.handle
        .control()
        .create_user_made_mail_contact(
            "northern",
            "Hand Made Twin",
            twin["mail"].as_str().expect("a mail"),
        )
        .expect("the twin is created");
    sim.handle
        .control()
        .create_user_made_mail_contact(
            "acme",
            "Old Partner Contact",
            northern[1]["mail"].as_str().expect("a mail"),
        )
        .expect("the other twin is created");
    let app = spawn_with_sim(&sim, &links(&sim));

    // acme → northern: a first full run, quiet incremental runs, then three people leave (one of them the hostile
    // name): more than the threshold, so the link is quarantined; two more full runs keep meeting the conflict.
    let first = sync(&app, FORWARD, json!({ "full": "true" }));
    assert_eq!(first["outcome"], "succeeded", "{first}");
    let twin_anchor = sim.anchor_of("acme", twin);
    assert!(
        first["failures"]
            .as_array()
            .expect("failures")
            .iter()
            .any(|failure| failure["anchor"] == twin_anchor.as_str()
                && failure["kind"] == "conflict_address"),
        "{first}"
    );
    // Incremental runs with a few changes each (a chart with some shape).
    let movers = &acme[5..];
    for round in 0..INCREMENTAL_RUNS {
        for user in movers.iter().take(round % movers.len() + 1) {
            sim.handle
                .control()
                .update_user(
                    "acme",
                    user["id"].as_str().expect("an id"),
                    json!({ "department": format!("Field Sales {round}") }),
                )
                .expect("the department is changed");
        }
        assert_eq!(sync(&app, FORWARD, json!({}))["outcome"], "succeeded");
    }
    for leaver in &acme[..3] {
        sim.handle
            .control()
            .delete_user("acme", leaver["id"].as_str().expect("an id"), true)
            .expect("the user is deleted");
    }
    for _ in 0..2 {
        let run = sync(&app, FORWARD, json!({ "full": "true" }));
        assert_eq!(run["outcome"], "quarantined", "{run}");
    }

    // northern → acme: full, incremental runs, then two full runs meeting its conflict: failing.
    assert_eq!(
        sync(&app, BACKWARD, json!({ "full": "true" }))["outcome"],
        "succeeded"
    );
    for round in 0..INCREMENTAL_RUNS {
        for user in northern.iter().take(round % 3) {
            sim.handle
                .control()
                .update_user(
                    "northern",
                    user["id"].as_str().expect("an id"),
                    json!({ "jobTitle": format!("Engineer {round}") }),
                )
                .expect("the title is changed");
        }
        assert_eq!(sync(&app, BACKWARD, json!({}))["outcome"], "succeeded");
    }
    for _ in 0..2 {
        assert_eq!(
            sync(&app, BACKWARD, json!({ "full": "true" }))["outcome"],
            "succeeded"
        );
    }

    // The JSON (an API client's Accept) has the new fields.
    let (code, status) = res(&status_envelope(&app, "application/json"));
    assert_eq!(code, 200);
    let link = |name: &str| -> Value {
        status["links"]
            .as_array()
            .expect("links")
            .iter()
            .find(|link| link["link"] == name)
            .unwrap_or_else(|| panic!("{name} in {status}"))
            .clone()
    };
    let forward = link(FORWARD);
    assert_eq!(forward["health"], "quarantined");
    assert_eq!(forward["mesh"], "partners");
    assert_eq!(
        forward["recent_runs"].as_array().map(Vec::len),
        Some(INCREMENTAL_RUNS + 3)
    );
    assert_eq!(forward["quarantine"]["held_deletes"], 3);
    let held: Vec<&str> = forward["quarantine"]["held"]
        .as_array()
        .expect("held deletes")
        .iter()
        .filter_map(|held| held["display_name"].as_str())
        .collect();
    assert!(held.iter().any(|name| name.contains(HOSTILE)), "{held:?}");
    assert_eq!(forward["failing_objects"].as_array().map(Vec::len), Some(1));
    let failing = &forward["failing_objects"][0];
    assert_eq!(
        (&failing["anchor"], &failing["runs"], &failing["kind"]),
        (&json!(twin_anchor), &json!(2), &json!("conflict_address")),
        "the two quarantined full runs met the conflict (the incremental runs in between did not read it)"
    );
    assert!(
        failing["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    let backward = link(BACKWARD);
    assert_eq!(backward["health"], "failing");
    assert_eq!(backward["failing_objects"][0]["runs"], 2);
    assert!(backward["last_success"].is_string());
    let phones = link(PHONES);
    assert_eq!(phones["health"], "never_run");
    assert_eq!(phones["recent_runs"], json!([]));

    // The page (a browser's Accept).
    let envelope = status_envelope(&app, CHROME_ACCEPT);
    let output = &envelope["Outputs"]["res"];
    assert_eq!(output["statusCode"], 200);
    assert_eq!(
        output["headers"]["Content-Type"],
        "text/html; charset=utf-8"
    );
    assert!(
        output["headers"]["Content-Security-Policy"]
            .as_str()
            .is_some_and(|csp| csp.starts_with("default-src 'none'")),
        "{output}"
    );
    let html = output["body"].as_str().expect("an HTML body").to_owned();
    for secret in [
        FUNCTION_KEY,
        QUERY_CODE,
        "SECRET",
        "deltatoken",
        "client_secret",
    ] {
        assert!(!html.contains(secret), "{secret} is in the page");
    }
    for (_, value) in sim.config(Path::new("/unused"), "").1 {
        assert!(!html.contains(&value), "a client secret is in the page");
    }

    let dir = artifacts_dir();
    let page = dir.join("status.html");
    std::fs::write(&page, &html).expect("the page is written");
    let browser = browser.expect("checked above");
    let profile = tempfile::tempdir().expect("a browser profile directory");

    let dom = run_chromium(&browser, profile.path(), &["--dump-dom".to_owned()], &page);
    assert!(dom.contains("<title>galbridge status</title>"), "{dom}");
    // A card per link, grouped: the phones link on its own, the mesh's two links together.
    assert_eq!(dom.matches("<article class=\"link-row").count(), 3, "{dom}");
    for (name, health) in [
        (FORWARD, "quarantined"),
        (BACKWARD, "failing"),
        (PHONES, "never_run"),
    ] {
        assert!(
            dom.contains(&format!("data-link=\"{name}\" data-health=\"{health}\"")),
            "{name} is {health}"
        );
    }
    let mesh = dom.find("data-mesh=\"partners\"").expect("the mesh group");
    assert!(dom.find(&format!("data-link=\"{PHONES}\" data-health")) < Some(mesh));
    assert!(dom[mesh..].contains(&format!("data-link=\"{FORWARD}\" data-health")));
    assert!(dom[mesh..].contains(&format!("data-link=\"{BACKWARD}\" data-health")));
    // The quarantine banner: what would be deleted and the exact release command and URL.
    let banner_start = dom
        .find("<section class=\"banner quarantine\" role=\"alert\"")
        .expect("a quarantine banner");
    let banner =
        &dom[banner_start..banner_start + dom[banner_start..].find("</section>").expect("its end")];
    assert!(banner.contains(&format!("data-link=\"{FORWARD}\"")));
    assert!(banner.contains("3 deletes held"));
    assert!(banner.contains(&format!(
        "<code class=\"release-cli\">galbridge sync --link {FORWARD} --allow-deletes</code>"
    )));
    assert!(banner.contains(&format!(
        "<code class=\"release-http\">POST /api/sync/{FORWARD}?allow_deletes=true</code>"
    )));
    assert_eq!(banner.matches("<li>").count(), 3, "the three held deletes");
    // The hostile name is text in the banner, and no element came of it anywhere.
    assert!(
        banner.contains(
            "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt; Bobby \"Tables\" &amp; Co"
        ),
        "{banner}"
    );
    assert!(!dom.contains("<script"), "no script element");
    assert!(!dom.contains("<img"), "no image element");
    assert!(!dom.contains("onerror=\""), "no event handler attribute");
    // The charts: one per link that ran, a bar per run.
    assert_eq!(dom.matches("<svg class=\"chart\"").count(), 2);
    assert_eq!(
        dom.matches("<g class=\"run\">").count(),
        2 * (INCREMENTAL_RUNS + 3)
    );
    // Failing objects, with their last error.
    assert!(dom.contains(&format!("<code>{twin_anchor}</code>")));
    assert_eq!(
        dom.matches("<section class=\"failing-objects\">").count(),
        2
    );

    // The CLI over the same state: the table names the failing objects, `--html FILE` writes the same page.
    let config = app.dir.path().join("galbridge.toml");
    let config = config.to_str().expect("a UTF-8 path");
    let secrets = sim.config(Path::new("/unused"), "").1;
    let table = galbridge_command()
        .args(["--config", config, "status"])
        .envs(secrets.iter().map(|(name, value)| (name, value)))
        .output()
        .expect("galbridge status runs");
    assert!(table.status.success(), "{table:?}");
    let table = String::from_utf8(table.stdout).expect("UTF-8");
    assert!(
        table.contains(&format!(
            "  {FORWARD}: failing 2 runs in a row: {twin_anchor}: conflict_address: "
        )),
        "{table}"
    );
    assert!(
        table.contains(&format!("  {FORWARD}: quarantined since ")),
        "{table}"
    );
    let cli_page = dir.join("status-cli.html");
    let _ = std::fs::remove_file(&cli_page);
    let written = galbridge_command()
        .args(["--config", config, "status", "--html"])
        .arg(&cli_page)
        .envs(secrets.iter().map(|(name, value)| (name, value)))
        .output()
        .expect("galbridge status --html runs");
    assert!(written.status.success(), "{written:?}");
    assert!(written.stdout.is_empty(), "the page goes to the file only");
    let cli_html = std::fs::read_to_string(&cli_page).expect("the page is written");
    let without_times = |page: &str| -> String {
        // Relative times and the moment of rendering differ between the two; the structure does not.
        page.split('<')
            .filter(|tag| {
                !tag.starts_with("time") && !tag.starts_with("dd") && !tag.starts_with("small")
            })
            .map(|tag| tag.split('>').next().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join("<")
    };
    assert_eq!(without_times(&cli_html), without_times(&html));

    // Screenshots, for a person to look at: a desktop window and a phone's width.
    for (file, size) in [
        ("status.png", "1280,1500"),
        ("status-phone.png", "390,2400"),
    ] {
        let shot = dir.join(file);
        let _ = std::fs::remove_file(&shot);
        run_chromium(
            &browser,
            profile.path(),
            &[
                format!("--screenshot={}", shot.display()),
                format!("--window-size={size}"),
            ],
            &page,
        );
        let bytes = std::fs::read(&shot).unwrap_or_else(|error| panic!("{file}: {error}"));
        assert!(bytes.starts_with(b"\x89PNG"), "{file} is a PNG");
        assert!(bytes.len() > 20_000, "{file} shows something");
        eprintln!("screenshot: {}", shot.display());
    }
}
