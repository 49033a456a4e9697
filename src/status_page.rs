//! The status page: `GET /api/status` with `Accept: text/html`, and `galbridge status --html FILE`.
//!
//! One self-contained HTML document rendered from a [`StatusReport`]: no script at all, no external font,
//! stylesheet or image (a Content-Security-Policy in the page says so to the browser), an inline SVG chart per link,
//! and a layout that reads on a phone. Per link: health, freshness, the last run's counts, the last
//! [`RECENT_RUNS_SHOWN`] runs (duration and changes), the objects failing run after run, and for a quarantined link
//! what would be deleted and the exact command and URL that release it. Mesh links are grouped by mesh.
//!
//! Every value that comes from a directory or the configuration (display names are user-controlled) goes through
//! [`Html::text`], which escapes it; markup only comes from string literals ([`Html::raw`] takes `&'static str`).
//! The page holds nothing secret: the status report carries no credential, and the request (whose URL may carry
//! the function key) is never echoed.

use std::fmt::{Display, Write as _};

use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::report::{
    FailingObject, Health, LinkStatus, RECENT_RUNS_SHOWN, RunMode, RunOutcome, RunPoint,
    StatusReport,
};

/// The page's Content-Security-Policy (also sent as a header by the HTTP answer): nothing may load or run.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; \
                                           base-uri 'none'; form-action 'none'";

/// What a link name needs encoded in a URL path segment (unreserved characters stay as they are).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How many failing objects a link's card lists (the JSON has up to 50, and the total).
const FAILING_ROWS: usize = 20;

/// Escapes text for an HTML text node or a double- or single-quoted attribute value.
pub fn escape_into(text: &str, out: &mut String) {
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
}

/// The page being written: markup from literals only, every other value escaped.
struct Html(String);

impl Html {
    #[inline(never)]
    fn raw(&mut self, markup: &'static str) {
        self.0.push_str(markup);
    }

    /// One non-generic function for every value (the page is not hot; the binary's size matters more).
    #[inline(never)]
    fn text(&mut self, value: &dyn Display) {
        let _ = write!(Escaping(&mut self.0), "{value}");
    }
}

/// A coordinate with one decimal.
struct Fixed1(f64);

impl Display for Fixed1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}", self.0)
    }
}

/// Escapes whatever is formatted into it.
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        escape_into(text, self.0);
        Ok(())
    }
}

/// `html!(page; "<p>" {value} "</p>")`: literals are markup, `{expressions}` are escaped text.
macro_rules! html {
    (@part $page:expr, $markup:literal) => {
        $page.raw($markup)
    };
    (@part $page:expr, { $value:expr }) => {
        $page.text(&$value)
    };
    ($page:expr; $($part:tt)*) => {{
        $( html!(@part $page, $part); )*
    }};
}

