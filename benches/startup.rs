//! Cold-start figures of the release binary (a benchmark, not a test: `cargo bench --bench startup`):
//! the time from exec of `galbridge serve --port 0` to its first answer on the readiness probe `/`, over
//! several runs (median, slowest), and the binary's size. Aims: under 30 ms and under 15 MB.
//!
//! It builds nothing itself: run `cargo build --release` first (or set GALBRIDGE_BIN to a binary).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
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
fn one_start(bin: &Path, config: &Path) -> Result<Duration, String> {
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "--config",
            &config.to_string_lossy(),
            "serve",
            "--port",
            "0",
        ])
        .env_remove("FUNCTIONS_CUSTOMHANDLER_PORT")
        .env("GALBRIDGE_LOG", "off")
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

fn main() -> ExitCode {
    let bin = binary();
    let Ok(metadata) = std::fs::metadata(&bin) else {
        eprintln!(
            "no binary at {}: run `cargo build --release` first (or set GALBRIDGE_BIN)",
            bin.display()
        );
        return ExitCode::FAILURE;
    };
    let dir = std::env::temp_dir().join(format!("galbridge-startup-{}", std::process::id()));
    if let Err(error) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    let config = dir.join("galbridge.toml");
    let minimal = "[state]\nkind = \"file\"\npath = \"state\"\n";
    if let Err(error) = std::fs::write(&config, minimal) {
        eprintln!("cannot write {}: {error}", config.display());
        return ExitCode::FAILURE;
    }
    let _ = one_start(&bin, &config); // warm the page cache
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        match one_start(&bin, &config) {
            Ok(time) => times.push(time),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    times.sort();
    let ms = |time: Duration| time.as_secs_f64() * 1000.0;
    println!("binary: {}", bin.display());
    println!(
        "size: {:.1} MB ({} bytes)",
        metadata.len() as f64 / 1_048_576.0,
        metadata.len()
    );
    println!(
        "exec to readiness over {RUNS} runs: median {:.1} ms, fastest {:.1} ms, slowest {:.1} ms",
        ms(times[RUNS / 2]),
        ms(times[0]),
        ms(times[RUNS - 1])
    );
    ExitCode::SUCCESS
}
