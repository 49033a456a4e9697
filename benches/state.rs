//! Checkpointing cost of the state stores: put and list throughput for 5,000 object records (the size of one
//! large link-wide map), in the batch sizes the engine uses (20 = one Graph `$batch`, 100 = one table change set).
//! File store on a temp directory, table store on a local Azurite (skipped with GALBRIDGE_SKIP_AZURITE=1).
//!
//! Run: `cargo bench --bench state` (after `bash .ci/azurite.sh`).

#[path = "../tests/support/azurite.rs"]
mod azurite;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use galbridge::state::{
    FileStore, LINK_SCOPE, ObjectRecord, StateStore, TableStore, TableStoreConfig,
};

const RECORDS: usize = 5_000;

fn records() -> Vec<ObjectRecord> {
    (0..RECORDS)
        .map(|n| ObjectRecord {
            anchor: format!("galbridge:7c9a1f0e-1111-4222-8333-944445555666:{:08x}-0000-4000-8000-{n:012}", n),
            target_id: format!("5f1c0a2e-0000-4000-8000-{n:012}"),
            hash: format!("{:064x}", n as u128 * 0x9e37_79b9_7f4a_7c15),
            data: Some(serde_json::json!({
                "displayName": format!("Person {n} (Acme Construction)"),
                "givenName": "Person", "surname": format!("{n}"),
                "mail": format!("person.{n}@acme.example"),
                "jobTitle": "Site Engineer", "department": "Operations", "companyName": "Acme Construction",
                "businessPhones": ["+44 20 7946 0000"], "mobilePhone": "+44 7700 900000",
                "officeLocation": "London", "streetAddress": "1 High Street", "city": "London", "postalCode": "EC1A 1AA",
            })),
            updated_at: Utc::now(),
        })
        .collect()
}

async fn measure(name: &str, store: Arc<dyn StateStore>, batch: usize) {
    let records = records();
    let link = format!("bench-{batch}");
    let started = Instant::now();
    for chunk in records.chunks(batch) {
        store
            .put_objects(&link, LINK_SCOPE, chunk)
            .await
            .expect("put");
    }
    let put = started.elapsed();
    let started = Instant::now();
    let listed = store.list_objects(&link, LINK_SCOPE).await.expect("list");
    let list = started.elapsed();
    assert_eq!(listed.len(), RECORDS);
    println!(
        "{name:<16} batch {batch:>3}: put {:>8.0} records/s ({:>6.2} s)   list {:>8.0} records/s ({:>5.3} s)",
        RECORDS as f64 / put.as_secs_f64(),
        put.as_secs_f64(),
        RECORDS as f64 / list.as_secs_f64(),
        list.as_secs_f64()
    );
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("state store throughput, {RECORDS} records of ~600 bytes each");
        let dir = tempfile::tempdir().expect("temp dir");
        let file: Arc<dyn StateStore> = Arc::new(FileStore::open(dir.path()).expect("file store"));
        for batch in [20, 100] {
            measure("file", file.clone(), batch).await;
        }

        if azurite::skipped() {
            println!("table (Azurite)  skipped (GALBRIDGE_SKIP_AZURITE=1)");
            return;
        }
        let azurite = azurite::Azurite::start().unwrap_or_else(|e| panic!("{e}"));
        let config =
            TableStoreConfig::from_connection_string(&azurite.connection_string(), "bench")
                .expect("config");
        let table = Arc::new(TableStore::open(config).await.expect("table store"));
        for batch in [20, 100] {
            measure("table (Azurite)", table.clone(), batch).await;
        }
        let (requests, retries) = table.request_counts();
        println!("table requests: {requests} ({retries} retried)");
    });
}