const STYLE: &str = r#"
:root{--bg:#f4f5f7;--card:#fff;--ink:#1d2330;--muted:#5d6678;--line:#e1e4ea;--ok:#1e8e4f;--warn:#b86e00;
--bad:#c62a2f;--quar:#7a3fc1;--never:#7b8494;--bar:#3b6fd8;--dot:#e0592a;--code:#eef1f6;--quar-ink:#7a3fc1;
--bad-ink:#c62a2f}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--card:#1b2029;--ink:#e6e9ef;--muted:#9aa3b5;--line:#2c3340;
--code:#252b36;--bar:#6c95ec;--dot:#f08a5d;--quar-ink:#bb95f5;--bad-ink:#f27a7e}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
.page{max-width:1180px;margin:0 auto;padding:16px}
h1{font-size:22px;margin:0}
h2{font-size:17px;margin:22px 0 10px}
h3{font-size:16px;margin:0;overflow-wrap:anywhere}
h4{font-size:13px;margin:12px 0 6px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.top{display:flex;flex-wrap:wrap;align-items:baseline;justify-content:space-between;gap:6px 16px}
.meta{color:var(--muted);font-size:13px;margin:2px 0 0}
.summary{display:flex;flex-wrap:wrap;gap:8px;list-style:none;padding:0;margin:12px 0 0}
.summary li{background:var(--card);border:1px solid var(--line);border-radius:999px;padding:3px 12px;font-size:13px}
.summary b{font-size:15px;margin-right:4px}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:6px;vertical-align:1px}
.ok .dot,.dot.ok{background:var(--ok)}.failing .dot,.dot.failing{background:var(--bad)}
.quarantined .dot,.dot.quarantined{background:var(--quar)}.never_run .dot,.dot.never_run{background:var(--never)}
.banner{background:var(--card);border:1px solid var(--quar);border-left:6px solid var(--quar);border-radius:10px;
padding:12px 16px;margin:14px 0}
.banner h2{margin:0 0 6px;color:var(--quar-ink)}
.banner p{margin:6px 0}
.banner ul{margin:6px 0;padding-left:20px;max-height:260px;overflow:auto}
.release{display:grid;gap:6px;margin-top:8px}
.release div{display:flex;flex-wrap:wrap;gap:4px 10px;align-items:center}
.release span{color:var(--muted);font-size:13px;min-width:108px}
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);border-radius:5px;
padding:2px 6px;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
@media (max-width:420px){.cards{grid-template-columns:1fr}.page{padding:10px}}
.link-row{background:var(--card);border:1px solid var(--line);border-top:4px solid var(--never);border-radius:10px;
padding:12px 14px;min-width:0}
.link-row.ok{border-top-color:var(--ok)}.link-row.failing{border-top-color:var(--bad)}
.link-row.quarantined{border-top-color:var(--quar)}
.head{display:flex;justify-content:space-between;align-items:flex-start;gap:8px}
.badge{font-size:12px;font-weight:600;border-radius:999px;padding:2px 10px;white-space:nowrap;color:#fff;
background:var(--never)}
.ok .badge{background:var(--ok)}.failing .badge{background:var(--bad)}.quarantined .badge{background:var(--quar)}
.route{color:var(--muted);font-size:13px;margin:2px 0 8px;overflow-wrap:anywhere}
.running{font-size:13px;color:var(--bar);margin:0 0 6px}
.fresh{display:grid;grid-template-columns:repeat(3,1fr);gap:6px;margin:0}
.fresh div{background:var(--bg);border-radius:7px;padding:5px 7px;min-width:0}
.fresh dt{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.fresh dd{margin:0;font-size:13px;font-weight:600;overflow-wrap:break-word}
.fresh dd small{display:block;font-size:12px;font-weight:400;color:var(--muted)}
.stale{color:var(--bad-ink)}
.counts{display:flex;flex-wrap:wrap;gap:4px 14px;list-style:none;padding:0;margin:10px 0 4px;font-size:13px;
color:var(--muted)}
.counts b{color:var(--ink);font-size:14px;margin-right:3px}
.counts .bad b{color:var(--bad-ink)}
figure{margin:8px 0 0}
svg.chart{width:100%;height:auto;display:block}
.chart .grid{stroke:var(--line);stroke-width:1}
.chart rect.slot{fill:var(--line)}
.chart rect.succeeded{fill:var(--bar)}.chart rect.partially_failed{fill:var(--warn)}
.chart rect.failed{fill:var(--bad)}.chart rect.quarantined{fill:var(--quar)}.chart rect.planned{fill:var(--never)}
.chart polyline{fill:none;stroke:var(--dot);stroke-width:1.5}
.chart circle{fill:var(--dot)}
.chart text{fill:var(--muted);font-size:8px;font-family:inherit}
figcaption{font-size:12px;color:var(--muted);display:flex;flex-wrap:wrap;gap:2px 12px}
.key{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px;border-radius:2px}
.key.bar{background:var(--bar)}.key.line{background:var(--dot);height:3px;vertical-align:3px}
.key.warn{background:var(--warn)}.key.bad{background:var(--bad)}.key.quar{background:var(--quar)}
.empty{color:var(--muted);font-size:13px;margin:10px 0 0}
.failing-objects ul{list-style:none;margin:0;padding:0}
.failing-objects li{border-left:3px solid var(--bad);background:var(--bg);border-radius:0 7px 7px 0;padding:6px 9px;
margin:0 0 6px;font-size:13px}
.failing-objects .what{display:flex;justify-content:space-between;gap:8px}
.failing-objects .runs{color:var(--bad-ink);font-weight:600;white-space:nowrap}
.failing-objects .error{margin:2px 0 4px;overflow-wrap:anywhere}
.failing-objects code,.held code{font-size:11px;color:var(--muted);background:none;padding:0}
.held code{display:block}
.mailbox{color:var(--muted);font-size:12px}
.more{font-size:12px;color:var(--muted);margin:4px 0 0}
footer{color:var(--muted);font-size:12px;margin:26px 0 8px}
"#;

fn outcome_name(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::PartiallyFailed => "partially failed",
        RunOutcome::Quarantined => "quarantined",
        RunOutcome::Failed => "failed",
        RunOutcome::Planned => "planned",
    }
}

