//! The `airlock` command as a user meets it: `check` on good and bad configs, `run` refusing a
//! bad config before starting anything, and `demo` running by itself and writing upstream records.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::PathBuf;
use std::process::{Command, Output};

fn airlock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock")).args(args).output().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const BAD: &str = r#"[[device]]
name = "press1"
asset_path = "acme/site/area/line/cell"
protocol = "modbus_tcp"
address = "127.0.0.1:1"
poll_interval_ms = 0

[[device.tag]]
name = "speed"
space = "input_register"
address = 0
type = "f33"
"#;

#[test]
fn check_and_run_refuse_a_bad_config_naming_file_line_and_key() {
    let dir = temp_dir("bad");
    let file = dir.join("bad.toml");
    std::fs::write(&file, BAD).unwrap();
    for args in [vec!["check", file.to_str().unwrap()], vec!["run", file.to_str().unwrap(), "--duration", "1s"]] {
        let out = airlock(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("2 problems"), "{stderr}");
        assert!(stderr.contains("bad.toml:6:20: key `device[press1].poll_interval_ms`"), "{stderr}");
        assert!(
            stderr.contains("bad.toml:12:8: key `device[press1].tag[speed].type`: unknown data type \"f33\""),
            "{stderr}"
        );
        assert!(!stderr.contains("running"), "nothing may start: {stderr}");
    }
    let out = airlock(&["check", dir.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the file"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_demo_finds_the_wearing_bearings_outer_race_defect() {
    // At 10000x a simulated day passes in 8.6 s: press2's bearing wears fastest, and its
    // outer-race tone (BPFO, 3.585 times the shaft speed) grows out of its baseline.
    let dir = temp_dir("bearing");
    let out = airlock(&["demo", "--duration", "15s", "--speed", "10000", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.join("upstream.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let raised: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["kind"] == "bearing_defect" && r["state"] == "raised").collect();
    let press2 = raised
        .iter()
        .find(|r| r["asset"].as_str().unwrap().ends_with("/press2/bearing_accel"))
        .unwrap_or_else(|| panic!("no bearing defect on press2 in {raised:?}"));
    assert_eq!(press2["defect"], 0.0, "the outer race: {press2}");
    assert!(press2["message"].as_str().unwrap().contains("outer race defect (BPFO"), "{press2}");
    // At the shaft speed of the moment: 1480 rpm, or 12 % less once press2 has slowed down.
    let hz = press2["frequency_hz"].as_f64().unwrap();
    let bpfo = 3.585 * 1480.0 / 60.0;
    assert!((hz - bpfo).abs() < 0.5 || (hz - 0.88 * bpfo).abs() < 0.5, "{hz} Hz");
    assert!(press2["amplitude"].as_f64().unwrap() >= 2.0 * press2["baseline"].as_f64().unwrap());
    // Only outer-race defects: the simulated bearing has no other.
    assert!(raised.iter().all(|r| r["defect"] == 0.0), "{raised:?}");
}

#[test]
fn the_demo_runs_by_itself_and_writes_upstream_records() {
    let dir = temp_dir("demo");
    let out = airlock(&["demo", "--duration", "2s", "--speed", "3000", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("upstream.jsonl"), "the demo prints where its upstream file is: {stdout}");
    let text = std::fs::read_to_string(dir.join("upstream.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.len() >= 48, "only {} records", records.len());
    let topics: std::collections::BTreeSet<&str> = records.iter().map(|r| r["topic"].as_str().unwrap()).collect();
    for machine in ["press1", "press2", "press3", "wrapper"] {
        let topic = format!("acme/dortmund/pressing/line3/cell1/{machine}/model");
        assert!(topics.contains(topic.as_str()), "{topic} missing");
    }
    // The machines' OEE figures (on the plant's clock, a rolling figure comes every few
    // seconds at this speed) are records of the machine, not tags.
    let tag_topics: Vec<&&str> =
        topics.iter().filter(|t| t.starts_with("acme/") && !t.contains('.') && !t.ends_with("/oee")).collect();
    // Every tag of every machine reported, but the part counters (their production goes up
    // instead) and the bearing waveforms (only a growing defect does); and the line
    // controller's seven tags, read over OPC UA.
    assert_eq!(tag_topics.len(), 44 + 7, "{tag_topics:?}");
    for tag in ["output", "power", "all_running", "press2_speed"] {
        let topic = format!("acme/dortmund/pressing/line3/{tag}");
        assert!(topics.contains(topic.as_str()), "{topic} (OPC UA) missing");
    }
    assert!(tag_topics.iter().all(|t| !t.ends_with("/parts_wrap") && !t.ends_with("/bearing_accel")));
    let model = records.iter().find(|r| r["topic"].as_str().unwrap().ends_with("press2/model")).unwrap();
    assert_eq!(model["value"], "PRESS2");
    let samples: Vec<&serde_json::Value> =
        records.iter().filter(|r| !r["topic"].as_str().unwrap().starts_with("_airlock")).collect();
    assert!(samples.iter().all(|r| r["quality"] == "good"), "the simulated plant reads good");
    let ids: std::collections::BTreeSet<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), records.len(), "ids are unique");
    // Condensed series (deadband, swinging door) and plain changes come in their classes; the
    // demo's part counters say how many parts were made.
    let class_of = |topic: &str| {
        records.iter().find(|r| r["topic"] == topic).map(|r| r["id"].as_str().unwrap().chars().nth(5).unwrap())
    };
    assert_eq!(class_of("acme/dortmund/pressing/line3/cell1/press1/speed"), Some('s'), "deadband: series");
    assert_eq!(class_of("acme/dortmund/pressing/line3/cell1/press1/state"), Some('r'), "no condensing: raw changes");
    let parts = records.iter().filter(|r| r["kind"] == "parts_produced").count();
    assert!(parts >= 1, "at 3000x a press makes 1000 parts in 2 s");
    // The config the demo wrote is one `check` accepts.
    let out = airlock(&["check", dir.join("demo.toml").to_str().unwrap()]);
    assert!(out.status.success());
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(summary.contains("5 devices, 59 tags"), "{summary}");
    assert!(summary.contains("web: read-only dashboard on http://127.0.0.1:"), "{summary}");

    // What the demo read is in its historian, and `query` finds it.
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let out = airlock(&["query", "--data", data, "--tags"]);
    let tags = String::from_utf8_lossy(&out.stdout);
    assert_eq!(tags.lines().count(), 60, "a header and 59 tags (waveforms too, with no samples stored):\n{tags}");
    let out = airlock(&["query", "--data", data, "--tag", "press2/model", "--csv"]);
    assert!(out.status.success());
    // The demo's historian holds the plant's time: from the top of the hour it started, as many
    // plant hours as ran (the gateway's clock runs as fast as the plant).
    let (from, to) = ("-2h", "2200-01-01");
    let out = airlock(&["query", "--data", data, "--tag", "press1/running", "--from", from, "--to", to, "--csv"]);
    let rows = String::from_utf8_lossy(&out.stdout);
    assert!(rows.starts_with("time,value,quality\n"), "{rows}");
    assert!(rows.lines().count() >= 3, "at 5 polls a second for 2 s:\n{rows}");
    assert!(rows.lines().skip(1).all(|l| l.ends_with(",good")), "{rows}");
    let out = airlock(&["query", "--data", data, "--tag", "press1/power", "--from", from, "--every", "1m", "--csv"]);
    let agg = String::from_utf8_lossy(&out.stdout);
    assert!(agg.starts_with("start,count,min,max,avg,first,last,twa\n"), "{agg}");
    // The demo states power's `historian_resolution` (0.01 kW): the gateway's historian holds
    // the f32 readings rounded to it.
    let out = airlock(&["query", "--data", data, "--tag", "press1/power", "--from", from, "--to", to, "--csv"]);
    let raw = String::from_utf8_lossy(&out.stdout);
    let power: Vec<f64> = raw.lines().skip(1).filter_map(|l| l.split(',').nth(1)?.parse().ok()).collect();
    assert!(power.len() >= 3, "{raw}");
    assert!(power.iter().all(|kw| (kw * 100.0 - (kw * 100.0).round()).abs() < 1e-6), "{raw}");
    // And printed as such: two decimals at most, not a product's last bits (0.5700000000000001).
    let decimals = |l: &str| l.split(',').nth(1).and_then(|v| v.split('.').nth(1)).map_or(0, str::len);
    assert!(raw.lines().skip(1).all(|l| decimals(l) <= 2), "{raw}");
    let out = airlock(&["query", "--data", data, "--tag", "speed"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("matches 4 tags"));
    let csv = dir.join("export.csv");
    let out = airlock(&["export", "--data", data, "--from", from, "--to", to, "--out", csv.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported = std::fs::read_to_string(&csv).unwrap();
    assert!(exported.lines().count() > 44 * 3, "{} rows", exported.lines().count());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_demo_leaves_the_store_of_a_running_gateway_alone() {
    let dir = temp_dir("demo-locked");
    let outbox = dir.join("data/outbox");
    // This test process holds the outbox, as a running gateway would.
    let (mut writer, _reader) =
        airlock_store::OutboxWriter::open(&outbox, airlock_store::OutboxConfig::default()).unwrap();
    writer.append_encoded(airlock_store::Class::Event, airlock_model::Timestamp(0), b"kept").unwrap();
    writer.sync().unwrap();
    let out = airlock(&["demo", "--dir", dir.to_str().unwrap(), "--duration", "1s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is in use by a running airlock"), "{stderr}");
    assert!(outbox.join("LOCK").exists() && outbox.join("events").exists(), "the running gateway's store is untouched");
    drop(writer);
    std::fs::remove_dir_all(&dir).unwrap();
}

const DEVICE: &str = r#"
[[device]]
name = "press1"
asset_path = "acme/site/area/line/cell"
protocol = "modbus_tcp"
address = "127.0.0.1:1"
poll_interval_ms = 10

[[device.tag]]
name = "speed"
space = "input_register"
address = 0
type = "u16"
"#;

/// Diode mode's bad input: each refused by `check` with file, line and key, saying why; a rate
/// cap too low for the devices warned.
#[test]
fn check_refuses_a_bad_diode_or_receive_config_and_warns_of_a_slow_diode() {
    let dir = temp_dir("diode-check");
    std::fs::write(dir.join("short.key"), b"too short").unwrap();
    let cases: [(&str, String, &[&str]); 10] = [
        (
            "short-key",
            format!("{DEVICE}\n[[sink]]\nname = \"d\"\ntype = \"diode\"\naddress = \"10.0.0.2:7000\"\nkey_file = \"short.key\"\n"),
            &[":19:12: key `sink[d].key_file`:", "short.key holds 9 bytes; a diode key needs at least 16"],
        ),
        (
            "missing-key",
            "[receive]\nlisten = \"0.0.0.0:7000\"\nsender = \"press-gw\"\nkey_file = \"nowhere.key\"\n[store]\ndata_dir = \"d\"\n\
             [[sink]]\nname = \"f\"\ntype = \"jsonl\"\npath = \"f.jsonl\"\n"
                .into(),
            &[":4:12: key `receive.key_file`: cannot read", "nowhere.key"],
        ),
        (
            "key-on-mqtt",
            format!("{DEVICE}\n[[sink]]\nname = \"m\"\ntype = \"mqtt\"\nurl = \"mqtt://broker\"\nkey_file = \"short.key\"\n"),
            &["key `sink[m].key_file`"],
        ),
        (
            "heartbeat-above-the-mtu",
            format!(
                "[gateway]\nname = \"dortmund-pressing-line3-cell1-gateway-a\"\n{DEVICE}\n[[sink]]\nname = \"d\"\ntype = \"diode\"\naddress = \"10.0.0.2:7000\"\nmtu_bytes = 128\n"
            ),
            &[
                "key `sink[d].mtu_bytes`: 128 is too small for a heartbeat of gateway \"dortmund-pressing-line3-cell1-gateway-a\": it needs 149 bytes",
            ],
        ),
        (
            "huge-block",
            format!(
                "{DEVICE}\n[[sink]]\nname = \"d\"\ntype = \"diode\"\naddress = \"10.0.0.2:7000\"\nmtu_bytes = 128\nblock_bytes = 16777216\n"
            ),
            &["key `sink[d].block_bytes`: 16777216 is more than one block can hold at mtu_bytes = 128"],
        ),
        (
            "tiny-mtu",
            format!(
                "{DEVICE}\n[[sink]]\nname = \"d\"\ntype = \"diode\"\naddress = \"10.0.0.2:7000\"\nmtu_bytes = 100\n"
            ),
            &[":19:13: key `sink[d].mtu_bytes`: 100 is below 128: a datagram needs 28 bytes of IP and UDP headers"],
        ),
        (
            "host-name",
            format!("{DEVICE}\n[[sink]]\nname = \"d\"\ntype = \"diode\"\naddress = \"it-host:7000\"\n"),
            &[":18:11: key `sink[d].address`: \"it-host:7000\" is not ip:port (a diode side takes an IP address"],
        ),
        (
            "no-store-no-sink",
            "[receive]\nlisten = \"0.0.0.0:7000\"\nsender = \"press-gw\"\n".into(),
            &["needs a [store]", "needs at least one [[sink]]"],
        ),
        (
            "receive-with-device-and-diode",
            format!(
                "[receive]\nlisten = \"0.0.0.0:7000\"\nsender = \"press-gw\"\n[store]\ndata_dir = \"d\"\n{DEVICE}\n\
                 [[sink]]\nname = \"d\"\ntype = \"diode\"\naddress = \"10.0.0.2:7000\"\n"
            ),
            &["key `device`: a receiving half reads no devices", "key `sink[d].type`: a receiving half cannot send on"],
        ),
        (
            "receive-in-gateway",
            format!("{DEVICE}\n[receive]\nlisten = \"0.0.0.0:7000\"\nsender = \"x\"\n"),
            &["key `receive`: [receive] belongs in the receiving half's config"],
        ),
    ];
    for (name, text, expected) in cases {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        // `check` takes a file with [receive] as a receiving half's; `run` takes any as a gateway's.
        let command = if name == "receive-in-gateway" { "run" } else { "check" };
        let out =
            airlock(&[command, file.to_str().unwrap(), "--duration", "1s"][..if command == "run" { 4 } else { 2 }]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{name}: expected {e:?} in:\n{stderr}");
        }
    }
    // Valid, but 100 polls a second cannot go through a diode capped at 10 kB/s.
    let slow = dir.join("slow.toml");
    let text = format!(
        "[gateway]\nname = \"press-gw\"\n{DEVICE}\n[[sink]]\nname = \"d\"\ntype = \"diode\"\naddress = \"10.0.0.2:7000\"\nrate_max_bytes_per_s = 10000\n"
    );
    std::fs::write(&slow, &text).unwrap();
    let out = airlock(&["check", slow.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("warning: sink d: if every tag changed at every poll"), "{stdout}");
    std::fs::write(&slow, text.replace("rate_max_bytes_per_s = 10000", "rate_max_bytes_per_s = 1000000")).unwrap();
    let out = airlock(&["check", slow.to_str().unwrap()]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("warning: sink d"));
    // A good receiving half's file.
    let good = dir.join("receive.toml");
    std::fs::write(
        &good,
        "[receive]\nlisten = \"0.0.0.0:7000\"\nsender = \"press-gw\"\n[store]\ndata_dir = \"d\"\n\
         [[sink]]\nname = \"f\"\ntype = \"jsonl\"\npath = \"up.jsonl\"\n",
    )
    .unwrap();
    let out = airlock(&["check", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the receiving half of a diode, listening on 0.0.0.0:7000"));
    // Without a key, whoever reaches the listening address can forge records: said plainly.
    assert!(stdout.contains("warning: no key_file: a forged datagram"), "{stdout}");
    // The same, its table header written another way TOML allows (it was taken for a
    // gateway's config, and refused for having a [receive]).
    let receiving = std::fs::read_to_string(&good).unwrap();
    for header in
        ["[receive]   # the IT half", "[ receive ]", "receive = { listen = \"0.0.0.0:7000\", sender = \"press-gw\" }"]
    {
        let other = dir.join("receive-other.toml");
        let body = match header.starts_with("receive =") {
            true => receiving.replace("[receive]\nlisten = \"0.0.0.0:7000\"\nsender = \"press-gw\"", header),
            false => receiving.replace("[receive]", header),
        };
        std::fs::write(&other, body).unwrap();
        let out = airlock(&["check", other.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{header}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains("the receiving half of a diode"), "{header}: {stdout}");
    }
    // `diode resend` writes its request beside the sink's cursor, and refuses what is not an id
    // or a time.
    let out = airlock(&["diode", "resend", slow.to_str().unwrap(), "--from", "r12"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let request = std::fs::read_to_string(dir.join("airlock-data/outbox/cursors/d.rewind")).unwrap();
    assert_eq!(request.trim(), "r12");
    let out = airlock(&["diode", "resend", slow.to_str().unwrap(), "--from", "yesterday"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a record id"));
    // It asks a diode sink only: another sink named is refused, saying why, and no request
    // is written; a config without a diode sink is told so (not to name one).
    let mixed = dir.join("mixed.toml");
    std::fs::write(&mixed, format!("{text}\n[[sink]]\nname = \"erp\"\ntype = \"jsonl\"\npath = \"erp.jsonl\"\n"))
        .unwrap();
    let out = airlock(&["diode", "resend", mixed.to_str().unwrap(), "--from", "r12", "--sink", "erp"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("sink \"erp\" is a jsonl sink, not a diode"), "{stderr}");
    assert!(!dir.join("airlock-data/outbox/cursors/erp.rewind").exists());
    let plain = dir.join("plain.toml");
    std::fs::write(&plain, format!("{DEVICE}\n[[sink]]\nname = \"erp\"\ntype = \"jsonl\"\npath = \"erp.jsonl\"\n"))
        .unwrap();
    let out = airlock(&["diode", "resend", plain.to_str().unwrap(), "--from", "r12"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has no diode sink"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_diode_demo_carries_the_records_through_the_receiving_half() {
    let dir = temp_dir("demo-diode");
    let out = airlock(&["demo", "--diode", "--duration", "3s", "--speed", "3000", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("IT half (receive):"), "{stdout}");
    let text = std::fs::read_to_string(dir.join("upstream.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.len() >= 48, "only {} records through the diode", records.len());
    // Under the OT gateway's name and ids, as without a diode.
    assert!(records.iter().all(|r| r["id"].as_str().unwrap().starts_with("demo-")), "{records:?}");
    assert!(!records.iter().any(|r| r["kind"] == "diode_gap"), "nothing is lost on loopback");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_default_demo_reaches_the_three_conclusions_within_90_seconds() {
    // At the default settings (600x, the gateway on the plant's clock): parts produced, press2's
    // performance drop (it slows 12 % after three plant hours) and advice to order a bearing
    // (press2's bearing wears fastest) all go upstream within a minute and a half.
    let dir = temp_dir("conclusions");
    let out = airlock(&["demo", "--duration", "90s", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.join("upstream.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let raised = |kind: &str, asset_end: &str, words: &str| {
        records.iter().any(|r| {
            r["kind"] == kind
                && r["state"] != "cleared"
                && r["asset"].as_str().unwrap().ends_with(asset_end)
                && r["message"].as_str().unwrap().contains(words)
        })
    };
    assert!(raised("parts_produced", "/press1", "press1 produced 1000 parts this shift"), "no parts");
    assert!(raised("performance_drop", "/press2", "press2 performance down"), "no performance drop");
    assert!(raised("maintenance_advice", "/press2/vibration", "order a bearing within"), "no maintenance advice");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_demos_at_once_each_get_a_dashboard() {
    // Found by CI: demos started together each saw port 8080 free, and the later one failed to
    // start. The demo now binds its dashboard's port itself (8080, or a free one) and keeps it.
    let dirs = [temp_dir("twin-a"), temp_dir("twin-b"), temp_dir("twin-c")];
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            Command::new(env!("CARGO_BIN_EXE_airlock"))
                .args(["demo", "--duration", "3s", "--speed", "3000", "--dir", d.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut urls = std::collections::BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let url = stdout.lines().find(|l| l.starts_with("dashboard: http://")).unwrap().to_owned();
        urls.insert(url);
    }
    assert_eq!(urls.len(), 3, "{urls:?}");
    for d in dirs {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn json_logs_are_one_object_a_line_naming_the_device() {
    let dir = temp_dir("json-log");
    let file = dir.join("plant.toml");
    let config = format!(
        "[store]\ndata_dir = \"{}\"\n\n[[device]]\nname = \"press1\"\nasset_path = \"acme/press1\"\nprotocol = \"modbus_tcp\"\n\
         address = \"127.0.0.1:1\"\n\n[[device.tag]]\nname = \"speed\"\nspace = \"input_register\"\naddress = 0\ntype = \"u16\"\n",
        dir.join("data").display()
    );
    std::fs::write(&file, config).unwrap();
    let by_flag = airlock(&["--log-format", "json", "run", file.to_str().unwrap(), "--duration", "2s"]);
    let by_env = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["run", file.to_str().unwrap(), "--duration", "2s"])
        .env("AIRLOCK_LOG_FORMAT", "json")
        .output()
        .unwrap();
    for out in [by_flag, by_env] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
            .collect();
        assert!(lines.iter().all(|l| l["time"].is_string() && l["level"].is_string() && l["message"].is_string()));
        assert!(
            lines.iter().any(|l| l["device"] == "press1" && l["level"] == "warn"),
            "no warning naming the device: {stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn status_reads_a_running_gateway_from_its_data_folder_and_knows_when_it_stopped() {
    let dir = temp_dir("status");
    let data = dir.join("data");
    let file = dir.join("plant.toml");
    let config = format!(
        "[gateway]\nname = \"line1\"\n\n[store]\ndata_dir = \"{}\"\n\n[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"{}\"\n\n\
         [[device]]\nname = \"press1\"\nasset_path = \"acme/press1\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:1\"\n\n\
         [[device.tag]]\nname = \"speed\"\nspace = \"input_register\"\naddress = 0\ntype = \"u16\"\n",
        data.display(),
        dir.join("up.jsonl").display()
    );
    std::fs::write(&file, config).unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["run", file.to_str().unwrap(), "--duration", "8s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let data_arg = data.to_str().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let running = loop {
        let out = airlock(&["status", "--data", data_arg]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && stdout.contains("press1") {
            break stdout;
        }
        assert!(std::time::Instant::now() < deadline, "no running status: {stdout}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(running.starts_with("gateway line1: running (pid "), "{running}");
    assert!(running.contains("press1"), "{running}");
    assert!(running.contains("file ") && running.contains("jsonl"), "{running}");
    let json = airlock(&["status", "--data", data_arg, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(status["devices"][0]["name"], "press1");
    assert_ne!(status["devices"][0]["state"], "up", "nothing listens on port 1");
    assert_eq!(status["sinks"][0]["name"], "file");
    assert!(status["store"]["outbox_bytes_max"].as_u64().unwrap() > 0);

    // The gateway stops: its last word says so, and status exits 1.
    assert!(gateway.wait().unwrap().success());
    let out = airlock(&["status", "--data", data_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("line1: stopped at "), "{out:?}");
    assert!(!data.join("status.json.tmp").exists());

    // A gateway killed without a word leaves a file that grows old: not running.
    let path = data.join("status.json");
    let mut old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    old["running"] = true.into();
    old["written_unix_ms"] = (old["written_unix_ms"].as_i64().unwrap() - 60_000).into();
    std::fs::write(&path, old.to_string()).unwrap();
    let out = airlock(&["status", "--data", data_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT RUNNING"), "{out:?}");

    // No gateway ever ran here: a clear error.
    let out = airlock(&["status", "--data", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("status.json"), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_reloads_on_sighup_refuses_a_bad_config_and_stops_on_sigterm() {
    let dir = temp_dir("sighup");
    let file = dir.join("plant.toml");
    let device = |name: &str| {
        format!(
            "\n[[device]]\nname = \"{name}\"\nasset_path = \"acme/{name}\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:1\"\n\n\
             [[device.tag]]\nname = \"speed\"\nspace = \"input_register\"\naddress = 0\ntype = \"u16\"\n"
        )
    };
    let head = format!("[store]\ndata_dir = \"{}\"\n", dir.join("data").display());
    std::fs::write(&file, format!("{head}{}", device("press1"))).unwrap();
    let log = dir.join("airlock.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["run", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let signal = |name: &str| {
        assert!(Command::new("kill").args([name, &child.id().to_string()]).status().unwrap().success());
    };
    let wait_for = |text: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let seen = std::fs::read_to_string(&log).unwrap_or_default();
            if seen.contains(text) {
                return seen;
            }
            assert!(std::time::Instant::now() < deadline, "no {text:?} in the log:\n{seen}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    wait_for("running 1 devices");
    std::fs::write(&file, format!("{head}{}{}", device("press1"), device("press2"))).unwrap();
    signal("-HUP");
    wait_for("config reloaded: devices added: press2; 1 devices unchanged");
    std::fs::write(&file, format!("{head}{}poll_interval_ms = 0\n", device("press1"))).unwrap();
    signal("-HUP");
    let seen = wait_for("config reload refused");
    assert!(seen.contains("plant.toml:") && seen.contains("poll_interval_ms"), "{seen}");
    signal("-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    wait_for("stopped");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `airlock receive` of a receiving half's config in `dir` (a JSON Lines sink), with `args`, its
/// output not a terminal: the child, and the file its log goes to.
fn receiving_half(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, PathBuf) {
    let file = dir.join("it.toml");
    std::fs::write(
        &file,
        "[receive]\nlisten = \"127.0.0.1:0\"\nsender = \"press-gw\"\n\n[store]\ndata_dir = \"it-data\"\n\n\
         [[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"it.jsonl\"\n",
    )
    .unwrap();
    let log = dir.join("receive.log");
    let child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["receive", file.to_str().unwrap()])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (child, log)
}

#[test]
fn receive_stops_cleanly_on_sigterm() {
    let dir = temp_dir("receive-term");
    let (mut child, log) = receiving_half(&dir, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("receiving for") {
        assert!(std::time::Instant::now() < deadline, "the receiver did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", std::fs::read_to_string(&log).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `receive --duration 1s` with its output not a terminal stops after about a second (it
/// looked at the deadline only at its log line, every 5 s), and cleanly.
#[test]
fn receive_stops_at_its_duration() {
    let dir = temp_dir("receive-duration");
    let (mut child, log) = receiving_half(&dir, &["--duration", "1s"]);
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "receive --duration 1s still runs after 15 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let ran = started.elapsed();
    assert!(status.success(), "{status:?}: {}", std::fs::read_to_string(&log).unwrap());
    // Its start included; the old tick ended it at 5 s.
    assert!(ran < std::time::Duration::from_millis(4000), "ran {ran:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A command whose reader has gone (`airlock import ... | head -1`) ends quietly, as a Unix
/// tool a closed pipe ends (exit code 141, as killed by SIGPIPE): Rust's `print!` panicked
/// there, with a backtrace hint on standard error.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::process::Stdio;
    let dir = temp_dir("closed-pipe");
    // Some 3,000 tags: more than a pipe holds, so the writer meets the closed end whenever
    // it starts.
    let mut csv = String::from("name,address,type\n");
    for i in 0..3000 {
        csv += &format!("register_{i},{},u16\n", 40001 + i);
    }
    let map = dir.join("map.csv");
    std::fs::write(&map, csv).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["import", "modbus-csv", map.to_str().unwrap(), "--device", "plc", "--address", "10.0.0.5:502"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `query` of a folder that holds no historian says so once, in words (it said "open the
/// historian in X: open the historian in X: entity not found: entity not found").
#[test]
fn query_of_a_folder_without_a_historian_says_so() {
    let dir = temp_dir("no-historian");
    let out = airlock(&["query", "--data", dir.to_str().unwrap(), "--tag", "speed"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no historian here; is this a gateway's data folder"), "{stderr}");
    assert_eq!(stderr.matches(dir.to_str().unwrap()).count(), 1, "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}
