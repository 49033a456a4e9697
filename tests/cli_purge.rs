//! `galbridge purge --link NAME` as an operator runs it, against m365-sim through the production connector: without
//! `--yes` it only lists what would go; with `--yes` it deletes the contacts galbridge created for the link (those
//! carrying its anchor) and forgets the link's state, and leaves every contact it did not create alone.

#[path = "handler_support/mod.rs"]
mod handler_support;

use std::process::Output;

use handler_support::{ONE_LINK, Sim};
use serde_json::{Value, json};

const LINK: &str = "acme-to-northern";

struct Cli {
    config: std::path::PathBuf,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn new(sim: &Sim) -> Cli {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (toml, env) = sim.config(&dir.path().join("state"), ONE_LINK);
        let config = dir.path().join("galbridge.toml");
        std::fs::write(&config, toml).expect("the config is written");
        Cli {
            config,
            env,
            _dir: dir,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = handler_support::galbridge_command();
        command.arg("--config").arg(&self.config).args(args);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command.output().expect("galbridge runs")
    }

    /// Runs with `--json`, expects exit code `code`, returns the JSON printed.
    fn json(&self, args: &[&str], code: i32) -> Value {
        let output = self.run(args);
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
            panic!(
                "{args:?} printed no JSON ({error}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }
}

/// Display names of contacts.
fn names(contacts: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = contacts
        .iter()
        .map(|contact| contact["DisplayName"].as_str().expect("a name").to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn purge_lists_without_yes_and_removes_only_what_galbridge_created_with_it() {
    let sim = Sim::start(8, m365_sim::Knobs::default());
    sim.handle
        .control()
        .create_user_made_mail_contact("northern", "Plumber (made by hand)", "plumber@example.net")
        .expect("a hand-made contact");
    let cli = Cli::new(&sim);
    let in_scope = sim.users_in_scope("acme").len();
    let synced = cli.json(&["sync", "--json"], 0);
    assert_eq!(synced[0]["applied"]["creates"], in_scope);
    let (anchored, unanchored) = sim.contacts("northern");
    assert_eq!(
        (anchored.len(), names(&unanchored)),
        (in_scope, vec!["Plumber (made by hand)".to_owned()])
    );

    // Without --yes: a dry run that names every contact it would remove, and removes nothing.
    let listed = cli.run(&["purge", "--link", LINK]);
    assert_eq!(listed.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&listed.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.remove(0),
        format!("{LINK}: purge planned: {in_scope} managed objects would be removed")
    );
    lines.sort_unstable();
    let mut expected: Vec<String> = anchored
        .iter()
        .map(|contact| {
            format!(
                "  would remove {}  ({})",
                contact["DisplayName"].as_str().expect("a name"),
                contact["CustomAttribute15"].as_str().expect("an anchor")
            )
        })
        .collect();
    expected.sort_unstable();
    assert_eq!(lines, expected, "one line per contact galbridge created");
    assert_eq!(
        String::from_utf8_lossy(&listed.stderr).trim(),
        format!(
            "galbridge purge: dry run: nothing was removed; run again with --yes to delete every object galbridge \
             created for link \"{LINK}\" and forget its state"
        )
    );
    let plan = cli.json(&["purge", "--link", LINK, "--json"], 0);
    assert_eq!(
        (&plan["outcome"], &plan["mode"]),
        (&json!("planned"), &json!("dry_run"))
    );
    let mut would_remove: Vec<String> = plan["plan"]["removals"]
        .as_array()
        .expect("removals")
        .iter()
        .map(|removal| removal["display_name"].as_str().expect("a name").to_owned())
        .collect();
    would_remove.sort();
    assert_eq!(would_remove, names(&anchored));
    assert_eq!(
        sim.contacts("northern"),
        (anchored.clone(), unanchored.clone()),
        "nothing was removed"
    );

    // With --yes: every anchored contact goes, the hand-made one stays, the link's state is forgotten.
    let purged = cli.json(&["purge", "--link", LINK, "--yes", "--json"], 0);

    assert_eq!(
        (&purged["outcome"], &purged["applied"]["deletes"]),
        (&json!("succeeded"), &json!(in_scope))
    );
    assert_eq!(
        purged["summary"],
        format!(
            "{LINK}: purge ran: {in_scope} managed objects removed ({in_scope} removed, 0 failed)"
        )
    );
    let (anchored_after, unanchored_after) = sim.contacts("northern");
    assert!(anchored_after.is_empty(), "{anchored_after:?}");
    assert_eq!(
        unanchored_after, unanchored,
        "the hand-made contact is untouched"
    );
    let status = cli.json(&["status", "--json"], 0);
    assert_eq!(
        (
            &status["links"][0]["managed_objects"],
            &status["links"][0]["last_run"]
        ),
        (&json!(0), &Value::Null)
    );

    // The next sync starts over and recreates them.
    let again = cli.json(&["sync", "--json"], 0);
    assert_eq!(
        (&again[0]["mode"], &again[0]["applied"]["creates"]),
        (&json!("full"), &json!(in_scope))
    );
}

#[test]
fn purge_of_an_unknown_link_is_bad_input_and_touches_nothing() {
    let sim = Sim::start(2, m365_sim::Knobs::default());
    let cli = Cli::new(&sim);

    let output = cli.run(&["purge", "--link", "acme-to-northen", "--yes"]);

    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "galbridge purge: no link named \"acme-to-northen\" (did you mean \"acme-to-northern\"?)"
    );
    assert!(output.stdout.is_empty());
    assert_eq!(
        sim.handle.control().counters().len(),
        0,
        "no request reached the tenants"
    );
}
