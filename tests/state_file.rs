//! File store behaviour beyond the shared conformance suite: exclusion across *processes*, durability when a
//! process is SIGKILLed mid-write, and damage reported instead of hidden.
//!
//! Child processes are this test binary re-run on the `#[ignore]`d `child_process` entry point, steered by the
//! `GALBRIDGE_STATE_CHILD` environment variable.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use chrono::{Duration, Utc};
use galbridge::state::{
    FileStore, LINK_SCOPE, LinkCheckpoint, ObjectRecord, StateError, StateStore,
};

fn record(anchor: &str) -> ObjectRecord {
    ObjectRecord {
        anchor: anchor.to_owned(),
        target_id: format!("contact-{anchor}"),
        hash: "h".to_owned(),
        data: Some(serde_json::json!({ "displayName": anchor, "padding": "x".repeat(200) })),
        updated_at: Utc::now(),
    }
}

fn child(mode: &str, dir: &std::path::Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args([
            "child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GALBRIDGE_STATE_CHILD", mode)
        .env("GALBRIDGE_STATE_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// Entry point of the child processes (does nothing when run by hand).
#[test]
#[ignore = "helper: run by the other tests as a child process"]
fn child_process() {
    let (Ok(mode), Ok(dir)) = (
        std::env::var("GALBRIDGE_STATE_CHILD"),
        std::env::var("GALBRIDGE_STATE_DIR"),
    ) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = FileStore::open(&dir).unwrap();
        let mut out = std::io::stdout();
        match mode.as_str() {
            "lease" => {
                let holder = format!("pid-{}", std::process::id());
                let verdict = match store
                    .acquire_lease("shared-link", &holder, Duration::seconds(60))
                    .await
                {
                    Ok(_) => "RESULT won".to_owned(),
                    Err(StateError::LeaseHeld { holder, .. }) => {
                        format!("RESULT refused by {holder}")
                    }
                    Err(other) => format!("RESULT error {other}"),
                };
                writeln!(out, "{verdict}").unwrap();
            }
            "writer" => {
                for n in 0.. {
                    store
                        .put_objects("crashy", "mbx", &[record(&format!("galbridge:t:{n:05}"))])
                        .await
                        .unwrap();
                    let checkpoint = LinkCheckpoint {
                        delta_link: Some(format!("delta-{n}")),
                        ..Default::default()
                    };
                    store.save_checkpoint("crashy", &checkpoint).await.unwrap();
                    // Printed only once both writes returned: everything acknowledged must survive a SIGKILL.
                    writeln!(out, "ACK {n}").unwrap();
                    out.flush().unwrap();
                }
            }
            other => panic!("unknown child mode {other}"),
        }
    });
}

#[test]
fn two_processes_never_hold_one_link() {
    let dir = tempfile::tempdir().unwrap();
    let racers: Vec<_> = (0..4)
        .map(|_| child("lease", dir.path()).spawn().unwrap())
        .collect();
    let verdicts: Vec<String> = racers
        .into_iter()
        .map(|racer| {
            let output = racer.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.lines()
                .find_map(|l| l.split_once("RESULT ").map(|(_, v)| v.to_owned()))
                .unwrap_or(text)
        })
        .collect();
    assert_eq!(
        verdicts.iter().filter(|v| *v == "won").count(),
        1,
        "{verdicts:?}"
    );
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| v.starts_with("refused by pid-"))
            .count(),
        3,
        "{verdicts:?}"
    );

    // And a fifth process, later, while the winner's lease is still live: refused too.
    let late = child("lease", dir.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&late.stdout).contains("RESULT refused by pid-"));
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill_and_nothing_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let mut kill_after = [3usize, 17, 41, 90];
    kill_after.rotate_left((std::process::id() % 4) as usize);
    let mut most_ever_acknowledged = 0;
    for &acks_before_kill in &kill_after {
        let mut writer = child("writer", dir.path()).spawn().unwrap();
        let stdout = writer.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut last_ack = None;
        let mut seen = 0;
        while seen < acks_before_kill {
            let line = lines.next().expect("writer ended early").unwrap();
            if let Some((_, n)) = line.split_once("ACK ") {
                last_ack = Some(n.parse::<usize>().unwrap());
                seen += 1;
            }
        }
        writer.kill().unwrap(); // SIGKILL, most likely in the middle of a write
        writer.wait().unwrap();
        // The child may have acknowledged more than we had read: drain the pipe for its true last word.
        for line in lines.map_while(Result::ok) {
            if let Some((_, n)) = line.split_once("ACK ") {
                last_ack = Some(n.parse().unwrap());
            }
        }
        let last = last_ack.unwrap();
        most_ever_acknowledged = most_ever_acknowledged.max(last);

        let store = FileStore::open(dir.path()).unwrap();
        let records = store
            .list_objects("crashy", "mbx")
            .await
            .expect("no torn or corrupt map after SIGKILL");
        let anchors: std::collections::BTreeSet<_> =
            records.iter().map(|r| r.anchor.clone()).collect();
        for n in 0..=last {
            assert!(
                anchors.contains(&format!("galbridge:t:{n:05}")),
                "acknowledged record {n} lost"
            );
        }
        // At most the one write in flight when killed may have landed beyond what was acknowledged.
        assert!(
            records.len() <= most_ever_acknowledged + 2,
            "{} records after {last} acks",
            records.len()
        );
        let checkpoint = store
            .load_checkpoint("crashy")
            .await
            .expect("checkpoint readable after SIGKILL");
        let delta: usize = checkpoint
            .delta_link
            .unwrap()
            .trim_start_matches("delta-")
            .parse()
            .unwrap();
        // The checkpoint is the last acknowledged one, or the next if its write landed just before the kill.
        assert!(
            delta == last || delta == last + 1,
            "checkpoint {delta} vs last ack {last}"
        );
    }
}

