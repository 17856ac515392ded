//! Reloading a running gateway's config (what `airlock run` does on SIGHUP), against the
//! simulated press line: a reload that adds a third device and changes a tag's deadband on the
//! second leaves the first polling without a gap (its historian samples keep their cadence
//! across the reload), starts the third, and the new deadband takes effect; a reload that needs
//! a restart, and one that is not a valid config, change nothing. Then `airlock run` itself
//! takes a SIGHUP.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::Path;
use std::time::Duration;

use airlock::gateway::Gateway;
use airlock_model::Timestamp;
use serde_json::Value as Json;

fn device(name: &str, address: &str, power_keys: &str) -> String {
    format!(
        "\n[[device]]\nname = \"{name}\"\nasset_path = \"acme/line3\"\nprotocol = \"modbus_tcp\"\naddress = \"{address}\"\n\
         poll_interval_ms = 50\nrate_max_per_s = 200\n\n[[device.tag]]\nname = \"power\"\nspace = \"input_register\"\naddress = 4\ntype = \"f32\"\n{power_keys}\
         [[device.tag]]\nname = \"state\"\nspace = \"holding_register\"\naddress = 5\ntype = \"u16\"\n"
    )
}

fn records(file: &Path) -> Vec<Json> {
    std::fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn a_reload_adds_a_device_changes_a_deadband_and_the_others_poll_on_without_a_gap() {
    let dir = std::env::temp_dir().join(format!("airlock-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let opts = airlock_sim::SimOptions { speed: 600.0, opcua: false, ..Default::default() };
    let sim = runtime.block_on(airlock_sim::start(&opts)).unwrap();
    let addr = |i: usize| sim.servers[i].1.addr.to_string();
    let (upstream, upstream2) = (dir.join("up.jsonl"), dir.join("up2.jsonl"));
    let head = |file: &Path| {
        format!(
            "[gateway]\nname = \"line3\"\n\n[store]\ndata_dir = \"{}\"\n\n[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"{}\"\n",
            dir.join("data").display(),
            file.display()
        )
    };
    let before = format!("{}{}{}", head(&upstream), device("press1", &addr(0), ""), device("press2", &addr(1), ""));
    // The sink writes to another file from now on: it restarts and resumes from its cursor.
    let after = format!(
        "{}{}{}{}",
        head(&upstream2),
        device("press1", &addr(0), ""),
        device("press2", &addr(1), "deadband = 1000000.0\n"),
        device("press3", &addr(2), "")
    );
    let parse = |text: &str| airlock_config::parse(text, Path::new("plant.toml")).unwrap_or_else(|e| panic!("{e}"));

    runtime.block_on(async {
        let start = Timestamp::now();
        let mut gateway = Gateway::start(parse(&before)).unwrap();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let (press1, press2) = (std::sync::Arc::clone(&gateway.health[0]), std::sync::Arc::clone(&gateway.health[1]));
        let reloaded_at = Timestamp::now();
        let summary = gateway.reload(parse(&after)).await.unwrap();
        assert_eq!(
            summary,
            "devices added: press3; devices restarted: press2; sinks restarted: file; 1 devices unchanged"
        );
        assert_eq!(gateway.config.devices.len(), 3);
        // press1's task is the one it had (a new task would have a new health), press2's is new.
        assert!(std::sync::Arc::ptr_eq(&press1, &gateway.health[0]), "press1 was restarted");
        assert!(!std::sync::Arc::ptr_eq(&press2, &gateway.health[1]), "press2 was not restarted");
        assert_eq!(press1.restarts.load(std::sync::atomic::Ordering::Relaxed), 0);
        tokio::time::sleep(Duration::from_millis(2000)).await;

        // What needs a restart is refused, and so is a config with a problem: nothing changes.
        let renamed = after.replace("name = \"line3\"", "name = \"line4\"");
        let refused = gateway.reload(parse(&renamed)).await.unwrap_err();
        assert!(refused.contains("[gateway] changed"), "{refused}");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, after.replace("poll_interval_ms = 50", "poll_interval_ms = -5")).unwrap();
        assert!(!gateway.reload_from(&bad).await);
        assert_eq!(gateway.config.devices.len(), 3);
        assert_eq!(gateway.config.gateway.name, "line3");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let end = Timestamp::now();
        let historian = gateway.historian.clone();
        gateway.stop().await;

        // press1 never stopped: its samples keep their cadence across the reload (every
        // sample is in the historian; a poll every 50 ms, a gap of 300 ms would be a restart).
        let samples = historian.raw("acme/line3/press1/power", start, end).unwrap();
        assert!(samples.len() > 50, "{} samples", samples.len());
        let widest = samples.windows(2).map(|w| w[1].time.0 - w[0].time.0).max().unwrap();
        assert!(widest < 300_000_000, "a gap of {} ms in press1's samples", widest / 1_000_000);
        let around: Vec<&airlock_store::StoredSample> =
            samples.iter().filter(|s| (s.time.0 - reloaded_at.0).abs() < 500_000_000).collect();
        assert!(around.len() >= 10, "{} samples within 0.5 s of the reload", around.len());
        assert!(samples.iter().all(|s| s.quality.is_good()), "press1 never went bad");

        // The sink went on in its new file from where it stood: every raw record id from the
        // first to the last is in one file or the other (none lost at the restart).
        let (first_file, second_file) = (records(&upstream), records(&upstream2));
        assert!(!first_file.is_empty() && !second_file.is_empty());
        let raw: std::collections::BTreeSet<u64> = first_file
            .iter()
            .chain(&second_file)
            .filter_map(|r| r["id"].as_str()?.strip_prefix("line3-r")?.parse().ok())
            .collect();
        let (lowest, highest) = (*raw.first().unwrap(), *raw.last().unwrap());
        assert_eq!(raw.len() as u64, highest - lowest + 1, "raw ids missing between {lowest} and {highest}");
        // At least once: a record written and not yet acknowledged when the sink stopped is
        // written again by the new one, with the same id. One of each.
        let mut seen = std::collections::HashSet::new();
        let up: Vec<Json> = first_file
            .into_iter()
            .chain(second_file)
            .filter(|r| seen.insert(r["id"].as_str().unwrap().to_owned()))
            .collect();

        // press3 appeared, upstream and in the historian.
        assert!(up.iter().any(|r| r["topic"] == "acme/line3/press3/power"), "no press3 record upstream");
        assert!(!historian.raw("acme/line3/press3/power", reloaded_at, end).unwrap().is_empty());
        // press2's power went up at every change before (class raw, ids r..); with the new
        // deadband (class series, ids s..), only its first sample after the restart. The old
        // task polls until the reload stops it, so its records are told by class, not by time.
        let press2: Vec<&Json> = up.iter().filter(|r| r["topic"] == "acme/line3/press2/power").collect();
        let (old, new): (Vec<&Json>, Vec<&Json>) =
            press2.iter().partition(|r| r["id"].as_str().unwrap().starts_with("line3-r"));
        assert!(old.len() > 5, "{} changes of press2/power before the reload", old.len());
        // (A quality change passes any deadband: under load a poll may time out, and the bad
        // sample and the good one after it both go up. Two good ones in a row may not.)
        let good_after_good = new.windows(2).any(|w| w[0]["quality"] == "good" && w[1]["quality"] == "good");
        assert!(!good_after_good, "the deadband did not take effect: {new:#?}");
        // The reload is said upstream, and so is the refusal.
        let kinds: Vec<&str> = up.iter().filter_map(|r| r["topic"].as_str()).collect();
        assert!(kinds.contains(&"_airlock/events/config_reloaded"), "{kinds:?}");
        assert!(kinds.contains(&"_airlock/events/config_reload_refused"), "{kinds:?}");
    });
    sim.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two reloads in a row: the first removes the device before press2 (its tag ids move down), the
/// second adds press3 after it. press2's task, started under the first config, keeps emitting
/// the ids it started with; both reloads must route them to press2's tags (a route computed from
/// its position after the first reload sent them to press3's).
#[test]
fn a_device_kept_through_two_reloads_keeps_its_own_tags() {
    let dir = std::env::temp_dir().join(format!("airlock-reload-twice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let opts = airlock_sim::SimOptions { speed: 600.0, opcua: false, ..Default::default() };
    let sim = runtime.block_on(airlock_sim::start(&opts)).unwrap();
    let addr = |i: usize| sim.servers[i].1.addr.to_string();
    let head = format!("[gateway]\nname = \"line3\"\n\n[store]\ndata_dir = \"{}\"\n", dir.join("data").display());
    let parse = |text: &str| airlock_config::parse(text, Path::new("plant.toml")).unwrap_or_else(|e| panic!("{e}"));
    let first = format!("{head}{}{}", device("press1", &addr(0), ""), device("press2", &addr(1), ""));
    let second = format!("{head}{}", device("press2", &addr(1), ""));
    let third = format!("{head}{}{}", device("press2", &addr(1), ""), device("press3", &addr(2), ""));
    runtime.block_on(async {
        let mut gateway = Gateway::start(parse(&first)).unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(gateway.reload(parse(&second)).await.unwrap(), "devices removed: press1; 1 devices unchanged");
        tokio::time::sleep(Duration::from_millis(800)).await;
        let press2 = std::sync::Arc::clone(&gateway.health[0]);
        assert_eq!(gateway.reload(parse(&third)).await.unwrap(), "devices added: press3; 1 devices unchanged");
        assert!(std::sync::Arc::ptr_eq(&press2, &gateway.health[0]), "press2 kept its task");
        let settled = Timestamp::now();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let end = Timestamp::now();
        let historian = gateway.historian.clone();
        let latest = gateway.latest.lock().unwrap().clone();
        gateway.stop().await;
        let press2_samples = historian.raw("acme/line3/press2/power", settled, end).unwrap();
        assert!(press2_samples.len() > 10, "press2's samples after the second reload: {}", press2_samples.len());
        // press3 holds press3's samples only: as many as press2's, not twice as many.
        let press3_samples = historian.raw("acme/line3/press3/power", settled, end).unwrap();
        assert!(
            press3_samples.len() < press2_samples.len() * 3 / 2,
            "{} vs {}",
            press3_samples.len(),
            press2_samples.len()
        );
        assert!(latest.iter().all(Option::is_some), "every tag of the new table has a latest value: {latest:?}");
    });
    sim.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
