//! The fleet view in a real browser: headless Chromium (Debian package `chromium`, installed by
//! `make deps`) loads each page from a real server over HTTPS (self-signed certificate) with
//! software-TPM agents behind it, and the test asserts what a person sees (the DOM after load),
//! with JavaScript on and off, and the live update arriving after a verdict changes.
//! Screenshots are saved under `target/ui-screenshots/`.
//!
//! Chromium takes the reader's credentials from the URL (`https://user:password@host/...`)
//! for the top-level page and reuses them for the page's style sheet, script and event stream.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use common::{app_event, gold_boot, Auth, Harness};
use nodetrust_server::{app, run, tls};
use serde_json::json;

const READER: (&str, &str) = ("viewer", "viewer-password-1");

fn chromium() -> PathBuf {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(c).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
            }
        }
    }
    panic!(
        "headless Chromium is needed for this test: install the Debian package `chromium` (make deps)"
    );
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs headless Chromium on `url` with `extra` flags; returns its standard output.
async fn browse(url: String, extra: Vec<String>) -> String {
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let out = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--ignore-certificate-errors",
                "--window-size=1400,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(&extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium failed on {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

async fn dump(base: &str, path: &str, extra: &[&str]) -> String {
    let mut flags: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    flags.push("--dump-dom".into());
    browse(format!("{base}{path}"), flags).await
}

async fn screenshot(base: &str, path: &str, name: &str, extra: &[&str]) {
    let file = screenshots().join(name);
    let _ = std::fs::remove_file(&file);
    let mut flags: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    flags.push(format!("--screenshot={}", file.display()));
    browse(format!("{base}{path}"), flags).await;
    let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(len > 1000, "no screenshot of {path} at {}", file.display());
}

/// The text a person sees: the DOM with tags removed and entities decoded.
fn text(dom: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in dom.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// Headless Chromium driven over the DevTools protocol (a WebSocket on 127.0.0.1).
struct Browser {
    child: std::process::Child,
    ws: std::net::TcpStream,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn launch(url: &str) -> Self {
        use std::io::{BufRead as _, BufReader};
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--ignore-certificate-errors",
                "--window-size=1400,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("chromium exited before DevTools listened")
                .unwrap();
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                break rest.split('/').next().unwrap().parse::<u16>().unwrap();
            }
        };
        // Keep reading its standard error so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let list: serde_json::Value = serde_json::from_str(&http_get(port, "/json/list")).unwrap();
        let page = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("no page target");
        let ws_url = page["webSocketDebuggerUrl"].as_str().unwrap();
        let path = &ws_url[ws_url.find("/devtools").unwrap()..];
        let ws = ws_connect(port, path);
        Self {
            child,
            ws,
            next: 0,
            _profile: profile,
        }
    }

    /// Calls a DevTools method; returns its result.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = self.next;
        ws_send(
            &mut self.ws,
            &json!({"id": id, "method": method, "params": params}).to_string(),
        );
        loop {
            let msg: serde_json::Value = serde_json::from_str(&ws_recv(&mut self.ws)).unwrap();
            if msg["id"] == id {
                assert!(msg.get("error").is_none(), "{method}: {msg}");
                return msg["result"].clone();
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; returns its string value.
    fn eval(&mut self, expr: &str) -> String {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshot_cdp(browser: &mut Browser, name: &str) {
    use base64::Engine as _;
    let shot = tokio::task::block_in_place(|| {
        browser.call("Page.captureScreenshot", json!({"format": "png"}))
    });
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.len() > 1000);
    std::fs::write(screenshots().join(name), png).unwrap();
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("no content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

fn ws_connect(port: u16, path: &str) -> std::net::TcpStream {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

fn ws_send(s: &mut std::net::TcpStream, text: &str) {
    use std::io::Write as _;
    let payload = text.as_bytes();
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).unwrap();
}

/// The next text message (continuation frames joined; other frames skipped).
fn ws_recv(s: &mut std::net::TcpStream) -> String {
    use std::io::Read as _;
    let mut message = Vec::new();
    loop {
        let mut head = [0u8; 2];
        s.read_exact(&mut head).unwrap();
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0f;
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).unwrap();
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).unwrap();
        if matches!(opcode, 0 | 1) {
            message.extend_from_slice(&payload);
            if fin {
                return String::from_utf8(message).unwrap();
            }
        }
    }
}

/// The text of the fleet table row of host `name`.
fn row_text(dom: &str, name: &str) -> Option<String> {
    let at = dom.find(&format!(">{name}</a>"))?;
    let start = dom[..at].rfind("<tr")?;
    let end = at + dom[at..].find("</tr>")?;
    Some(text(&dom[start..end]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn browser_shows_the_fleet_escapes_hostile_text_and_updates_live() {
    let h = Harness::new().await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/users",
            Auth::Admin,
            Some(json!({"name": READER.0, "password": READER.1, "role": "reader"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    h.enrol("gold", "uuid-gold", &gold_boot("grub 2.06")).await;
    let (s, v) = h
        .call(
            "POST",
            "/mtwilson/v2/flavors",
            Auth::Admin,
            Some(json!({"from_host": "gold", "parts": ["PLATFORM", "OS"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let ok = h.enrol("node-ok", "uuid-ok", &gold_boot("grub 2.06")).await;
    let mut bad = gold_boot("grub 2.06");
    bad.push(app_event(4, "<script>alert(1)</script>", "evil loader"));
    h.enrol("node-bad", "uuid-bad", &bad).await;
    for n in ["gold", "node-ok", "node-bad"] {
        let (s, v) = h.attest(n).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    // The real server over TLS; the test hears when a page opens its event stream.
    let streams = Arc::new(AtomicUsize::new(0));
    let heard = streams.clone();
    let router = app(h.state.clone()).layer(axum::middleware::map_request(
        move |req: axum::http::Request<axum::body::Body>| {
            let heard = heard.clone();
            async move {
                if req.uri().path() == "/ui/events" {
                    heard.fetch_add(1, Ordering::SeqCst);
                }
                req
            }
        },
    ));
    let (certs, key) = tls::server_identity(None, None, h.dir.path()).unwrap();
    let config = tls::server_config(certs, key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(listener, config, router, async move {
        let _ = stopped.await;
    }));
    let base = format!(
        "https://{}:{}@127.0.0.1:{}",
        READER.0,
        READER.1,
        addr.port()
    );
    let anonymous = format!("https://127.0.0.1:{}", addr.port());

    // Without credentials: no fleet.
    let dom = dump(&anonymous, "/ui/", &[]).await;
    assert!(!text(&dom).contains("node-ok"), "{dom}");

    // The fleet, with JavaScript and without.
    {
        let what = "script on";
        let dom = dump(&base, "/ui/", &[]).await;
        let seen = text(&dom);
        for (name, verdict) in [
            ("gold", "trusted"),
            ("node-ok", "trusted"),
            ("node-bad", "untrusted"),
        ] {
            let row =
                row_text(&dom, name).unwrap_or_else(|| panic!("{what}: {name} not shown:\n{seen}"));
            assert!(
                row.split_whitespace().any(|w| w == verdict),
                "{what}: {name} without {verdict}: {row}"
            );
        }
        // The hostile component name is text, not an element.
        assert!(!dom.contains("<script>alert"), "{what}: {dom}");
    }
    screenshot(&base, "/ui/", "fleet.png", &[]).await;
    // Without JavaScript: headless Chromium's --dump-dom and --screenshot themselves need page
    // script, so the served HTML before any script runs is asserted by tests/ui.rs instead.

    // One host: its reason sentences and the timeline.
    let dom = dump(&base, "/ui/hosts/node-bad", &[]).await;
    let seen = text(&dom);
    assert!(
        seen.contains("<script>alert(1)</script>"),
        "the component name as text:\n{seen}"
    );
    assert!(!dom.contains("<script>alert"), "{dom}");
    assert!(dom.contains("<svg class=\"timeline\""), "{dom}");
    assert!(dom.contains("b-untrusted"), "{dom}");
    let api = h.host("node-bad").await;
    let first = api["trust"]["reasons"][0].as_str().unwrap();
    assert!(seen.contains(first), "reason {first:?} not shown:\n{seen}");
    screenshot(&base, "/ui/hosts/node-bad", "host.png", &[]).await;
    screenshot(&base, "/ui/flavors", "flavors.png", &[]).await;
    let seen = text(&dump(&base, "/ui/flavors", &[]).await);
    assert!(
        seen.contains("gold PLATFORM") || seen.contains("PLATFORM"),
        "{seen}"
    );

    // Live, over the DevTools protocol: the page is open, node-ok's verdict changes, and the
    // page shows it without a reload.
    let opened = streams.load(Ordering::SeqCst);
    let mut browser = Browser::launch(&format!("{base}/ui/?q=node-ok"));
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while streams.load(Ordering::SeqCst) == opened {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the page never opened its event stream");
    let before = tokio::task::block_in_place(|| {
        browser.eval("document.querySelector('tbody tr').innerText")
    });
    assert!(
        before.starts_with("node-ok") && before.split_whitespace().any(|w| w == "trusted"),
        "{before}"
    );
    ok.lock().unwrap().boot(&gold_boot("grub 2.12 unsigned"));
    let (s, v) = h.attest("node-ok").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["verdict"], "untrusted", "{v}");
    let after = tokio::task::block_in_place(|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let t = browser.eval(
                "document.body.hasAttribute('data-updated') ? document.querySelector('tbody tr').innerText : ''",
            );
            if !t.is_empty() || std::time::Instant::now() > deadline {
                return t;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    assert!(
        after.starts_with("node-ok") && after.split_whitespace().any(|w| w == "untrusted"),
        "the live update did not arrive: {after:?}"
    );
    screenshot_cdp(&mut browser, "fleet-live.png");

    // The same page with JavaScript off: the served HTML alone shows the fleet.
    let dom = tokio::task::block_in_place(|| {
        browser.call(
            "Emulation.setScriptExecutionDisabled",
            json!({"value": true}),
        );
        browser.call("Page.reload", json!({"ignoreCache": true}));
        std::thread::sleep(std::time::Duration::from_secs(2));
        let doc = browser.call("DOM.getDocument", json!({"depth": -1}));
        let root = doc["root"]["nodeId"].clone();
        browser.call("DOM.getOuterHTML", json!({"nodeId": root}))["outerHTML"]
            .as_str()
            .unwrap()
            .to_string()
    });
    let row = row_text(&dom, "node-ok").unwrap_or_else(|| panic!("script off: {dom}"));
    assert!(
        row.split_whitespace().any(|w| w == "untrusted"),
        "script off: {row}"
    );
    assert!(!dom.contains("data-updated"), "script ran: {dom}");
    screenshot_cdp(&mut browser, "fleet-noscript.png");
    drop(browser);
    let _ = stop.send(());
}
