//! Azurite (the real Table and Queue Storage emulator, from npm) for tests and benchmarks: finds `azurite-table`
//! (or `azurite-queue`, from the same package), starts it on a free loopback port with in-memory persistence, waits
//! until it listens, and stops it when dropped or when the test process exits (even by SIGKILL: see
//! [`Azurite::start`]). [`Azurite::start_queue`] starts a private queue service.
//!
//! Not installed → the test FAILS telling you to run `.ci/azurite.sh`, unless `GALBRIDGE_SKIP_AZURITE=1`.
//! Include with `#[path = "support/azurite.rs"] mod azurite;`.
#![allow(dead_code)]

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Azurite's well-known development account (public).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const PINNED_VERSION: &str = "3.35.0";

/// Which Azurite service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Table,
    Queue,
}

impl Service {
    fn binary(self) -> &'static str {
        match self {
            Self::Table => "azurite-table",
            Self::Queue => "azurite-queue",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Self::Table => "table",
            Self::Queue => "queue",
        }
    }
}

/// A running Azurite table (or queue) service.
pub struct Azurite {
    child: Child,
    /// Closing this pipe tells the watchdog shell to stop Azurite.
    lifeline: Option<ChildStdin>,
    pub port: u16,
    log: PathBuf,
}

/// True when the caller opted out of Azurite-backed tests.
pub fn skipped() -> bool {
    std::env::var("GALBRIDGE_SKIP_AZURITE").is_ok_and(|v| v == "1")
}

/// The one Azurite of this test binary, started on first use; `None` when skipped by `GALBRIDGE_SKIP_AZURITE=1`.
/// Panics (failing the test) with instructions when Azurite is not installed.
pub fn shared() -> Option<&'static Azurite> {
    static INSTANCE: OnceLock<Azurite> = OnceLock::new();
    if skipped() {
        eprintln!("GALBRIDGE_SKIP_AZURITE=1: skipping a Table Storage test");
        return None;
    }
    Some(INSTANCE.get_or_init(|| Azurite::start().unwrap_or_else(|e| panic!("{e}"))))
}

/// Where `azurite-table` is: `GALBRIDGE_AZURITE_TABLE`, PATH, `node_modules/.bin`, then `.ci/azurite.sh`'s prefix.
pub fn find_binary() -> Option<PathBuf> {
    find_service_binary(Service::Table)
}

/// Where the service's binary is: for the table `GALBRIDGE_AZURITE_TABLE`, for the queue `azurite-queue` beside it;
/// then PATH, `node_modules/.bin`, then `.ci/azurite.sh`'s prefix.
pub fn find_service_binary(service: Service) -> Option<PathBuf> {
    let name = service.binary();
    if let Some(explicit) = std::env::var_os("GALBRIDGE_AZURITE_TABLE") {
        let explicit = PathBuf::from(explicit);
        return match service {
            Service::Table => Some(explicit),
            Service::Queue => explicit
                .parent()
                .map(|dir| dir.join(name))
                .filter(|path| path.is_file()),
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .collect()
        })
        .unwrap_or_default();
    candidates
        .push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("node_modules/.bin/{name}")));
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
    if let Some(cache) = cache {
        candidates.push(cache.join(format!(
            "galbridge/azurite-{PINNED_VERSION}/node_modules/.bin/{name}"
        )));
    }
    if let Some(prefix) = std::env::var_os("GALBRIDGE_AZURITE_PREFIX") {
        candidates.push(PathBuf::from(prefix).join(format!("node_modules/.bin/{name}")));
    }
    candidates.into_iter().find(|candidate| candidate.is_file())
}

impl Azurite {
    /// Starts a private Azurite. It runs under a small watchdog shell that stops it as soon as our end of its stdin
    /// closes, which happens when this value is dropped or when the test process dies in any way, so no Azurite
    /// outlives its tests.
    pub fn start() -> Result<Self, String> {
        Self::start_service(Service::Table)
    }

    /// Starts a private Azurite queue service (same watchdog as [`Azurite::start`]).
    pub fn start_queue() -> Result<Self, String> {
        Self::start_service(Service::Queue)
    }

    fn start_service(service: Service) -> Result<Self, String> {
        let binary = find_service_binary(service).ok_or_else(|| {
            format!(
                "{} was not found (PATH, node_modules/.bin, ~/.cache/galbridge). Run `bash .ci/azurite.sh` to \
                 install Azurite for the Storage tests, or set GALBRIDGE_SKIP_AZURITE=1 to skip them.",
                service.binary()
            )
        })?;
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::start_once(&binary, service) {
                Ok(azurite) => return Ok(azurite),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn start_once(binary: &PathBuf, service: Service) -> Result<Self, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let workspace =
            std::env::temp_dir().join(format!("galbridge-azurite-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&workspace)
            .map_err(|e| format!("creating {}: {e}", workspace.display()))?;
        let log = workspace.join("azurite.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
        // Azurite runs in the background; a reader on our pipe (fd 3: a background job's stdin would be /dev/null)
        // kills it at EOF; the shell itself exits when Azurite does, so a failed start is seen at once.
        let watchdog = r#"exec 3<&0
"$0" "$@" </dev/null & pid=$!
( read -r _ <&3; kill "$pid" 2>/dev/null ) &
wait "$pid""#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(watchdog)
            .arg(binary)
            .args([
                format!("--{}Host", service.flag()),
                "127.0.0.1".to_owned(),
                format!("--{}Port", service.flag()),
                port.to_string(),
            ])
            .args([
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--loose",
                "--skipApiVersionCheck",
                "--silent",
            ])
            // With --inMemoryPersistence Azurite refuses --location; its working directory gets any debug files.
            .current_dir(&workspace)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("starting {}: {e}", binary.display()))?;
        let lifeline = child.stdin.take();
        let mut azurite = Self {
            child,
            lifeline,
            port,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(azurite);
            }
            if let Ok(Some(_)) = azurite.child.try_wait() {
                return Err(format!(
                    "{} exited at start: {}",
                    service.binary(),
                    azurite.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not listen on port {port} within 60 s: {}",
                    service.binary(),
                    azurite.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text.chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    }

    /// The table endpoint (path-style, with the account): `http://127.0.0.1:{port}/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// A full connection string for this instance (a table service).
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};TableEndpoint={}",
            self.endpoint()
        )
    }

    /// A full connection string for this instance as a queue service.
    pub fn queue_connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};QueueEndpoint={}",
            self.endpoint()
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        drop(self.lifeline.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
