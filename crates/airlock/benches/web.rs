//! The dashboard's cost, in one run:
//! 1. page weight: the overview of the demo (5 devices) with its style sheet and script;
//! 2. the gateway's CPU and resident memory while 10 dashboards are open (each fetching its
//!    page at the page's refresh interval: 4 overviews, 2 tag browsers, 2 trends, events,
//!    ledger), against the same gateway with none, `airlock demo` a child process;
//! 3. a 7-day trend of a 1 Hz tag (604,800 samples): the server's time to draw it, against a
//!    raw read of the same samples from the historian, and (with selenium and Chromium from
//!    the test setup) the time until Chromium has drawn the page.
//!
//! Run: `cargo bench -p airlock --bench web` (`-- 20` for 20-second CPU windows).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use airlock_model::{Clock, CollectorHealth, Quality, Sample, TagId, Timestamp, Value, ValueType};
use airlock_store::{HistorianConfig, HistorianWriter, OutboxConfig, OutboxWriter};
use airlock_testkit::http_get as get;

/// CPU seconds (user + system) and resident bytes of process `pid`.
fn usage(pid: u32) -> (f64, f64) {
    (airlock_testkit::cpu_seconds_of(pid), airlock_testkit::rss_mb_of(pid) * 1024.0 * 1024.0)
}

