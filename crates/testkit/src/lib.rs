//! Test scaffolding shared by airlock's crates, a dev-dependency only: a mosquitto broker (the
//! Debian package) on a free loopback port with persistence and a full log, stopped the way a
//! service stop does; the asyncua OPC UA server of `scripts/peers`; the Python of the test peers
//! (`.venv`, made by `./scripts/test`); temp folders and free ports; and the process figures
//! benchmarks print (CPU seconds, peak RSS). Panics are its error handling: it runs only in
//! tests and benchmarks.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-mqtt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether something listens at `address`. A connection that met itself is not that: a port
/// from [`free_port`] lies in the ephemeral range, so a connect to it before the peer listens
/// may be given that very port as its source and succeed, connected to itself (TCP
/// simultaneous open). A broker "up" that way refused the test's first client.
pub fn listening(address: impl std::net::ToSocketAddrs) -> bool {
    std::net::TcpStream::connect(address)
        .is_ok_and(|s| s.local_addr().ok().is_some_and(|local| s.peer_addr().is_ok_and(|peer| peer != local)))
}

/// The Python that has the test peers (pymodbus, pysparkplug, asyncua): `AIRLOCK_PYTHON`, or
/// the workspace's `.venv` that `./scripts/test` makes.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("AIRLOCK_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(venv.exists(), "no Python with the test peers: run ./scripts/test, which installs them into .venv");
    venv
}

/// A command running `program` pinned to `core` with `taskset` (when there is one and at least
/// two cores), so that a benchmark's peer and the process measured do not share a core.
pub fn pinned(core: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 && Command::new("taskset").arg("-V").output().is_ok() {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// `GET target` from the HTTP server at `address` (one request, `Connection: close`): the
/// status and the body.
pub fn http_get(address: &str, target: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status = String::from_utf8_lossy(&answer[..split]).split(' ').nth(1).unwrap().parse().unwrap();
    (status, answer[split + 4..].to_vec())
}

/// A script of `scripts/peers`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peers").join(name)
}

pub fn mosquitto() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mosquitto is not installed: run ./scripts/test, which installs it")
}

/// A mosquitto broker on loopback, with persistence and a full log.
pub struct Broker {
    pub port: u16,
    pub dir: PathBuf,
    /// Extra lines for the listener (TLS settings).
    pub listener: String,
    /// No persistence and no log: for benchmarks, where logging every message would weigh on
    /// the figure.
    quiet: bool,
    child: Option<Child>,
}

impl Broker {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// A broker whose listener gets `listener` lines too (e.g. TLS files).
    pub fn start_with(dir: &Path, listener: &str) -> Self {
        let mut b =
            Self { port: free_port(), dir: dir.to_owned(), listener: listener.to_owned(), quiet: false, child: None };
        b.restart();
        b
    }

