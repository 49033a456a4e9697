//! Exchange `InvokeCommand` variance a client must survive [§1]: both error shapes, not-found as 400 or 404, a
//! fixed-window rate limit and a concurrency limit per (app, tenant), and the replication delay before a new mail
//! contact shows in any Get-* cmdlet. Every one is a knob; the shapes and numbers are guesses (undocumented).

use std::time::Duration;

use m365_sim::{ExchangeErrorShape, ExchangeRateLimit, Knobs, Service};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{EXCHANGE, TestSim, spawn, spawn_with};

const NOT_FOUND: &str = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException";
const PROXY_EXISTS: &str = "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException";
const NAME_IN_USE: &str = "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException";

async fn new_contact(t: &TestSim, tok: &str, name: &str, address: &str) -> (StatusCode, Value) {
    t.exo(
        "acme",
        tok,
        "New-MailContact",
        json!({"Name": name, "ExternalEmailAddress": format!("SMTP:{address}")}),
    )
    .await
}

/// The exception type an error body names in the `details` shape: `ExNNNNNN|{type}|{text}`.
fn details_type(body: &Value) -> String {
    let m = body["error"]["details"][0]["message"]
        .as_str()
        .unwrap_or_default();
    let parts: Vec<&str> = m.splitn(3, '|').collect();
    assert_eq!(
        parts.len(),
        3,
        "details[0].message is Ex…|type|text: {body}"
    );
    assert!(parts[0].starts_with("Ex") && parts[0].len() == 8, "{body}");
    parts[1].to_string()
}

#[tokio::test]
async fn exchange_errors_in_the_message_shape_name_the_exception_in_message_and_innererror_type() {
    // [§1, guess] Default shape: `error.message` = `|{type}|{text}`, `innererror.type` = the exception, and
    // `details[0].message` carries it too.
    let t = spawn(&[("acme", 1)]).await;
    let tok = t.token("acme", EXCHANGE).await;
    let (status, body) = t
        .exo(
            "acme",
            &tok,
            "Get-MailContact",
            json!({"Identity": "nobody@x.example"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("|{NOT_FOUND}|")), "{body}");
    assert!(message.contains("couldn't be found on"), "{body}");
    assert_eq!(body["error"]["innererror"]["type"], NOT_FOUND);
    assert_eq!(details_type(&body), NOT_FOUND);

    assert_eq!(
        new_contact(&t, &tok, "Ada", "ada@x.example").await.0,
        StatusCode::OK
    );
    let (status, body) = new_contact(&t, &tok, "Ada Again", "ada@x.example").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["innererror"]["type"], PROXY_EXISTS);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(PROXY_EXISTS)
    );
}