fn main() {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("airlock-bench-web-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    println!("web benchmark ({seconds}-second CPU windows)");

    // 1 and 2: the demo's dashboard.
    let mut demo = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["demo", "--duration", &format!("{}s", 3 * seconds + 30), "--web", "127.0.0.1:0", "--dir"])
        .arg(dir.join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = demo.id();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(at) = line.find("http://127.0.0.1:") {
            break line[at + 7..].split('/').next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    std::thread::sleep(Duration::from_secs(5));
    let weight: usize = ["/", "/static/app.css", "/static/app.js"].iter().map(|p| get(&address, p).1.len()).sum();
    let trend_page = get(&address, "/trend?tag=press1/speed&range=1h").1.len();
    println!(
        "  page weight: overview {:.1} KB with its style sheet and script (target < 200 KB); a 1-hour trend page {:.1} KB",
        weight as f64 / 1000.0,
        trend_page as f64 / 1000.0
    );
    let window = Duration::from_secs(seconds);
    let (cpu0, _) = usage(pid);
    std::thread::sleep(window);
    let (cpu1, rss_none) = usage(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let pages: [(&str, u64); 10] = [
        ("/", 2),
        ("/", 2),
        ("/", 2),
        ("/", 2),
        ("/tags", 2),
        ("/tags", 2),
        ("/trend?tag=press1/speed&range=1h", 5),
        ("/trend?tag=press2/vibration&range=1h", 5),
        ("/events", 2),
        ("/ledger", 5),
    ];
    let fetched = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = pages
        .iter()
        .map(|(page, every)| {
            let (stop, address, fetched, page, every) =
                (Arc::clone(&stop), address.clone(), Arc::clone(&fetched), page.to_string(), *every);
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    assert_eq!(get(&address, &page).0, 200);
                    fetched.fetch_add(1, Relaxed);
                    std::thread::sleep(Duration::from_secs(every));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let (cpu2, _) = usage(pid);
    std::thread::sleep(window);
    let (cpu3, rss_ten) = usage(pid);
    stop.store(true, Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let idle = (cpu1 - cpu0) / window.as_secs_f64();
    let busy = (cpu3 - cpu2) / window.as_secs_f64();
    println!(
        "  gateway CPU (the demo: 5 devices, 600x): {:.2} % of a core with no dashboard, {:.2} % with 10 open ({} page loads): {:.2}x",
        idle * 100.0,
        busy * 100.0,
        fetched.load(Relaxed),
        busy / idle
    );
    println!(
        "  gateway resident memory: {:.1} MB with no dashboard, {:.1} MB with 10 open (+{:.1} MB)",
        rss_none / 1e6,
        rss_ten / 1e6,
        (rss_ten - rss_none) / 1e6
    );
    let _ = demo.kill();
    let _ = demo.wait();

    // 3: a 7-day trend of a 1 Hz tag.
    let data = dir.join("week");
    let (mut writer, historian) = HistorianWriter::open(&data.join("historian"), HistorianConfig::default()).unwrap();
    let path = "acme/site/area/line/cell/press1/speed";
    writer.bind_tags(&[path]).unwrap();
    let week_s: i64 = 7 * 86_400;
    let end = Timestamp::now().as_millis() / 1000 * 1000;
    let start = end - week_s * 1000;
    let started = Instant::now();
    for chunk in (0..week_s).collect::<Vec<_>>().chunks(3600) {
        let samples: Vec<Sample> = chunk
            .iter()
            .map(|s| {
                let t = start + s * 1000;
                let v = 1480.0 + 40.0 * ((*s as f64) / 3600.0).sin() + ((s * 7919) % 13) as f64;
                Sample {
                    tag: TagId(0),
                    value: Some(Value::F64(v)),
                    quality: Quality::Good,
                    source_time: None,
                    gateway_time: Timestamp::from_millis(t),
                }
            })
            .collect();
        writer.append(&samples).unwrap();
        writer.commit().unwrap();
    }
    writer.sync().unwrap();
    // A week of samples is in compressed chunks on disk, as in a running gateway.
    writer.checkpoint().unwrap();
    println!("  a week of 1 Hz samples ({week_s}) written in {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_outbox, outbox) = OutboxWriter::open(&data.join("outbox"), OutboxConfig::default()).unwrap();
    let dashboard = airlock_web::Dashboard {
        gateway: "bench".into(),
        clock: Clock::simulated(Timestamp::from_millis(end), 1.0),
        devices: Vec::new(),
        tags: Arc::new([airlock_web::TagView {
            path: path.into(),
            name: "speed".into(),
            unit: Some("rpm".into()),
            device: 0,
            value_type: ValueType::F64,
        }]),
        latest: Arc::default(),
        collector: Arc::new(CollectorHealth::default()),
        sinks: Vec::new(),
        outbox: outbox.view(),
        historian: historian.clone(),
        budgets: airlock_web::Budgets { outbox_bytes_max: 1 << 30, historian_bytes_max: 10 << 30 },
        started: Instant::now(),
    };
    let config = airlock_config::Web { listen: "127.0.0.1:0".parse().unwrap(), token_env: None, tls: None };
    let web = runtime.block_on(async { airlock_web::start(&config, dashboard) }).unwrap();
    let address = web.address.to_string();
    let target = "/trend?tag=press1/speed&range=7d";
    let mut server_ms = Vec::new();
    let mut size = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let (status, body) = get(&address, target);
        server_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200);
        size = body.len();
    }
    let mut raw_ms = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let n = historian.raw(path, Timestamp::from_millis(start), Timestamp::from_millis(end + 1)).unwrap().len();
        raw_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(n as i64, week_s);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (server, raw) = (median(&mut server_ms), median(&mut raw_ms));
    println!(
        "  7-day trend of a 1 Hz tag: the server draws it in {server:.0} ms ({:.1} KB page, 336 buckets of 30 min) against {raw:.0} ms to read the week's samples raw: {:.2}x",
        size as f64 / 1000.0,
        server / raw
    );
    // Chromium: from navigation to the page drawn, with the chart in it.
    let python = airlock_testkit::python();
    let script = airlock_testkit::peer_script("trend_timing.py");
    match Command::new(&python).arg(&script).arg(format!("http://{address}{target}")).arg("7").output() {
        Ok(out) if out.status.success() => {
            print!("  {}", String::from_utf8_lossy(&out.stdout));
        }
        Ok(out) => {
            println!("  Chromium timing failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""))
        }
        Err(e) => println!("  Chromium timing skipped: {}: {e}", python.display()),
    }
    runtime.block_on(web.stop());
    let _ = std::fs::remove_dir_all(&dir);
}