fn outcome_class(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Succeeded => "succeeded",
        RunOutcome::PartiallyFailed => "partially_failed",
        RunOutcome::Quarantined => "quarantined",
        RunOutcome::Failed => "failed",
        RunOutcome::Planned => "planned",
    }
}

fn mode_name(mode: RunMode) -> &'static str {
    match mode {
        RunMode::Incremental => "incremental",
        RunMode::Full => "full",
        RunMode::DryRun => "dry run",
    }
}

fn health_class(health: Health) -> &'static str {
    match health {
        Health::Ok => "ok",
        Health::Failing => "failing",
        Health::Quarantined => "quarantined",
        Health::NeverRun => "never_run",
    }
}

fn target_kind_name(kind: &str) -> &str {
    match kind {
        "mail_contact" => "mail contacts",
        "personal_contacts" => "phones (personal contacts)",
        other => other,
    }
}

/// `2.3 s`, `850 ms`, `4 min 10 s`.
fn duration_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// A span of time in the largest sensible unit: `40 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
fn span_text(span: chrono::Duration) -> String {
    let seconds = span.num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86_400 => format!("{} h {} min", seconds / 3600, (seconds % 3600) / 60),
        _ => format!("{} d {} h", seconds / 86_400, (seconds % 86_400) / 3600),
    }
}

fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    format!("{} ago", span_text(now - then))
}