#[tokio::test]
async fn exchange_errors_in_the_details_shape_name_the_exception_only_in_details_and_internalexception()
 {
    // [§1, guess] `details` shape: message and innererror.type are the generic ODataServiceException / "Error
    // executing cmdlet"; the real exception is only in details[0].message and innererror.internalexception.
    // Set over the control API by its serde name, as a test harness would.
    let t = spawn(&[("acme", 1)]).await;
    let resp = t
        .http
        .patch(t.url("/_control/knobs"))
        .json(&json!({"exchange_error_shape": "details"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        t.sim.control().knobs().exchange_error_shape,
        ExchangeErrorShape::Details
    );
    let tok = t.token("acme", EXCHANGE).await;

    let check = |body: &Value, exception: &str| {
        let e = &body["error"];
        assert_eq!(e["message"], "Error executing cmdlet", "{body}");
        assert_eq!(e["code"], "BadRequest", "{body}");
        assert_eq!(
            e["innererror"]["type"], "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
            "{body}"
        );
        assert_eq!(
            e["innererror"]["message"], "Error executing cmdlet",
            "{body}"
        );
        assert_eq!(
            e["innererror"]["internalexception"]["type"], exception,
            "{body}"
        );
        assert_eq!(details_type(body), exception);
        let text = e["innererror"]["internalexception"]["message"]
            .as_str()
            .unwrap();
        assert!(
            e["details"][0]["message"].as_str().unwrap().ends_with(text),
            "{body}"
        );
        // Nowhere else: a client reading only message/innererror.type sees the generic exception.
        let short = exception.rsplit('.').next().unwrap();
        let body_text = body.to_string();
        assert_eq!(
            body_text.matches(short).count(),
            2,
            "only details[0] and internalexception: {body}"
        );
    };

    let (status, body) = t
        .exo(
            "acme",
            &tok,
            "Get-MailContact",
            json!({"Identity": "nobody@x.example"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    check(&body, NOT_FOUND);
    let text = body["error"]["innererror"]["internalexception"]["message"]
        .as_str()
        .unwrap();
    assert!(text.starts_with("The operation couldn't be performed because object 'nobody@x.example' couldn't be found on '"));

    assert_eq!(
        new_contact(&t, &tok, "Ada", "ada@x.example").await.0,
        StatusCode::OK
    );
    let (status, body) = new_contact(&t, &tok, "Ada Again", "ada@x.example").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    check(&body, PROXY_EXISTS);
    let (status, body) = new_contact(&t, &tok, "Ada", "other@x.example").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    check(&body, NAME_IN_USE);

    // Throttling follows the shape too.
    t.sim.control().update_knobs(|k| {
        k.exchange_rate_limit = Some(ExchangeRateLimit {
            commands: 1,
            window_secs: 10,
        })
    });
    assert_eq!(
        t.exo("acme", &tok, "Get-MailContact", json!({})).await.0,
        StatusCode::OK
    );
    let (status, body) = t.exo("acme", &tok, "Get-MailContact", json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["message"], "Error executing cmdlet");
    assert_eq!(
        body["error"]["innererror"]["internalexception"]["message"],
        "Too many requests. Retry later."
    );
}

#[tokio::test]
async fn exchange_not_found_is_400_by_default_and_404_when_the_knob_says_so() {
    // [§1, guess] "Not-found may come as HTTP 400 or 404": knob `exchange_not_found_status`. Other client errors
    // stay 400.
    let t = spawn(&[("acme", 1)]).await;
    let tok = t.token("acme", EXCHANGE).await;
    for cmdlet in [
        "Get-MailContact",
        "Get-Contact",
        "Get-Recipient",
        "Remove-MailContact",
    ] {
        let (status, _) = t
            .exo("acme", &tok, cmdlet, json!({"Identity": "ghost@x.example"}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{cmdlet}");
    }
    t.sim
        .control()
        .update_knobs(|k| k.exchange_not_found_status = 404);
    for cmdlet in [
        "Get-MailContact",
        "Get-Contact",
        "Get-Recipient",
        "Remove-MailContact",
    ] {
        let (status, body) = t
            .exo("acme", &tok, cmdlet, json!({"Identity": "ghost@x.example"}))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{cmdlet}");
        assert_eq!(body["error"]["innererror"]["type"], NOT_FOUND);
    }
    let (status, _) = t
        .exo(
            "acme",
            &tok,
            "Set-MailContact",
            json!({"Identity": "ghost", "CustomAttribute1": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = t
        .exo("acme", &tok, "Get-MailContact", json!({"Colour": "blue"}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a binding error is not a not-found"
    );
}

async fn get(t: &TestSim, tok: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    t.exo_with("acme", tok, "Get-MailContact", json!({}), &[])
        .await
}

#[tokio::test]
async fn exchange_rate_limit_serves_n_per_fixed_window_and_refuses_the_rest_with_the_rest_of_the_window()
 {
    // [§1, guess] Fixed windows per (app, tenant): N served, then 429 with Retry-After = the rest of the window,
    // refused again inside it (refusals do not start a window), served again once it has passed.
    let knobs = Knobs {
        exchange_rate_limit: Some(ExchangeRateLimit {
            commands: 3,
            window_secs: 10,
        }),
        ..Knobs::default()
    };
    let t = spawn_with(&[("acme", 1), ("northern", 1)], knobs).await;
    let tok = t.token("acme", EXCHANGE).await;
    // Retry-After is the rest of the window in whole seconds rounded up: (10 s - advanced - real time spent).
    // Real time spent is measured here (a little more than the simulator saw), so a slow machine still passes.
    let started = std::time::Instant::now();
    let rest = |h: &reqwest::header::HeaderMap, advanced_secs: u64| {
        let got: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        let spent_ms = u64::try_from(started.elapsed().as_millis()).unwrap();
        let left_ms = (10 - advanced_secs) * 1000;
        let lowest = left_ms.saturating_sub(spent_ms).div_ceil(1000).max(1);
        assert!(
            (lowest..=10 - advanced_secs).contains(&got),
            "Retry-After {got}, expected the rest of the window ({lowest}..={})",
            10 - advanced_secs
        );
        got
    };
    for _ in 0..3 {
        assert_eq!(get(&t, &tok).await.0, StatusCode::OK);
    }
    let (status, headers, body) = get(&t, &tok).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    rest(&headers, 0); // the whole window is left
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Too many requests. Retry later."),
        "{body}"
    );
    assert!(
        body["error"]["innererror"]["type"]
            .as_str()
            .unwrap()
            .contains("Throttling"),
        "{body}"
    );

    // Another tenant (and so another (app, tenant) pair) has its own window.
    let other = t.token("northern", EXCHANGE).await;
    assert_eq!(
        t.exo("northern", &other, "Get-MailContact", json!({}))
            .await
            .0,
        StatusCode::OK
    );

    t.sim.control().advance_clock(Duration::from_secs(4));
    let (status, headers, _) = get(&t, &tok).await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "still inside the window"
    );
    rest(&headers, 4);
    let (status, headers, _) = get(&t, &tok).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    rest(&headers, 4); // refusals do not start a new window

    t.sim.control().advance_clock(Duration::from_secs(6));
    for _ in 0..3 {
        assert_eq!(get(&t, &tok).await.0, StatusCode::OK, "a new window");
    }
    let (status, headers, _) = get(&t, &tok).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let got: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((9..=10).contains(&got), "a fresh window: {got}");
    let c = t.sim.control();
    assert_eq!(c.count(Service::Exchange, "Get-MailContact", Some(429)), 4);
    assert_eq!(c.count(Service::Exchange, "Get-MailContact", Some(200)), 7);
}

#[tokio::test]
async fn exchange_concurrency_limit_refuses_requests_beyond_n_in_flight_per_tenant() {
    // [guess] More concurrent InvokeCommand requests per (app, tenant) than the knob: 429 + Retry-After
    // (`retry_after_secs`). Each request takes 1.5 s (latency knob) and holds its slot meanwhile.
    let mut knobs = Knobs {
        exchange_concurrency_per_tenant: 2,
        retry_after_secs: 3,
        ..Knobs::default()
    };
    knobs.latency.exchange.fixed_ms = 1500;
    let t = spawn_with(&[("acme", 1), ("northern", 1)], knobs).await;
    let tok = t.token("acme", EXCHANGE).await;
    let other = t.token("northern", EXCHANGE).await;
    let mut calls: Vec<_> = (0..5)
        .map(|_| t.exo_with("acme", &tok, "Get-MailContact", json!({}), &[]))
        .collect();
    calls.push(t.exo_with("northern", &other, "Get-MailContact", json!({}), &[]));
    let results = futures::future::join_all(calls).await;
    let acme: Vec<_> = results[..5]
        .iter()
        .map(|(s, h, _)| (*s, h.get("retry-after").cloned()))
        .collect();
    let served = acme.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused: Vec<_> = acme
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(served, 2, "{acme:?}");
    assert_eq!(refused.len(), 3, "{acme:?}");
    for (_, h) in refused {
        assert_eq!(h.as_ref().unwrap().to_str().unwrap(), "3");
    }
    assert_eq!(
        results[5].0,
        StatusCode::OK,
        "another tenant has its own slots"
    );
    // Once the slots are free, requests are served again.
    for _ in 0..2 {
        assert_eq!(
            t.exo("acme", &tok, "Get-MailContact", json!({})).await.0,
            StatusCode::OK
        );
    }
}

/// Every way a client looks a contact up: (what, found, body).
async fn lookups(t: &TestSim, tok: &str, id: &str) -> Vec<(String, bool, Value)> {
    let mut found = Vec::new();
    for cmdlet in ["Get-MailContact", "Get-Contact", "Get-Recipient"] {
        for i in ["ada@northern.example", "Ada (Northern)", id] {
            let (status, body) = t.exo("acme", tok, cmdlet, json!({"Identity": i})).await;
            found.push((format!("{cmdlet} {i}"), status == StatusCode::OK, body));
        }
    }
    for (cmdlet, filter) in [
        ("Get-MailContact", "CustomAttribute15 -eq 'galbridge:n:ada'"),
        (
            "Get-MailContact",
            "ExternalEmailAddress -eq 'SMTP:ada@northern.example'",
        ),
        (
            "Get-Recipient",
            "PrimarySmtpAddress -eq 'ada@northern.example'",
        ),
    ] {
        let (status, body) = t.exo("acme", tok, cmdlet, json!({"Filter": filter})).await;
        assert_eq!(status, StatusCode::OK);
        let hit = !body["value"].as_array().expect("value").is_empty();
        found.push((format!("{cmdlet} -Filter {filter}"), hit, body));
    }
    for cmdlet in ["Get-MailContact", "Get-Contact", "Get-Recipient"] {
        let (status, body) = t
            .exo("acme", tok, cmdlet, json!({"ResultSize": "Unlimited"}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let hit = body["value"]
            .as_array()
            .expect("value")
            .iter()
            .any(|v| v["Name"] == "Ada (Northern)");
        found.push((format!("{cmdlet} (list)"), hit, body));
    }
    found
}

#[tokio::test]
async fn exchange_replication_delay_hides_a_new_contact_from_every_get_while_its_address_and_name_already_conflict()
 {
    // [guess] Replication: for `exchange_replication_delay_ms` after New-MailContact, no Get-* finds the contact
    // (by address, name or id; by filter; in lists), yet New-MailContact with its address or name fails and
    // Set-*/Remove-* by its id work. Afterwards every Get-* finds it.
    let knobs = Knobs {
        exchange_replication_delay_ms: 20_000,
        ..Knobs::default()
    };
    let t = spawn_with(&[("acme", 1)], knobs).await;
    let tok = t.token("acme", EXCHANGE).await;
    let (status, body) = new_contact(&t, &tok, "Ada (Northern)", "ada@northern.example").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["value"][0]["ExternalDirectoryObjectId"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = t
        .exo(
            "acme",
            &tok,
            "Set-MailContact",
            json!({"Identity": id, "CustomAttribute15": "galbridge:n:ada"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "Set-* by id works during the delay");

    for (what, hit, body) in lookups(&t, &tok, &id).await {
        assert!(!hit, "{what} must not see the contact yet: {body}");
        if what.contains(" -Filter ") || what.contains("(list)") {
            continue;
        }
        assert_eq!(body["error"]["innererror"]["type"], NOT_FOUND, "{what}");
    }
    let (status, body) = new_contact(&t, &tok, "Ada Twice", "ada@northern.example").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["innererror"]["type"], PROXY_EXISTS,
        "the address is taken already"
    );
    let (status, body) = new_contact(&t, &tok, "Ada (Northern)", "ada2@northern.example").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["innererror"]["type"], NAME_IN_USE,
        "the name is taken already"
    );

    // Remove-* by id works during the delay too.
    let (_, body) = new_contact(&t, &tok, "Brief", "brief@northern.example").await;
    let brief = body["value"][0]["ExternalDirectoryObjectId"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = t
        .exo(
            "acme",
            &tok,
            "Remove-MailContact",
            json!({"Identity": brief, "Confirm": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    t.sim.control().advance_clock(Duration::from_millis(20_001));
    for (what, hit, body) in lookups(&t, &tok, &id).await {
        assert!(hit, "{what} sees the contact after the delay: {body}");
    }
    let names: Vec<Value> = t
        .sim
        .control()
        .mail_contacts("acme")
        .unwrap()
        .iter()
        .map(|c| c["Name"].clone())
        .collect();
    assert_eq!(names, [json!("Ada (Northern)")]);
}
