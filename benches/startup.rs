//! Cold-start figures of the release binary (a benchmark, not a test: `cargo bench --bench startup`):
//! the time from exec of `galbridge serve --port 0` to its first answer on the readiness probe `/`, over
//! several runs (median, slowest), and the binary's size. Aims: under 30 ms and under 15 MB.
//!
//! The configuration is a production one (three-tenant mesh, Table Storage state, Key Vault credentials) whose
//! every endpoint is a local "tripwire" listener: the benchmark fails if anything is contacted before readiness
//! (the engine is built on the first invocation, see `src/cli/lazy.rs`). A second configuration with file state
//! checks that readiness does not create the state folder either.
//!
//! It builds nothing itself: run `cargo build --release` first (or set GALBRIDGE_BIN to a binary).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const RUNS: usize = 25;

fn binary() -> PathBuf {
    std::env::var_os("GALBRIDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/galbridge")
        })
}

/// Exec → readiness answered, for one process.
fn one_start(bin: &Path, config: &Path, table: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "--config",
            &config.to_string_lossy(),
            "serve",
            "--port",
            "0",
        ])
        // The shell's overrides would move endpoints away from the tripwire.
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env_remove("GALBRIDGE_KEY_VAULT_URL")
        .env_remove("GALBRIDGE_STATE_TABLE_ENDPOINT")
        .env_remove("GALBRIDGE_STATE_TABLE_NAME")
        .env_remove("GALBRIDGE_EXTRA_CA_FILE")
        .env("GALBRIDGE_LOG", "off")
        .env("GALBRIDGE_BENCH_TABLE", table)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", bin.display()))?;
    let result = (|| {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|error| error.to_string())?;
        let port: u16 = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or(format!("odd line {line:?}"))?;
        let mut stream =
            TcpStream::connect(("127.0.0.1", port)).map_err(|error| error.to_string())?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .map_err(|error| error.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|error| error.to_string())?;
        if !response.starts_with("HTTP/1.1 200") {
            return Err(format!("readiness answered {response:?}"));
        }
        Ok(started.elapsed())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Counts the TCP connections made to it.
fn tripwire() -> Result<(u16, Arc<AtomicUsize>), String> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|error| error.to_string())?;
    let port = listener
        .local_addr()
        .map_err(|error| error.to_string())?
        .port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    Ok((port, accepted))
}

/// A production-shaped configuration with every endpoint at `base`.
fn production_config(base: &str, state: &str) -> String {
    let mut toml = format!("{state}[key_vault]\nurl = \"{base}\"\n");
    for (index, name) in ["acme", "northern", "globex"].iter().enumerate() {
        toml.push_str(&format!(
            "[tenants.{name}]\ntenant_id = \"{name}.onmicrosoft.com\"\n\
             client_id = \"{index}1111111-1111-4111-8111-111111111111\"\n\
             credential = {{ key_vault_secret = \"{name}-client-secret\" }}\n\
             endpoints = {{ login = \"{base}\", graph = \"{base}\", exchange = \"{base}\" }}\n"
        ));
    }
    toml.push_str(
        "[[meshes]]\nname = \"group\"\ntenants = [\"acme\", \"northern\", \"globex\"]\n\
         [meshes.target]\nkind = \"mail_contact\"\n",
    );
    toml
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let bin = binary();
    let metadata = std::fs::metadata(&bin).map_err(|_| {
        format!(
            "no binary at {}: run `cargo build --release` first (or set GALBRIDGE_BIN)",
            bin.display()
        )
    })?;
    let dir = std::env::temp_dir().join(format!("galbridge-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let (port, contacts) = tripwire()?;
    let base = format!("https://127.0.0.1:{port}/");
    let table_state = "[state]\nkind = \"table\"\ntable = \"galbridge\"\n\
                       auth = { connection_string_env = \"GALBRIDGE_BENCH_TABLE\" }\n";
    // Plain http on loopback: a contact would be a whole request, not a failed TLS handshake.
    let table = format!(
        "DefaultEndpointsProtocol=http;AccountName=bench;AccountKey=YmVuY2g=;\
         TableEndpoint=http://127.0.0.1:{port}/bench;"
    );
    let config = dir.join("galbridge.toml");
    std::fs::write(&config, production_config(&base, table_state))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;

    // File state: readiness must not create the state folder.
    let file_config = dir.join("file-state.toml");
    let state_dir = dir.join("state");
    let file_state = format!(
        "[state]\nkind = \"file\"\npath = {:?}\n",
        state_dir.display().to_string()
    );
    std::fs::write(&file_config, production_config(&base, &file_state))
        .map_err(|e| format!("cannot write {}: {e}", file_config.display()))?;
    one_start(&bin, &file_config, &table)?; // also warms the page cache
    if state_dir.exists() {
        return Err(format!(
            "readiness created the state folder {}: the engine is built too early",
            state_dir.display()
        ));
    }

    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        times.push(one_start(&bin, &config, &table)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let contacted = contacts.load(Ordering::SeqCst);
    if contacted > 0 {
        return Err(format!(
            "{contacted} connections to the configured endpoints before readiness: the engine is built too early"
        ));
    }
    times.sort();
    let ms = |time: Duration| time.as_secs_f64() * 1000.0;
    println!("binary: {}", bin.display());
    println!(
        "size: {:.1} MB ({} bytes)",
        metadata.len() as f64 / 1_048_576.0,
        metadata.len()
    );
    println!(
        "exec to readiness over {RUNS} runs (3-tenant mesh, Table Storage state, Key Vault credentials): \
         median {:.1} ms, fastest {:.1} ms, slowest {:.1} ms",
        ms(times[RUNS / 2]),
        ms(times[0]),
        ms(times[RUNS - 1])
    );
    println!(
        "connections to Table Storage, Key Vault, login, Graph or Exchange before readiness: 0"
    );
    println!("state folder created before readiness (file state): no");
    Ok(())
}