#[tokio::test]
async fn leftover_temp_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store
        .put_objects("link", "mbx-1", &[record("galbridge:t:1")])
        .await
        .unwrap();
    store
        .put_objects("link", LINK_SCOPE, &[record("galbridge:t:2")])
        .await
        .unwrap();
    // What a crash between "create temp" and "rename" leaves behind: half-written JSON beside the real files.
    let map = store.object_map_path("link", "mbx-1");
    let objects = map.parent().unwrap();
    std::fs::write(
        objects.join(".mbx-1.json.4242.0.tmp"),
        b"{\"scope\":\"mbx-1\",\"records\":[{\"anch",
    )
    .unwrap();
    std::fs::write(
        objects
            .parent()
            .unwrap()
            .join(".checkpoint.json.4242.1.tmp"),
        b"{\"delta_li",
    )
    .unwrap();

    assert_eq!(
        store.list_scopes("link").await.unwrap(),
        vec!["mbx-1".to_owned()]
    );
    assert_eq!(store.list_objects("link", "mbx-1").await.unwrap().len(), 1);
    assert_eq!(
        store.load_checkpoint("link").await.unwrap(),
        LinkCheckpoint::default()
    );
    store
        .put_objects("link", "mbx-1", &[record("galbridge:t:3")])
        .await
        .unwrap();
    assert_eq!(store.list_objects("link", "mbx-1").await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_corrupt_file_is_reported_with_its_path_and_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    store
        .put_objects("link", "mbx-1", &[record("galbridge:t:1")])
        .await
        .unwrap();
    let map = store.object_map_path("link", "mbx-1");
    std::fs::write(&map, b"{\"scope\":\"mbx-1\",\"records\":[{\"anchor\":").unwrap();

    let err = store.list_objects("link", "mbx-1").await.unwrap_err();
    match &err {
        StateError::Corrupt { what, .. } => assert_eq!(what, &map.display().to_string()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // A write must not "repair" the map by starting from empty: the operator decides.
    let err = store
        .put_objects("link", "mbx-1", &[record("galbridge:t:2")])
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(&map).unwrap(),
        b"{\"scope\":\"mbx-1\",\"records\":[{\"anchor\":"
    );

    let checkpoint = store
        .object_map_path("link", LINK_SCOPE)
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("checkpoint.json");
    std::fs::write(&checkpoint, b"not json").unwrap();
    let err = store.load_checkpoint("link").await.unwrap_err();
    assert!(err.to_string().contains("checkpoint.json"), "{err}");
}

#[tokio::test]
async fn a_fresh_store_sees_what_a_returned_call_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let writer = FileStore::open(dir.path()).unwrap();
    let records: Vec<_> = (0..2000)
        .map(|n| record(&format!("galbridge:t:{n:05}")))
        .collect();
    writer.put_objects("big", "mbx", &records).await.unwrap();
    let lease = writer
        .acquire_lease("big", "me", Duration::seconds(30))
        .await
        .unwrap();

    let reader = FileStore::open(dir.path()).unwrap();
    assert_eq!(reader.list_objects("big", "mbx").await.unwrap(), records);
    assert_eq!(reader.current_lease("big").await.unwrap(), Some(lease));
}