    /// The PUBLISH packets the broker has received since it started, from its `$SYS` topic
    /// (a quiet broker publishes it every second), once it has stopped moving.
    pub fn publishes_received(&self) -> u64 {
        let read = || {
            let out = Command::new("mosquitto_sub")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-t", "$SYS/broker/publish/messages/received", "-C", "1", "-W", "5"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(0)
        };
        // The count lags while the broker is busy: it is taken once three reads a second apart
        // agree.
        let (mut last, mut same) = (read(), 0);
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(1100));
            let now = read();
            same = if now == last { same + 1 } else { 0 };
            last = now;
            if same == 2 {
                break;
            }
        }
        last
    }

    /// The broker's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A broker without persistence or log, for benchmarks.
    pub fn start_quiet(dir: &Path) -> Self {
        let mut b = Self { port: free_port(), dir: dir.to_owned(), listener: String::new(), quiet: true, child: None };
        b.restart();
        b
    }

    pub fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        // `user root`: started as root (CI), mosquitto would switch to its own user and lose
        // access to this folder; started as anyone else, the line has no effect.
        // `max_queued_messages`: the broker's default of 1000 per offline subscriber would drop
        // the backlog the sink sends after an outage before mosquitto_sub is back.
        let mut text = format!(
            "user root\nlistener {} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 10000000\n",
            self.port
        );
        if self.quiet {
            // The broker's own count of PUBLISH packets received, published every second
            // (`$SYS/broker/publish/messages/received`): a benchmark checks what arrived.
            text += "sys_interval 1\n";
        } else {
            text += &format!(
                "persistence true\npersistence_location {}/\nlog_dest file {}\nlog_type all\n",
                self.dir.display(),
                self.log_path().display()
            );
        }
        text += &self.listener;
        std::fs::write(&conf, text).unwrap();
        let child =
            Command::new(mosquitto()).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !listening(("127.0.0.1", self.port)) {
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker the way a service stop does (SIGTERM: it saves its persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Waits (bounded) until the broker's log shows that it has taken the subscription of the
    /// client `client_id` (its SUBACK sent): from then on every message published on the
    /// filter reaches that client. A subscriber started and given a fixed time instead misses
    /// the first messages on a loaded machine. Needs the log ([`Broker::start`]).
    pub fn wait_subscribed(&self, client_id: &str) {
        wait_in_broker_log(&self.log_path(), &format!("Sending SUBACK to {client_id}"));
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("mosquitto.log")
    }

    pub fn log(&self) -> String {
        broker_log(&self.log_path())
    }
}

/// A mosquitto log file as it stands (bytes that are not UTF-8 replaced, not dropped).
fn broker_log(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Waits (bounded, 20 s) until a line of the mosquitto log at `path` (`log_type all`) ends with
/// `line_end`: "Sending SUBACK to CLIENT" once the broker has taken that client's
/// subscription, "mosquitto version V running" once it listens on all its listeners.
pub fn wait_in_broker_log(path: &Path, line_end: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !broker_log(path).lines().any(|l| l.ends_with(line_end)) {
        assert!(Instant::now() < deadline, "no line ending in {line_end:?} in the broker's log:\n{}", broker_log(path));
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Messages a subscriber received, `(topic, payload)`, in order of arrival.
pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// `mosquitto_sub -v ARGS`, its `topic payload` lines collected as they arrive (on a thread).
pub fn mosquitto_sub(args: &[&str]) -> (Child, Received) {
    use std::io::BufRead;
    let mut child = Command::new("mosquitto_sub")
        .arg("-v")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub (package mosquitto-clients) is not installed");
    let stdout = child.stdout.take().unwrap();
    let received = Received::default();
    let r = std::sync::Arc::clone(&received);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((topic, payload)) = line.split_once(' ') {
                r.lock().unwrap().push((topic.to_owned(), payload.to_owned()));
            }
        }
    });
    (child, received)
}

/// The asyncua test server (`scripts/peers/opcua_server.py PORT DIR ARGS`), killed when dropped.
pub struct OpcUaPeer {
    child: Child,
    /// The SHA-1 thumbprint of its certificate, lowercase hex.
    pub thumbprint: String,
    pub dir: PathBuf,
}

impl OpcUaPeer {
    /// Starts it and waits until it listens.
    pub fn start(dir: &Path, port: u16, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(python())
            .arg(peer_script("opcua_server.py"))
            .arg(port.to_string())
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let thumbprint = line
            .split("\"thumbprint\": \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("the OPC UA peer did not start: {line:?}"))
            .to_owned();
        Self { child, thumbprint, dir: dir.to_owned() }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The service requests it received, by type name (`ReadRequest`, `WriteRequest`, ...).
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("requests.log")).unwrap_or_default().lines().map(str::to_owned).collect()
    }
}

impl Drop for OpcUaPeer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// User plus system CPU seconds of this process so far (Linux, `/proc`).
pub fn cpu_seconds() -> f64 {
    cpu_seconds_at("/proc/self/stat")
}

/// User plus system CPU seconds of this process so far, to the nanosecond (its CPU clock; the
/// `/proc` figure counts in 10 ms ticks, too coarse for a run of a fraction of a second).
pub fn cpu_seconds_precise() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// CPU seconds of the calling thread so far, to the nanosecond (its CPU clock).
pub fn thread_cpu_seconds_precise() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// The CPU time (user + system) another process has used so far, in seconds (Linux, `/proc`).
pub fn cpu_seconds_of(pid: u32) -> f64 {
    cpu_seconds_at(&format!("/proc/{pid}/stat"))
}

/// CPU seconds (user + system) of this process's threads named `name` (Linux, `/proc`).
pub fn thread_cpu_seconds(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
        .map(|t| cpu_seconds_at(&t.path().join("stat").to_string_lossy()))
        .sum()
}

fn cpu_seconds_at(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The peak resident set size of this process, in MB (Linux, `/proc`).
pub fn peak_rss_mb() -> f64 {
    status_mb("/proc/self/status", "VmHWM:")
}

/// The resident set size of this process now, in MB (Linux, `/proc`).
pub fn rss_mb() -> f64 {
    status_mb("/proc/self/status", "VmRSS:")
}

/// The peak resident set size of process `pid` so far, in MB (0 once it has gone).
pub fn peak_rss_mb_of(pid: u32) -> f64 {
    status_mb(&format!("/proc/{pid}/status"), "VmHWM:")
}

/// The resident set size of process `pid` now, in MB.
pub fn rss_mb_of(pid: u32) -> f64 {
    status_mb(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn status_mb(path: &str, field: &str) -> f64 {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is not installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// In `dir`, made with openssl (installed by `./scripts/test`): a CA (`ca.pem`, `ca.key`), a
/// server certificate for 127.0.0.1 (`server.pem`, `server.key`) and a client certificate
/// (`client.pem`, `client.key`) signed by it; and a second CA (`other-ca.pem`) that signed
/// nothing.
pub fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "other-ca"] {
        let (key, pem, subj) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=airlock test {ca}"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
        openssl(dir, &args);
    }
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem, ext, subj) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
            format!("/CN=airlock test {who}"),
        );
        let mut args = vec!["req"];
        args.extend(ec);
        args.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &args);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

/// Upstream records for tests that feed an outbox by hand.
pub mod netns;

pub mod records {
    use airlock_model::{AssetPath, Quality, Severity, Timestamp, Transition, Value, ValueType};
    use airlock_upstream::{EventRecord, SampleRecord, Upstream};

    /// A good sample of the tag at `path` (an asset path), of `value_type`, at `time`.
    pub fn sample(path: &str, value_type: ValueType, value: Value, time: Timestamp) -> Upstream {
        Upstream::Sample(SampleRecord {
            path: AssetPath::parse(path).expect("a test's asset path"),
            value_type,
            unit: None,
            value: Some(value),
            quality: Quality::Good,
            source_time: None,
            gateway_time: time,
        })
    }

    /// The typical upstream record the benchmarks use: a condensed sample of the demo's press
    /// speed (a 47-character asset path, unit, f64 value), 158 bytes as the JSON it used to be.
    pub fn press_speed() -> Upstream {
        let time = Timestamp::parse_rfc3339("2026-11-28T12:32:45.538Z").expect("a valid time");
        let path = "acme/dortmund/pressing/line3/cell1/press1/speed";
        match sample(path, ValueType::F64, Value::F64(1479.9998779296875), time) {
            Upstream::Sample(s) => Upstream::Sample(SampleRecord { unit: Some("rpm".into()), ..s }),
            other => other,
        }
    }

    /// A bad sample, no value known.
    pub fn bad_sample(path: &str, value_type: ValueType, time: Timestamp) -> Upstream {
        Upstream::Sample(SampleRecord {
            path: AssetPath::parse(path).expect("a test's asset path"),
            value_type,
            unit: None,
            value: None,
            quality: Quality::Bad(airlock_model::Reason::CommsLost),
            source_time: None,
            gateway_time: time,
        })
    }

    /// A one-off event of `kind` with `message` and the number `n` in its body.
    pub fn event(kind: &str, message: &str, n: f64, time: Timestamp) -> Upstream {
        Upstream::Event(EventRecord {
            time,
            asset: AssetPath::parse("acme/dortmund/pressing/line3/cell1/press1").expect("a valid path"),
            kind: kind.into(),
            severity: Severity::Info,
            state: Transition::Once,
            message: message.into(),
            body: vec![("n".into(), n)],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_listens_only_when_a_listener_is_there() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(listening(("127.0.0.1", port)));
        drop(listener);
        // Nobody listens: refused (or, rarely, met itself), never "listening".
        for _ in 0..200 {
            assert!(!listening(("127.0.0.1", port)));
        }
    }
}
