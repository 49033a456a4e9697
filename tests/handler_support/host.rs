//! A stand-in for the Functions host's HTTP front for one anonymous function: it listens on a loopback port, turns
//! each plain HTTP request into the invocation the real host would POST to the handler (`Url`, `Method`, `Query`
//! decoded, `Headers`, `Body` as a string; docs/microsoft-facts.md §7), and answers with the `res` output. m365-sim
//! delivers Graph's validation handshake and notifications to it, as Graph would to `https://{app}/api/notify`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Map, Value, json};

/// A running stand-in; stops accepting when dropped.
pub struct FakeHost {
    pub port: u16,
    /// Requests forwarded so far.
    pub forwarded: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakeHost {
    /// `http://127.0.0.1:{port}/api/notify`.
    pub fn notify_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/notify", self.port)
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Forwards every request to the handler on `handler_port` as an invocation of `function`. The handler's port may
/// be set later (the handler's configuration needs this host's URL first): `handler_port` is read per request.
pub fn start(function: &'static str, handler_port: Arc<AtomicUsize>) -> FakeHost {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let port = listener.local_addr().expect("an address").port();
    let stop = Arc::new(AtomicBool::new(false));
    let forwarded = Arc::new(AtomicUsize::new(0));
    let (stop_flag, count) = (Arc::clone(&stop), Arc::clone(&forwarded));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop_flag.load(Ordering::SeqCst) {
                return;
            }
            let Ok(stream) = stream else { continue };
            let handler_port = Arc::clone(&handler_port);
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let port = u16::try_from(handler_port.load(Ordering::SeqCst)).expect("a port");
                if forward(stream, port, function) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    FakeHost {
        port,
        forwarded,
        stop,
    }
}

/// Reads one request, invokes the handler, writes the answer; false if the request could not be read.
fn forward(stream: TcpStream, handler_port: u16, function: &str) -> bool {
    let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() || request_line.trim().is_empty() {
        return false;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let mut headers = Map::new();
    let mut length = 0_usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().unwrap_or(0);
            }
            headers.insert(name.to_owned(), json!([value]));
        }
    }
    let mut body = vec![0_u8; length];
    if reader.read_exact(&mut body).is_err() {
        return false;
    }
    let url = url::Url::parse(&format!("https://app.azurewebsites.net{target}")).expect("a URL");
    let query: Map<String, Value> = url
        .query_pairs()
        .map(|(name, value)| (name.into_owned(), json!(value.into_owned())))
        .collect();
    let payload = json!({
        "Data": { "req": {
            "Url": url.as_str(), "Method": method, "Query": query, "Headers": headers,
            "Params": {}, "Body": String::from_utf8_lossy(&body), "Identities": []
        }},
        "Metadata": { "sys": { "MethodName": function } }
    })
    .to_string();
    let (host_status, envelope) = super::invoke(handler_port, function, &payload);
    let mut stream = stream;
    let (status, content_type, body) = if host_status == 200 {
        let res = &envelope["Outputs"]["res"];
        (
            res["statusCode"].as_u64().unwrap_or(500),
            res["headers"]["Content-Type"]
                .as_str()
                .unwrap_or("text/plain")
                .to_owned(),
            res["body"].as_str().unwrap_or_default().to_owned(),
        )
    } else {
        (500, "text/plain".to_owned(), "invocation failed".to_owned())
    };
    let answer = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes());
    true
}
