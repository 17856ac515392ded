//! The web dashboard as a user, an attacker on the office network and an auditor meet it:
//! read-only on every route (405 for any other method), nothing outside its own pages (no
//! traversal, bounded queries), a token where one is configured (bearer, or the one-time login
//! cookie), `check` refusing a dashboard open to the network; then the real thing: Chromium
//! (through selenium) on the demo's pages, and a real Prometheus scraping `/metrics`.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One HTTP/1.1 exchange on a fresh connection, bytes as given: (status, headers, body).
fn http(address: &str, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut request = format!("{method} {target} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request += &format!("Host: {address}\r\n");
    }
    for (k, v) in headers {
        request += &format!("{k}: {v}\r\n");
    }
    if method != "GET" && method != "HEAD" {
        request += "Content-Length: 2\r\n\r\n{}";
    } else {
        request += "\r\n";
    }
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A running `airlock` child and the lines it printed so far (stdout and stderr).
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for out in
            [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Self { child, lines }
    }

    /// The first printed line containing `text`, waiting up to 30 s.
    fn line_with(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("airlock printed no line with {text:?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://127.0.0.1:PORT/...` in a line: the `127.0.0.1:PORT`.
fn address_in(line: &str) -> String {
    let start = line.find("127.0.0.1:").unwrap();
    line[start..].chars().take_while(|c| *c != '/' && !c.is_whitespace()).collect()
}

const ROUTES: [&str; 20] = [
    "/",
    "/tags",
    "/trend",
    "/trend.svg",
    "/events",
    "/ledger",
    "/static/app.css",
    "/static/app.js",
    "/login",
    "/metrics",
    "/api/v1/overview",
    "/api/v1/devices",
    "/api/v1/tags",
    "/api/v1/values",
    "/api/v1/history",
    "/api/v1/history.csv",
    "/api/v1/events",
    "/api/v1/sinks",
    "/api/v1/ledger",
    "/api/v1/openapi.json",
];

#[test]
fn the_dashboard_is_read_only_and_answers_only_for_itself() {
    let dir = temp_dir("readonly");
    let demo = Running::start(
        &["demo", "--duration", "60s", "--speed", "3000", "--dir", dir.to_str().unwrap(), "--web", "127.0.0.1:0"],
        &[],
    );
    let address = address_in(&demo.line_with("dashboard: http://"));
    // Every other method, on every route and on a path that does not exist: 405, and the
    // answer says what is allowed.
    for route in ROUTES.iter().chain(&["/no/such/page"]) {
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"] {
            let (status, headers, _) = http(&address, method, route, &[]);
            assert_eq!(status, 405, "{method} {route}");
            assert_eq!(header(&headers, "allow"), Some("GET, HEAD"), "{method} {route}");
        }
        let (status, headers, _) = http(&address, "HEAD", route, &[]);
        assert!(status != 405 && status < 500, "HEAD {route}: {status}");
        assert!(header(&headers, "content-security-policy").is_some_and(|c| c.contains("default-src 'none'")));
    }
    // GETs work and carry the security headers; no CORS, whatever the Origin.
    for route in ["/", "/tags", "/events", "/ledger", "/api/v1/overview", "/metrics", "/api/v1/openapi.json"] {
        let (status, headers, body) = http(&address, "GET", route, &[("Origin", "http://evil.example")]);
        assert_eq!(status, 200, "GET {route}: {body}");
        assert!(headers.iter().all(|(k, _)| !k.starts_with("access-control-")), "{route}: {headers:?}");
        assert_eq!(header(&headers, "x-frame-options"), Some("DENY"));
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    }
    // Nothing outside its own pages: traversal in every spelling finds nothing.
    for target in [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/static/..%5c..%5cetc%5cpasswd",
        "//etc/passwd",
    ] {
        let (status, _, body) = http(&address, "GET", target, &[]);
        assert!((400..500).contains(&status), "{target}: {status}");
        assert!(!body.contains("root:"), "{target}");
    }
    // Oversized or malformed queries: a 4xx that says why, never a 5xx.
    let long = format!("/api/v1/history?tag={}", "a".repeat(10_000));
    assert_eq!(http(&address, "GET", &long, &[]).0, 414);
    for target in [
        "/api/v1/history?tag=press1/speed&from=yesterday",
        "/api/v1/history?tag=press1/speed&every=1ms&from=-7d",
        "/api/v1/history?tag=speed",
        "/api/v1/history?tag=press1/speed&from=now&to=-1h",
        "/trend.svg?tag=press1/speed&range=1y",
        "/api/v1/ledger?sink=nope",
        "/api/v1/events?limit=-1",
        "/login?code=guess",
        // A range or an interval that would hold the historian's lock for long.
        "/api/v1/history?tag=press1/speed&from=-3650d",
        "/api/v1/history.csv?tag=press1/speed&from=0",
        "/api/v1/history?tag=press1/speed&from=-300d&every=3650d",
        "/api/v1/history?tag=press1/speed&every=0s",
    ] {
        let (status, _, body) = http(&address, "GET", target, &[]);
        assert!((400..500).contains(&status), "{target}: {status} {body}");
    }
    // Without a token, only requests for this box by address or as localhost are answered: a
    // page elsewhere cannot rebind its own name to 127.0.0.1 and read the dashboard.
    let port = address.rsplit(':').next().unwrap();
    for host in ["evil.example", &format!("evil.example:{port}"), "127.0.0.1.evil.example"] {
        assert_eq!(http(&address, "GET", "/api/v1/devices", &[("Host", host)]).0, 421, "Host: {host}");
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "[::1]".to_owned()] {
        assert_eq!(http(&address, "GET", "/api/v1/devices", &[("Host", &host)]).0, 200, "Host: {host}");
    }
    // The API answers what the pages show: five devices, a tag's history, the ledger.
    let (_, _, devices) = http(&address, "GET", "/api/v1/devices", &[]);
    let devices: serde_json::Value = serde_json::from_str(&devices).unwrap();
    assert_eq!(devices.as_array().unwrap().len(), 5, "{devices}");
    let (status, _, history) = http(&address, "GET", "/api/v1/history?tag=press1/speed&from=-1h&every=1m", &[]);
    assert_eq!(status, 200, "{history}");
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert!(history["buckets"].as_array().unwrap().iter().any(|b| b["count"].as_u64().unwrap() > 0), "{history}");
    // A few polls in (bounded wait), the CSV download holds them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, headers, csv) = loop {
        let answer = http(&address, "GET", "/api/v1/history.csv?tag=press1/speed&from=-1d", &[]);
        if answer.2.lines().count() > 2 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(status, 200);
    assert!(header(&headers, "content-disposition").unwrap().contains("attachment"));
    assert!(csv.starts_with("time,value,quality\n") && csv.lines().count() > 2, "{csv}");
    // A client that sends half a request and then nothing is cut off after the header timeout
    // (10 s): it cannot hold one of the 64 connections for long.
    let started = Instant::now();
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(19), "cut off after {took:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

const ONE_DEVICE: &str = r#"[gateway]
name = "tokened"

[store]
data_dir = "data"

[[device]]
name = "press9"
asset_path = "acme/site/area/line/cell"
protocol = "modbus_tcp"
address = "127.0.0.1:9"

[[device.tag]]
name = "speed"
space = "input_register"
address = 0
type = "f32"

[web]
listen = "127.0.0.1:0"
token_env = "AIRLOCK_TEST_WEB_TOKEN"
"#;

#[test]
fn with_a_token_nothing_is_shown_without_it() {
    let dir = temp_dir("token");
    let file = dir.join("plant.toml");
    std::fs::write(&file, ONE_DEVICE).unwrap();
    let token = "a-long-secret-token-0123456789";
    let run =
        Running::start(&["run", file.to_str().unwrap(), "--duration", "60s"], &[("AIRLOCK_TEST_WEB_TOKEN", token)]);
    let line = run.line_with("dashboard: http://");
    let address = address_in(&line);
    let login = &line[line.find("/login?code=").unwrap()..].split_whitespace().next().unwrap().to_owned();
    for route in ROUTES.iter().filter(|r| **r != "/login") {
        let (status, headers, _) = http(&address, "GET", route, &[]);
        assert_eq!(status, 401, "GET {route} without the token");
        assert_eq!(header(&headers, "www-authenticate"), Some("Bearer"));
    }
    let bearer = format!("Bearer {token}");
    assert_eq!(http(&address, "GET", "/api/v1/devices", &[("Authorization", &bearer)]).0, 200);
    let wrong = format!("Bearer {token}x");
    assert_eq!(http(&address, "GET", "/api/v1/devices", &[("Authorization", &wrong)]).0, 401);
    assert_eq!(http(&address, "GET", "/metrics", &[("Authorization", &bearer)]).0, 200);
    // Methods are refused before the token is looked at: nothing to gain by guessing.
    assert_eq!(http(&address, "POST", "/api/v1/devices", &[("Authorization", &bearer)]).0, 405);
    // The login link works once, and its cookie lets a browser in.
    assert_eq!(http(&address, "GET", "/login?code=0000", &[]).0, 401);
    let (status, headers, _) = http(&address, "GET", login, &[]);
    assert_eq!(status, 303, "{login}");
    let cookie = header(&headers, "set-cookie").unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    assert_eq!(http(&address, "GET", "/", &[("Cookie", session)]).0, 200);
    assert_eq!(http(&address, "GET", "/", &[("Cookie", "airlock_session=guess")]).0, 401);
    assert_eq!(http(&address, "GET", login, &[]).0, 401, "a login link works once");
    // A refused request ends its connection, so that clients without the token cannot keep the
    // dashboard's connections open (there are 64) by asking again on each now and then.
    let mut s = TcpStream::connect(&address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET /api/v1/devices HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes()).unwrap();
    let mut answer = Vec::new();
    let read = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(read.is_ok(), "the connection was kept open after a 401: {read:?}");
    assert!(answer.contains("connection: close"), "{answer}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_slow_client_holds_up_no_stop() {
    let dir = temp_dir("slow");
    let file = dir.join("plant.toml");
    std::fs::write(&file, ONE_DEVICE.replace("token_env = \"AIRLOCK_TEST_WEB_TOKEN\"\n", "")).unwrap();
    let started = Instant::now();
    let mut run = Running::start(&["run", file.to_str().unwrap(), "--duration", "8s"], &[]);
    let address = address_in(&run.line_with("dashboard: http://"));
    // Half a request, and a connection that sends nothing: the gateway's stop does not wait
    // for them.
    let mut slow = TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    let idle = TcpStream::connect(&address).unwrap();
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(25), "the gateway did not stop with a slow client connected");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "{status}");
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    drop(idle);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One client that opens many connections and sends nothing (here from 127.0.0.2) takes at
/// most its share of the 64 the server keeps open: a request from another address is answered
/// at once, not after the 10 s header timeout frees a connection (a review locked the
/// dashboard and Prometheus out this way, with no token needed).
#[test]
fn one_silent_client_cannot_lock_others_out() {
    let dir = temp_dir("silent-many");
    let file = dir.join("plant.toml");
    std::fs::write(&file, ONE_DEVICE.replace("token_env = \"AIRLOCK_TEST_WEB_TOKEN\"\n", "")).unwrap();
    let run = Running::start(&["run", file.to_str().unwrap(), "--duration", "60s"], &[]);
    let address = address_in(&run.line_with("dashboard: http://"));
    let target: std::net::SocketAddr = address.parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let silent: Vec<tokio::net::TcpStream> = runtime.block_on(async {
        let mut held = Vec::new();
        for _ in 0..70 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), socket.connect(target)).await {
                held.push(s);
            }
        }
        held
    });
    assert_eq!(silent.len(), 70);
    std::thread::sleep(Duration::from_millis(500)); // the server has taken what it will
    let started = Instant::now();
    let (status, _, body) = http(&address, "GET", "/api/v1/overview", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    drop(silent);
    drop(run);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_refuses_a_dashboard_open_to_the_network() {
    let dir = temp_dir("open");
    let file = dir.join("plant.toml");
    std::fs::write(
        &file,
        ONE_DEVICE.replace("127.0.0.1:0", "0.0.0.0:8080").replace("token_env = \"AIRLOCK_TEST_WEB_TOKEN\"\n", ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_airlock")).args(["check", file.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("plant.toml:20:10: key `web.listen`: 0.0.0.0:8080 is reachable from the network: set token_env"),
        "{stderr}"
    );
    assert!(stderr.contains("set cert_file and key_file for HTTPS, or allow_plain_http = true"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn chromium_sees_the_demo_and_prometheus_scrapes_it() {
    // The default demo (600x, the gateway on the plant's clock) for long enough that its three
    // conclusions are on the dashboard; Chromium (selenium) reads every page while it runs, and
    // a real Prometheus scrapes /metrics.
    let dir = temp_dir("chromium");
    let demo =
        Running::start(&["demo", "--duration", "150s", "--dir", dir.to_str().unwrap(), "--web", "127.0.0.1:0"], &[]);
    let address = address_in(&demo.line_with("dashboard: http://"));
    let shots = repo().join("target/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new(airlock_testkit::python())
        .arg(airlock_testkit::peer_script("dashboard.py"))
        .args([&format!("http://{address}"), shots.to_str().unwrap(), dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "overview: 5 devices up",
        "trend: a line of",
        "events:",
        "conclusions on the dashboard",
        "ledger:",
        "prometheus:",
    ] {
        assert!(stdout.contains(line), "{line:?} missing in:\n{stdout}");
    }
    for page in ["overview", "tags", "trend", "events", "ledger"] {
        assert!(shots.join(format!("{page}.png")).metadata().unwrap().len() > 1000, "{page}.png");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn over_tls_with_the_right_trust_only() {
    let dir = temp_dir("tls");
    airlock_testkit::make_certificates(&dir);
    let file = dir.join("plant.toml");
    let config = ONE_DEVICE.replace(
        "token_env = \"AIRLOCK_TEST_WEB_TOKEN\"\n",
        "token_env = \"AIRLOCK_TEST_WEB_TOKEN\"\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\n",
    );
    std::fs::write(&file, config).unwrap();
    let token = "a-long-secret-token-0123456789";
    let run =
        Running::start(&["run", file.to_str().unwrap(), "--duration", "60s"], &[("AIRLOCK_TEST_WEB_TOKEN", token)]);
    let line = run.line_with("dashboard: https://");
    let address = address_in(&line);
    // Python's ssl module as an independent client: it verifies the chain and the name.
    let fetch = |ca: &str, auth: &str| {
        let code = "import ssl, sys, urllib.request\n\
                    ctx = ssl.create_default_context(cafile=sys.argv[2])\n\
                    req = urllib.request.Request(sys.argv[1], headers={'Authorization': sys.argv[3]})\n\
                    try:\n    r = urllib.request.urlopen(req, context=ctx, timeout=10); print(r.status, r.read()[:40])\n\
                    except urllib.error.HTTPError as e:\n    print(e.code)\n\
                    except Exception as e:\n    print('refused', type(e).__name__, e)\n";
        let out = Command::new(airlock_testkit::python())
            .args(["-c", code, &format!("https://{address}/api/v1/devices"), dir.join(ca).to_str().unwrap(), auth])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let bearer = format!("Bearer {token}");
    assert!(fetch("ca.pem", &bearer).starts_with("200 "), "{}", fetch("ca.pem", &bearer));
    assert_eq!(fetch("ca.pem", "Bearer wrong"), "401");
    assert!(fetch("other-ca.pem", &bearer).starts_with("refused"), "a client that does not trust the CA");
    // Plain HTTP on the TLS port gets no page.
    let (status, _, body) = http(&address, "GET", "/api/v1/devices", &[("Authorization", &bearer)]);
    assert_ne!(status, 200, "{body}");
    std::fs::remove_dir_all(&dir).unwrap();
}