fn stamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Links shown together: those of one mesh, or those outside any (`None`), with their index in the report.
type Group<'a> = (Option<&'a str>, Vec<(usize, &'a LinkStatus)>);

/// Renders the whole page for `status` as of `now`.
pub fn render(status: &StatusReport, now: DateTime<Utc>) -> String {
    let mut page = Html(String::with_capacity(
        16 * 1024 + status.links.len() * 6 * 1024,
    ));
    html!(page;
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"" {CONTENT_SECURITY_POLICY} "\">"
        "<meta name=\"referrer\" content=\"no-referrer\">"
        "<title>galbridge status</title><style>"
    );
    page.raw(STYLE);
    html!(page; "</style></head><body><div class=\"page\"><header class=\"top\"><div><h1>galbridge status</h1>"
        "<p class=\"meta\">" {status.links.len()} " link" {if status.links.len() == 1 { "" } else { "s" }}
        " · as of <time datetime=\"" {now.to_rfc3339()} "\">" {stamp(now)} "</time> · galbridge "
        {&status.version} "</p></div>");
    summary(&mut page, &status.links);
    page.raw("</header><main>");

    for (index, link) in status.links.iter().enumerate() {
        if link.quarantine.is_some() {
            quarantine_banner(&mut page, index, link);
        }
    }
    if status.links.is_empty() {
        page.raw("<p class=\"empty\">No link is configured.</p>");
    }
    // Links outside meshes first, then each mesh in the order it first appears.
    let mut groups: Vec<Group<'_>> = Vec::new();
    for (index, link) in status.links.iter().enumerate() {
        let mesh = link.mesh.as_deref();
        match groups.iter_mut().find(|(name, _)| *name == mesh) {
            Some((_, members)) => members.push((index, link)),
            None => groups.push((mesh, vec![(index, link)])),
        }
    }
    groups.sort_by_key(|(mesh, _)| mesh.is_some());
    for (mesh, members) in &groups {
        match mesh {
            Some(name) => html!(page; "<section class=\"group mesh\" data-mesh=\"" {name}
                "\"><h2>Mesh " {name} " <span class=\"meta\">(" {members.len()} " links)</span></h2>"),
            None => page.raw("<section class=\"group\"><h2>Links</h2>"),
        }
        page.raw("<div class=\"cards\">");
        for (index, link) in members {
            link_card(&mut page, *index, link, now);
        }
        page.raw("</div></section>");
    }
    html!(page; "</main><footer>Also as JSON: <code>GET /api/status</code> · <code>galbridge status --json</code>. "
        "Runs kept per link: the last " {crate::state::RUN_RECORDS_KEPT} ".</footer></div></body></html>\n");
    page.0
}

fn summary(page: &mut Html, links: &[LinkStatus]) {
    page.raw("<ul class=\"summary\">");
    for health in [
        Health::Ok,
        Health::Failing,
        Health::Quarantined,
        Health::NeverRun,
    ] {
        let count = links.iter().filter(|link| link.health == health).count();
        if count > 0 || health == Health::Ok {
            html!(page; "<li class=\"" {health_class(health)} "\"><span class=\"dot\"></span><b>" {count} "</b>"
                {health.name()} "</li>");
        }
    }
    page.raw("</ul>");
}

fn quarantine_banner(page: &mut Html, index: usize, link: &LinkStatus) {
    let Some(quarantine) = &link.quarantine else {
        return;
    };
    let name = &link.link;
    html!(page; "<section class=\"banner quarantine\" role=\"alert\" id=\"quarantine-" {index} "\" data-link=\""
        {name} "\"><h2>" {name} " is quarantined</h2><p><b>" {quarantine.held_deletes} " delete"
        {if quarantine.held_deletes == 1 { "" } else { "s" }} " held</b> since <time datetime=\""
        {quarantine.since.to_rfc3339()} "\">" {stamp(quarantine.since)} "</time>: " {&quarantine.threshold}
        ". Nothing is deleted until an operator releases it; creates and updates still apply.</p>");
    if !quarantine.held.is_empty() {
        let open = if quarantine.held.len() <= 12 {
            " open"
        } else {
            ""
        };
        html!(page; "<details class=\"held\"");
        page.raw(open);
        html!(page; "><summary>What would be deleted</summary><ul>");
        for held in &quarantine.held {
            page.raw("<li>");
            if held.display_name.is_empty() {
                html!(page; "<code>" {&held.anchor} "</code>");
            } else {
                html!(page; "<span class=\"name\">" {&held.display_name} "</span> <code>" {&held.anchor} "</code>");
            }
            page.raw("</li>");
        }
        page.raw("</ul>");
        let unnamed = quarantine
            .held_deletes
            .saturating_sub(quarantine.held.len() as u64);
        if unnamed > 0 {
            html!(page; "<p class=\"more\">… and " {unnamed} " more: <code>galbridge plan --link " {name}
                "</code> lists them all.</p>");
        }
        page.raw("</details>");
    }
    let url_link = utf8_percent_encode(name, PATH_SEGMENT).to_string();
    html!(page; "<div class=\"release\">"
        "<div><span>Review first</span><code class=\"review-cli\">galbridge plan --link " {name} "</code></div>"
        "<div><span>Release once</span><code class=\"release-cli\">galbridge sync --link " {name}
        " --allow-deletes</code></div>"
        "<div><span>or over HTTP</span><code class=\"release-http\">POST /api/sync/" {url_link}
        "?allow_deletes=true</code></div></div></section>");
}

fn link_card(page: &mut Html, index: usize, link: &LinkStatus, now: DateTime<Utc>) {
    let class = health_class(link.health);
    html!(page; "<article class=\"link-row " {class} "\" id=\"link-" {index} "\" data-link=\"" {&link.link}
        "\" data-health=\"" {class} "\"><div class=\"head\"><h3>" {&link.link} "</h3><span class=\"badge\">"
        {link.health.name()} "</span></div><p class=\"route\">" {&link.source_tenant} " → " {&link.target_tenant}
        " · " {target_kind_name(&link.target_kind)} " · " {link.managed_objects} " managed</p>");
    if let Some(holder) = &link.running {
        html!(page; "<p class=\"running\">Running now (" {holder} ")</p>");
    }

    // Freshness.
    page.raw("<dl class=\"fresh\"><div><dt>Last success</dt><dd");
    match link.last_success {
        Some(time) => {
            // Stale: the runs since have not succeeded, or the link is overdue.
            let overdue = link
                .next_due
                .is_some_and(|due| due < now - chrono::Duration::minutes(5));
            let since = link
                .last_run
                .as_ref()
                .is_some_and(|run| run.outcome != RunOutcome::Succeeded);
            if overdue || since {
                page.raw(" class=\"stale\"");
            }
            html!(page; " title=\"" {stamp(time)} "\">" {ago(now, time)} "</dd>");
        }
        None => page.raw(">never</dd>"),
    }
    page.raw("</div><div><dt>Next due</dt><dd");
    match link.next_due {
        Some(due) if due <= now => html!(page; " title=\"" {stamp(due)} "\">now</dd>"),
        Some(due) => html!(page; " title=\"" {stamp(due)} "\">in " {span_text(due - now)} "</dd>"),
        None => page.raw(">disabled</dd>"),
    }
    page.raw("</div><div><dt>Last run</dt><dd");
    match &link.last_run {
        Some(run) => {
            html!(page; " title=\"" {stamp(run.started_at)} " · " {mode_name(run.mode)} " · "
            {duration_text(run.duration_ms)} "\">" {outcome_name(run.outcome)} "<small>" {ago(now, run.started_at)}
            "</small></dd>")
        }
        None => page.raw(">none</dd>"),
    }
    page.raw("</div></dl>");

    // The last run's counts.
    if let Some(run) = &link.last_run {
        let counts = &run.applied;
        page.raw("<ul class=\"counts\">");
        for (count, label) in [
            (run.source_read, "read"),
            (counts.creates, "created"),
            (counts.updates, "updated"),
            (counts.deletes, "deleted"),
            (counts.hides, "hidden"),
            (counts.adoptions, "adopted"),
            (run.planned.conflicts, "conflicts"),
        ] {
            html!(page; "<li><b>" {count} "</b>" {label} "</li>");
        }
        let failed = run.failures.len();
        if failed > 0 {
            html!(page; "<li class=\"bad\"><b>" {failed} "</b>failed</li>");
        } else {
            html!(page; "<li><b>0</b>failed</li>");
        }
        html!(page; "<li>took <b>" {duration_text(run.duration_ms)} "</b></li></ul>");
    }

    if let Some(shards) = &link.shards {
        shard_line(page, shards);
    }
    chart(page, &link.recent_runs);
    failing_objects(page, link);
    if link.quarantine.is_some() {
        html!(page; "<p class=\"more\">Quarantined: see <a href=\"#quarantine-" {index}
            "\">what would be deleted and how to release it</a>.</p>");
    }
    page.raw("</article>");
}

/// A phones link's latest shard set: progress, and the shards that were poisoned or gave up.
fn shard_line(page: &mut Html, shards: &crate::report::ShardSetStatus) {
    html!(page; "<p class=\"more shards\">Shards of the last run: <b>" {shards.done} "/" {shards.shards}
        "</b> done, " {shards.mailboxes_done} "/" {shards.mailboxes} " mailboxes");
    if shards.in_flight > 0 {
        html!(page; ", " {shards.in_flight} " on the queue");
    }
    if shards.failed > 0 {
        html!(page; ", <span class=\"bad\">" {shards.failed} " failed</span> (the next run retries their mailboxes)");
    }
    for poisoned in &shards.poisoned {
        html!(page; "; <span class=\"bad\">shard " {poisoned.shard} " poisoned</span>");
        if let Some(error) = &poisoned.last_error {
            html!(page; ": " {error});
        }
    }
    page.raw("</p>");
}

/// The last runs as an inline SVG: a bar per run (its duration, coloured by outcome) and a line of dots (its
/// changes), oldest on the left, the newest always in the rightmost slot.
fn chart(page: &mut Html, runs: &[RunPoint]) {
    if runs.is_empty() {
        page.raw("<p class=\"empty\">No runs recorded yet.</p>");
        return;
    }
    const WIDTH: f64 = 300.0;
    const TOP: f64 = 10.0;
    const BASE: f64 = 74.0;
    let slots = RECENT_RUNS_SHOWN;
    let slot = WIDTH / slots as f64;
    let shown: Vec<&RunPoint> = runs.iter().take(slots).rev().collect();
    let first_slot = slots - shown.len();
    let max_ms = shown
        .iter()
        .map(|run| run.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let max_changes = shown
        .iter()
        .map(|run| run.changes)
        .max()
        .unwrap_or(0)
        .max(1);
    let height = BASE - TOP;
    let label = format!(
        "The last {} runs: longest {}, most changes {}",
        shown.len(),
        duration_text(max_ms),
        max_changes
    );
    html!(page; "<figure><svg class=\"chart\" viewBox=\"0 0 300 86\" role=\"img\" aria-label=\"" {&label}
        "\" xmlns=\"http://www.w3.org/2000/svg\">"
        "<line class=\"grid\" x1=\"0\" y1=\"" {BASE} "\" x2=\"300\" y2=\"" {BASE} "\"/>"
        "<line class=\"grid\" x1=\"0\" y1=\"" {TOP} "\" x2=\"300\" y2=\"" {TOP} "\" stroke-dasharray=\"2 3\"/>"
        "<text x=\"1\" y=\"7\">" {duration_text(max_ms)} "</text>"
        "<text x=\"299\" y=\"7\" text-anchor=\"end\">" {max_changes} " changes</text>");
    for empty in 0..first_slot {
        let x = empty as f64 * slot;
        html!(page; "<rect class=\"slot\" x=\"" {Fixed1(x + slot * 0.15)} "\" y=\"" {BASE - 1.5}
            "\" width=\"" {Fixed1(slot * 0.7)} "\" height=\"1.5\"/>");
    }
    let mut points = String::new();
    for (offset, run) in shown.iter().enumerate() {
        let x = (first_slot + offset) as f64 * slot;
        let bar = (run.duration_ms as f64 / max_ms as f64 * height).max(1.5);
        let cx = x + slot / 2.0;
        let cy = BASE - run.changes as f64 / max_changes as f64 * height;
        points.push_str(&format!("{cx:.1},{cy:.1} "));
        html!(page; "<g class=\"run\"><title>" {stamp(run.started_at)} " · " {outcome_name(run.outcome)} " · "
            {mode_name(run.mode)} " · " {duration_text(run.duration_ms)} " · " {run.changes} " changes · "
            {run.failures} " failures</title><rect class=\"" {outcome_class(run.outcome)} "\" x=\""
            {Fixed1(x + slot * 0.15)} "\" y=\"" {Fixed1(BASE - bar)} "\" width=\""
            {Fixed1(slot * 0.7)} "\" height=\"" {Fixed1(bar)} "\" rx=\"1\"/></g>");
    }
    if shown.len() > 1 {
        html!(page; "<polyline points=\"" {points.trim_end()} "\"/>");
    }
    for (offset, run) in shown.iter().enumerate() {
        let cx = (first_slot + offset) as f64 * slot + slot / 2.0;
        let cy = BASE - run.changes as f64 / max_changes as f64 * height;
        html!(page; "<circle cx=\"" {Fixed1(cx)} "\" cy=\"" {Fixed1(cy)} "\" r=\"1.8\"/>");
    }
    let oldest = shown.first().map(|run| stamp(run.started_at));
    let newest = shown.last().map(|run| stamp(run.started_at));
    html!(page; "<text x=\"1\" y=\"84\">" {oldest.unwrap_or_default()} "</text><text x=\"299\" y=\"84\" "
        "text-anchor=\"end\">" {newest.unwrap_or_default()} "</text></svg><figcaption>"
        "<span><i class=\"key bar\"></i>duration</span><span><i class=\"key line\"></i>changes</span>"
        "<span><i class=\"key warn\"></i>partly failed</span><span><i class=\"key bad\"></i>failed</span>"
        "<span><i class=\"key quar\"></i>quarantined</span>"
        "</figcaption></figure>");
}

fn failing_objects(page: &mut Html, link: &LinkStatus) {
    if link.failing_objects.is_empty() {
        return;
    }
    html!(page; "<section class=\"failing-objects\"><h4>Failing run after run (" {link.failing_objects_total}
        ")</h4><ul>");
    for object in link.failing_objects.iter().take(FAILING_ROWS) {
        failing_row(page, object);
    }
    page.raw("</ul>");
    let unlisted = link
        .failing_objects_total
        .saturating_sub(FAILING_ROWS.min(link.failing_objects.len()) as u64);
    if unlisted > 0 {
        html!(page; "<p class=\"more\">… and " {unlisted} " more: <code>galbridge status --json</code></p>");
    }
    page.raw("</section>");
}

fn failing_row(page: &mut Html, object: &FailingObject) {
    html!(page; "<li><div class=\"what\"><b>" {&object.kind} "</b><span class=\"runs\">" {object.runs}
        " runs in a row</span></div><p class=\"error\">" {&object.last_error} "</p><code>" {&object.anchor}
        "</code>");
    if let Some(mailbox) = &object.mailbox {
        html!(page; " <span class=\"mailbox\">in " {mailbox} "</span>");
    }
    page.raw("</li>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{FailingObject, HeldDelete, QuarantineInfo};

    const HOSTILE: &str =
        "<script>alert(1)</script><img src=x onerror=alert(2)> \"quoted\" & 'single'";

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn status() -> StatusReport {
        let now = at("2026-12-06T12:00:00Z");
        let runs: Vec<RunPoint> = (0..40)
            .map(|i| RunPoint {
                run_id: format!("r{i}"),
                started_at: now - chrono::Duration::minutes(15 * i),
                duration_ms: 800 + 97 * (i as u64 % 7),
                mode: RunMode::Incremental,
                outcome: if i % 9 == 4 {
                    RunOutcome::PartiallyFailed
                } else {
                    RunOutcome::Succeeded
                },
                changes: (i as u64 * 7) % 23,
                failures: 0,
            })
            .collect();
        StatusReport {
            version: "9.9.9".into(),
            links: vec![
                LinkStatus {
                    link: "solo".into(),
                    source_tenant: "acme".into(),
                    target_tenant: "northern".into(),
                    target_kind: "mail_contact".into(),
                    health: Health::Failing,
                    recent_runs: runs.clone(),
                    failing_objects: vec![FailingObject {
                        anchor: "galbridge:t:1".into(),
                        mailbox: None,
                        runs: 3,
                        last_error: HOSTILE.into(),
                        kind: "exchange_error".into(),
                    }],
                    failing_objects_total: 1,
                    ..LinkStatus::default()
                },
                LinkStatus {
                    link: "partners.a-to-b".into(),
                    mesh: Some("partners".into()),
                    health: Health::Quarantined,
                    quarantine: Some(QuarantineInfo {
                        since: now,
                        held_deletes: 4,
                        threshold: "3 removals exceed max_deletes = 2".into(),
                        release_hint: String::new(),
                        held: vec![HeldDelete {
                            anchor: "galbridge:t:2".into(),
                            display_name: HOSTILE.into(),
                        }],
                    }),
                    ..LinkStatus::default()
                },
                LinkStatus {
                    link: "partners.b-to-a".into(),
                    mesh: Some("partners".into()),
                    ..LinkStatus::default()
                },
            ],
        }
    }

    #[test]
    fn every_directory_value_is_escaped() {
        let page = render(&status(), at("2026-12-06T12:00:00Z"));
        assert!(!page.contains("<script"), "no script element at all");
        assert!(!page.contains("<img"), "no injected element");
        assert!(
            page.contains(
                "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt; &quot;quoted&quot; \
                 &amp; &#39;single&#39;"
            ),
            "{page}"
        );
    }

    #[test]
    fn a_phones_link_shows_its_shards_and_the_poisoned_ones_escaped() {
        let mut status = status();
        status.links[0].shards = Some(crate::report::ShardSetStatus {
            generation: "g".into(),
            shards: 3,
            done: 2,
            pending: 1,
            mailboxes: 25,
            mailboxes_done: 24,
            poisoned: vec![crate::report::PoisonedShard {
                shard: 1,
                message_id: "m".into(),
                inserted: None,
                last_error: Some("403 <ErrorAccessDenied>".into()),
            }],
            ..crate::report::ShardSetStatus::default()
        });
        let page = render(&status, at("2026-12-06T12:00:00Z"));
        assert!(
            page.contains("Shards of the last run: <b>2/3</b> done, 24/25 mailboxes"),
            "{page}"
        );
        assert!(
            page.contains("shard 1 poisoned</span>: 403 &lt;ErrorAccessDenied&gt;"),
            "{page}"
        );
    }

    #[test]
    fn the_page_is_self_contained() {
        let page = render(&status(), at("2026-12-06T12:00:00Z"));
        for external in ["http://", "https://", " src=\"", "@import", "url("] {
            let allowed = page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
            let found = page.matches(external).count();
            let found = if external == "http://" {
                found - allowed
            } else {
                found
            };
            assert_eq!(found, 0, "{external} in the page");
        }
        let mut policy = String::new();
        escape_into(CONTENT_SECURITY_POLICY, &mut policy);
        assert!(page.contains(&format!(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">"
        )));
    }

    #[test]
    fn quarantine_says_what_and_how_to_release_and_meshes_are_grouped() {
        let page = render(&status(), at("2026-12-06T12:00:00Z"));
        assert!(page.contains("galbridge sync --link partners.a-to-b --allow-deletes"));
        assert!(page.contains("POST /api/sync/partners.a-to-b?allow_deletes=true"));
        assert!(page.contains("… and 3 more"));
        assert_eq!(page.matches("<article class=\"link-row").count(), 3);
        assert_eq!(page.matches("data-mesh=\"partners\"").count(), 1);
        // The chart: 30 runs at most, one bar each.
        assert_eq!(page.matches("<g class=\"run\">").count(), RECENT_RUNS_SHOWN);
        assert!(page.find("<h2>Links</h2>") < page.find("Mesh partners"));
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span_text(chrono::Duration::seconds(42)), "42 s");
        assert_eq!(span_text(chrono::Duration::seconds(125)), "2 min");
        assert_eq!(span_text(chrono::Duration::minutes(185)), "3 h 5 min");
        assert_eq!(span_text(chrono::Duration::hours(52)), "2 d 4 h");
        assert_eq!(duration_text(850), "850 ms");
        assert_eq!(duration_text(2340), "2.3 s");
    }
}
