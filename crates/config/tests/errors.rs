//! One test per kind of config problem: each asserts the line, the key and the gist of the
//! message, through one `check` helper.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::Path;

use airlock_config::{ConfigError, DataType, Protocol, Space, WordOrder, parse};

const DEVICE: &str = r#"
[[device]]
name = "press1"
asset_path = "acme/dortmund/pressing/line3/cell1"
protocol = "modbus_tcp"
address = "127.0.0.1:502"
"#;

const TAG: &str = r#"
[[device.tag]]
name = "speed"
space = "input_register"
address = 0
type = "f32"
"#;

/// Parses `text` (as `plant.toml`) and expects exactly `expected` problems, each as
/// (line, key, a fragment of the message).
fn check(text: &str, expected: &[(usize, &str, &str)]) {
    let errors = match parse(text, Path::new("plant.toml")) {
        Ok(_) => panic!("expected {} problems, got none in:\n{text}", expected.len()),
        Err(e) => e.0,
    };
    let got: Vec<(usize, &str, &str)> = errors.iter().map(|e| (e.line, e.key.as_str(), e.message.as_str())).collect();
    assert_eq!(errors.len(), expected.len(), "problems: {got:#?}");
    for (e, (line, key, fragment)) in errors.iter().zip(expected) {
        assert_eq!((e.line, e.key.as_str()), (*line, *key), "{e}");
        assert!(e.message.contains(fragment), "{e:?} does not say {fragment:?}");
        assert!(e.to_string().starts_with(&format!("plant.toml:{line}:")), "{e}");
        assert!(e.column > 0, "{e}");
    }
}

/// The line number (1-based) of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1).unwrap_or_else(|| panic!("{needle:?} not in text"))
}

fn with(device_extra: &str, tags: &str) -> String {
    format!("{DEVICE}{device_extra}{tags}")
}

#[test]
fn a_good_config_validates_into_typed_values() {
    let text = with("poll_interval_ms = 250\nrate_max_per_s = 5\n", TAG);
    let config = parse(&text, Path::new("plant.toml")).unwrap();
    let d = &config.devices[0];
    assert_eq!(d.path.as_str(), "acme/dortmund/pressing/line3/cell1/press1");
    assert_eq!(d.poll_interval.as_millis(), 250);
    assert_eq!(d.rate_max_per_s, 5.0);
    let Protocol::ModbusTcp(m) = &d.protocol else { panic!("not a Modbus device") };
    assert_eq!(m.tags[0].space, Space::InputRegister);
    assert_eq!(m.tags[0].data_type, DataType::F32);
    assert_eq!(m.tags[0].order, WordOrder::Abcd);
    assert_eq!(m.tags[0].path.as_str(), "acme/dortmund/pressing/line3/cell1/press1/speed");
    assert_eq!(config.gateway.name, "airlock");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text = with("pol_interval_ms = 100\n", TAG);
    check(&text, &[(line_of(&text, "pol_interval"), "pol_interval_ms", "unknown field `pol_interval_ms`")]);
}

#[test]
fn syntax_errors_name_the_line() {
    let text = with("timeout_ms = = 3\n", TAG);
    let errors = parse(&text, Path::new("plant.toml")).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, line_of(&text, "timeout_ms"));
}

#[test]
fn wrong_value_types_are_refused() {
    let text = with("timeout_ms = \"fast\"\n", TAG);
    check(&text, &[(line_of(&text, "timeout_ms"), "timeout_ms", "invalid type")]);
    // Said in a plant engineer's words, not Rust's (i64, f64, i128).
    let text = with("timeout_ms = \"500\"\n", TAG);
    check(&text, &[(line_of(&text, "timeout_ms"), "timeout_ms", "expected a whole number")]);
    let text = with("timeout_ms = 99999999999999999999\n", TAG);
    check(&text, &[(line_of(&text, "timeout_ms"), "timeout_ms", "expected a whole number")]);
    let text = with("", &TAG.replace("type = ", "scale = \"x\"\ntype = "));
    check(&text, &[(line_of(&text, "scale"), "scale", "expected a number")]);
    for text in [with("timeout_ms = \"500\"\n", TAG), with("timeout_ms = 99999999999999999999\n", TAG)] {
        let said = parse(&text, Path::new("plant.toml")).unwrap_err().to_string();
        assert!(!said.contains("i64") && !said.contains("i128") && !said.contains("f64"), "{said}");
    }
}

#[test]
fn duplicate_tag_names() {
    let text = with("", &format!("{TAG}{}", TAG.replace("address = 0", "address = 10")));
    let second = text.match_indices("name = \"speed\"").nth(1).map(|(i, _)| text[..i].lines().count() + 1).unwrap();
    check(&text, &[(second, "device[press1].tag[speed].name", "already used on this device on line")]);
}

#[test]
fn duplicate_device_names() {
    let text = format!("{DEVICE}{TAG}{DEVICE}{TAG}");
    let second = text.match_indices("name = \"press1\"").nth(1).map(|(i, _)| text[..i].lines().count() + 1).unwrap();
    check(&text, &[(second, "device.name", "already used on line 3")]);
}

#[test]
fn overlapping_registers() {
    let tags =
        format!("{TAG}\n[[device.tag]]\nname = \"power\"\nspace = \"input_register\"\naddress = 1\ntype = \"u16\"\n");
    let text = with("", &tags);
    check(
        &text,
        &[(
            line_of(&text, "address = 1"),
            "device[power].tag[power].address".replace("device[power]", "device[press1]").as_str(),
            "overlaps tag \"speed\" (0..2)",
        )],
    );
}

#[test]
fn registers_past_the_last_address() {
    let text = with("", &TAG.replace("address = 0", "address = 65535"));
    check(
        &text,
        &[(line_of(&text, "address = 65535"), "device[press1].tag[speed].address", "runs past the last address")],
    );
    let text = with("", &TAG.replace("address = 0", "address = 70000"));
    check(&text, &[(line_of(&text, "address = 70000"), "device[press1].tag[speed].address", "out of range 0..=65535")]);
}

#[test]
fn unknown_data_types_spaces_and_orders() {
    let text = with("", &TAG.replace("\"f32\"", "\"f33\"").replace("address = 0", "address = 0\norder = \"bcda\""));
    check(
        &text,
        &[
            (line_of(&text, "order ="), "device[press1].tag[speed].order", "unknown value \"bcda\""),
            (line_of(&text, "f33"), "device[press1].tag[speed].type", "unknown data type \"f33\""),
        ],
    );
    let text = with("", &TAG.replace("input_register", "input_registers"));
    check(
        &text,
        &[(
            line_of(&text, "input_registers"),
            "device[press1].tag[speed].space",
            "expected one of coil, discrete_input",
        )],
    );
}

#[test]
fn zero_poll_interval_and_timeout() {
    let text = with("poll_interval_ms = 0\ntimeout_ms = 0\n", TAG);
    check(
        &text,
        &[
            (line_of(&text, "poll_interval_ms"), "device[press1].poll_interval_ms", "zero is not allowed"),
            (line_of(&text, "timeout_ms"), "device[press1].timeout_ms", "zero is not allowed"),
        ],
    );
}

#[test]
fn zero_or_negative_rate_caps() {
    let text = with("rate_max_per_s = 0\n", TAG);
    check(&text, &[(line_of(&text, "rate_max"), "device[press1].rate_max_per_s", "must be at least 0.001")]);
    let text = with("rate_max_per_s = -3.5\n", TAG);
    check(&text, &[(line_of(&text, "rate_max"), "device[press1].rate_max_per_s", "must be at least 0.001")]);
}

#[test]
fn types_must_fit_their_space() {
    let text = with("", &TAG.replace("input_register", "coil"));
    check(&text, &[(line_of(&text, "f32"), "device[press1].tag[speed].type", "must be bool")]);
    let text = with("", &TAG.replace("\"f32\"", "\"bool\""));
    check(&text, &[(line_of(&text, "bool"), "device[press1].tag[speed].bit", "needs bit")]);
    let text = with("", &TAG.replace("address = 0", "address = 0\nbit = 3"));
    check(&text, &[(line_of(&text, "bit = 3"), "device[press1].tag[speed].bit", "only for type bool")]);
}

#[test]
fn strings_need_a_length() {
    let text = with("", &TAG.replace("\"f32\"", "\"string\""));
    check(&text, &[(line_of(&text, "string"), "device[press1].tag[speed].length_chars", "needs length_chars")]);
    let text = with("", &TAG.replace("\"f32\"", "\"string\"\nlength_chars = 300"));
    check(&text, &[(line_of(&text, "length_chars"), "device[press1].tag[speed].length_chars", "out of range 1..=250")]);
}

#[test]
fn bad_names_paths_addresses_and_protocols() {
    let text = DEVICE
        .replace("\"press1\"", "\"press 1\"")
        .replace("cell1\"", "cell1/x/y\"")
        .replace("modbus_tcp", "profinet")
        .replace(":502", "")
        + TAG;
    check(
        &text,
        &[
            (line_of(&text, "press 1"), "device[press 1].name", "not a valid name"),
            (line_of(&text, "asset_path"), "device[press 1].asset_path", "more than 5 segments"),
            (line_of(&text, "profinet"), "device[press 1].protocol", "unknown protocol"),
            (line_of(&text, "address = \"127"), "device[press 1].address", "is not host:port"),
        ],
    );
}

#[test]
fn unit_id_gaps_and_backoff_ranges() {
    let text = with("unit_id = 256\nmax_gap_registers = 200\nbackoff_initial_ms = 5000\nbackoff_max_ms = 100\n", TAG);
    check(
        &text,
        &[
            (line_of(&text, "unit_id"), "device[press1].unit_id", "out of range 0..=255"),
            (line_of(&text, "max_gap"), "device[press1].max_gap_registers", "out of range 0..=124"),
            (line_of(&text, "backoff_max"), "device[press1].backoff_max_ms", "less than backoff_initial_ms"),
        ],
    );
}

#[test]
fn requests_in_flight_are_one_to_sixteen() {
    for bad in ["0", "17", "-1"] {
        let text = with(&format!("requests_in_flight_max = {bad}\n"), TAG);
        check(
            &text,
            &[(line_of(&text, "requests_in_flight"), "device[press1].requests_in_flight_max", "out of range 1..=16")],
        );
    }
    for (setting, expected) in [("", 1), ("requests_in_flight_max = 16\n", 16)] {
        let config = airlock_config::parse(&with(setting, TAG), std::path::Path::new("t.toml")).unwrap();
        let airlock_config::Protocol::ModbusTcp(m) = &config.devices[0].protocol else { panic!("a Modbus device") };
        assert_eq!(m.requests_in_flight_max, expected, "{setting:?}");
    }
}

#[test]
fn scale_must_be_finite_and_not_zero() {
    let text = with("", &TAG.replace("address = 0", "address = 0\nscale = 0.0\noffset = nan"));
    check(
        &text,
        &[
            (line_of(&text, "scale"), "device[press1].tag[speed].scale", "would erase every value"),
            (line_of(&text, "offset"), "device[press1].tag[speed].offset", "not a finite number"),
        ],
    );
}

#[test]
fn a_historian_resolution_is_in_its_range_and_for_numbers_only() {
    let text = with("", &TAG.replace("address = 0", "address = 0\nhistorian_resolution = 0.01"));
    let config = parse(&text, Path::new("plant.toml")).unwrap();
    assert_eq!(config.devices[0].tags[0].historian_resolution, Some(0.01));
    assert_eq!(parse(&with("", TAG), Path::new("plant.toml")).unwrap().devices[0].tags[0].historian_resolution, None);
    let flag = "[[device.tag]]\nname = \"running\"\nspace = \"coil\"\naddress = 0\ntype = \"bool\"\nhistorian_resolution = 1\n";
    for bad in ["0.0", "-0.5", "inf", "0.0000000001", "2e9"] {
        let text =
            with("", &(TAG.replace("address = 0", &format!("address = 0\nhistorian_resolution = {bad}")) + flag));
        check(
            &text,
            &[
                (
                    line_of(&text, &format!("= {bad}")),
                    "device[press1].tag[speed].historian_resolution",
                    "at least 0.000000001 and at most 1000000000",
                ),
                (
                    line_of(&text, "historian_resolution = 1"),
                    "device[press1].tag[running].historian_resolution",
                    "only for a numeric tag",
                ),
            ],
        );
    }
}

#[test]
fn a_config_without_devices_or_tags() {
    let errors = parse("[gateway]\nname = \"x\"\n", Path::new("plant.toml")).unwrap_err().0;
    assert_eq!(errors.len(), 1);
    assert!(errors[0].message.contains("no [[device]]"));
    check(DEVICE, &[(3, "device[press1].tag", "has no [[device.tag]]")]);
}

#[test]
fn several_errors_are_all_reported_in_file_order() {
    let tags = format!("{}{}", TAG.replace("\"f32\"", "\"float\""), TAG.replace("address = 0", "address = -1"));
    let text = with("poll_interval_ms = 0\nrate_max_per_s = 0\n", &tags);
    let errors: Vec<ConfigError> = parse(&text, Path::new("plant.toml")).unwrap_err().0;
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    let text_of_all: String = errors.iter().map(|e| format!("{e}\n")).collect();
    for fragment in
        ["poll_interval_ms", "rate_max_per_s", "unknown data type \"float\"", "already used", "out of range 0..=65535"]
    {
        assert!(text_of_all.contains(fragment), "{fragment:?} missing from:\n{text_of_all}");
    }
}

#[test]
fn store_and_sinks_resolve_paths_against_the_config_folder() {
    let text = format!(
        "[store]\ndata_dir = \"data\"\nfsync_interval_ms = 0\noutbox_bytes_max = 2097152\n\n\
         [[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"/var/log/up.jsonl\"\n\n\
         [[sink]]\nname = \"local\"\ntype = \"jsonl\"\npath = \"up.jsonl\"\n{DEVICE}{TAG}"
    );
    let config = parse(&text, Path::new("/etc/airlock/plant.toml")).unwrap();
    assert_eq!(config.store.data_dir, Path::new("/etc/airlock/data"));
    assert_eq!(config.store.fsync_interval.as_millis(), 0);
    assert_eq!(config.store.outbox_bytes_max, 2 << 20);
    assert_eq!(config.store.outbox_age_max.as_secs(), 168 * 3600, "default: a week");
    let paths: Vec<_> = config
        .sinks
        .iter()
        .map(|s| match &s.kind {
            airlock_config::SinkKind::Jsonl { path } => path.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        paths,
        vec![Path::new("/var/log/up.jsonl").to_path_buf(), Path::new("/etc/airlock/up.jsonl").to_path_buf()]
    );
    let defaults = parse(&with("", TAG), Path::new("plant.toml")).unwrap();
    assert_eq!(defaults.store.data_dir, Path::new("airlock-data"));
    assert!(defaults.sinks.is_empty());
}

#[test]
fn bad_store_and_sink_settings() {
    let text = format!(
        "[store]\nfsync_interval_ms = -1\noutbox_bytes_max = 1000\n\n\
         [[sink]]\nname = \"a\"\ntype = \"amqp\"\n\n\
         [[sink]]\nname = \"a\"\ntype = \"jsonl\"\n{DEVICE}{TAG}"
    );
    check(
        &text,
        &[
            (2, "store.fsync_interval_ms", "out of range 0..=60000"),
            (3, "store.outbox_bytes_max", "out of range 1048576"),
            (7, "sink[a].type", "unknown sink type \"amqp\""),
            (10, "sink[a].name", "already used on line 6"),
            (11, "sink[a].path", "needs path"),
        ],
    );
}

#[test]
fn an_mqtt_sink_with_its_defaults() {
    let text = format!(
        "[[sink]]\nname = \"uns\"\ntype = \"mqtt\"\nurl = \"mqtt://broker.plant:8884\"\nusername = \"airlock\"\n\
         password_file = \"secret/mqtt.pass\"\nallow_plain_credentials = true\ntopic_prefix = \"uns/\"\n{DEVICE}{TAG}"
    );
    let config = parse(&text, Path::new("/etc/airlock/plant.toml")).unwrap();
    let airlock_config::SinkKind::Mqtt(m) = &config.sinks[0].kind else { panic!() };
    assert_eq!((m.host.as_str(), m.port, m.tls), ("broker.plant", 8884, false));
    assert_eq!(m.qos, 1);
    assert_eq!(m.client_id, "airlock-uns");
    assert_eq!(m.topic_prefix, "uns/");
    assert_eq!(m.password, Some(airlock_config::Secret::File("/etc/airlock/secret/mqtt.pass".into())));
    assert_eq!(m.inflight_max, 100);
    let plain = format!("[[sink]]\nname = \"b\"\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1\"\n{DEVICE}{TAG}");
    let config = parse(&plain, Path::new("plant.toml")).unwrap();
    let airlock_config::SinkKind::Mqtt(m) = &config.sinks[0].kind else { panic!() };
    assert_eq!((m.port, m.tls, m.password.clone()), (1883, false, None));
}

#[test]
fn bad_mqtt_sink_settings() {
    let text = format!(
        "[[sink]]\nname = \"a\"\ntype = \"mqtt\"\nurl = \"http://x\"\nqos = 2\npassword_env = \"P\"\npath = \"x.jsonl\"\n\n\
         [[sink]]\nname = \"b\"\ntype = \"mqtt\"\n{DEVICE}{TAG}"
    );
    check(
        &text,
        &[
            (4, "sink[a].url", "is not mqtt://host"),
            (5, "sink[a].qos", "out of range 0..=1"),
            (6, "sink[a].username", "a password needs a username"),
            (7, "sink[a].path", "is only for a sink of type jsonl"),
            (11, "sink[b].url", "needs url"),
        ],
    );
}

#[test]
fn mqtt_over_tls_with_a_ca_and_a_client_certificate() {
    let text = format!(
        "[[sink]]\nname = \"a\"\ntype = \"mqtt\"\nurl = \"mqtts://broker\"\nca_file = \"ca.pem\"\n\
         client_cert_file = \"me.pem\"\nclient_key_file = \"me.key\"\n{DEVICE}{TAG}"
    );
    let config = parse(&text, Path::new("/etc/airlock/plant.toml")).unwrap();
    let airlock_config::SinkKind::Mqtt(m) = &config.sinks[0].kind else { panic!() };
    assert_eq!((m.tls, m.port), (true, 8883));
    assert_eq!(m.ca_file.as_deref(), Some(Path::new("/etc/airlock/ca.pem")));
    assert_eq!(m.client_cert, Some(("/etc/airlock/me.pem".into(), "/etc/airlock/me.key".into())));
    let bad = format!(
        "[[sink]]\nname = \"a\"\ntype = \"mqtt\"\nurl = \"mqtt://broker\"\nca_file = \"ca.pem\"\n\n\
         [[sink]]\nname = \"b\"\ntype = \"mqtt\"\nurl = \"mqtts://broker\"\nclient_key_file = \"me.key\"\n{DEVICE}{TAG}"
    );
    check(
        &bad,
        &[
            (5, "sink[a].ca_file", "is only for a TLS connection"),
            (11, "sink[b].client_cert_file", "needs both client_cert_file and client_key_file"),
        ],
    );
}

#[test]
fn an_http_sink_and_its_mistakes() {
    let good = format!(
        "[[sink]]\nname = \"erp\"\ntype = \"http\"\nurl = \"https://erp.example/hook\"\nclasses = [\"events\", \"aggregates\"]\n{DEVICE}{TAG}"
    );
    let config = parse(&good, Path::new("plant.toml")).unwrap();
    let airlock_config::SinkKind::Http(h) = &config.sinks[0].kind else { panic!() };
    assert_eq!(h.classes, vec!["events", "aggregates"]);
    assert_eq!((h.batch_records_max, h.timeout.as_millis()), (100, 10_000));
    let bad = format!(
        "[[sink]]\nname = \"erp\"\ntype = \"http\"\nurl = \"ftp://x\"\nclasses = [\"alarms\"]\nqos = 1\nbatch_records_max = 0\n{DEVICE}{TAG}"
    );
    check(
        &bad,
        &[
            (4, "sink[erp].url", "is not an http:// or https:// URL"),
            (5, "sink[erp].classes", "unknown class \"alarms\""),
            (6, "sink[erp].qos", "is only for a sink of type mqtt"),
            (7, "sink[erp].batch_records_max", "out of range 1..=10000"),
        ],
    );
}

#[test]
fn a_sparkplug_sink_and_its_mistakes() {
    let good = format!(
        "[[sink]]\nname = \"sp\"\ntype = \"sparkplug\"\nurl = \"mqtt://broker\"\ngroup_id = \"dortmund\"\n{DEVICE}{TAG}"
    );
    let config = parse(&good, Path::new("plant.toml")).unwrap();
    let airlock_config::SinkKind::Mqtt(m) = &config.sinks[0].kind else { panic!() };
    let sp = m.sparkplug.as_ref().unwrap();
    assert_eq!((sp.group_id.as_str(), sp.edge_node_id.clone(), sp.birth_interval.as_secs()), ("dortmund", None, 600));
    let bad = format!(
        "[[sink]]\nname = \"sp\"\ntype = \"sparkplug\"\nurl = \"mqtt://broker\"\ngroup_id = \"a/b\"\ntopic_prefix = \"x/\"\n\n\
         [[sink]]\nname = \"sq\"\ntype = \"sparkplug\"\nurl = \"mqtt://broker\"\n{DEVICE}{TAG}"
    );
    check(
        &bad,
        &[
            (5, "sink[sp].group_id", "is not a Sparkplug id"),
            (6, "sink[sp].topic_prefix", "is only for a sink of type mqtt"),
            (10, "sink[sq].group_id", "needs group_id"),
        ],
    );
}

#[test]
fn replay_modes() {
    let text = format!(
        "[[sink]]\nname = \"a\"\ntype = \"mqtt\"\nurl = \"mqtt://b\"\nreplay = \"live-first\"\nreplay_rate_max_per_s = 50\n{DEVICE}{TAG}"
    );
    let config = parse(&text, Path::new("plant.toml")).unwrap();
    let airlock_config::SinkKind::Mqtt(m) = &config.sinks[0].kind else { panic!() };
    assert_eq!(m.replay, airlock_config::Replay::LiveFirst { rate_max_per_s: 50.0 });
    let bad = format!(
        "[[sink]]\nname = \"a\"\ntype = \"mqtt\"\nurl = \"mqtt://b\"\nreplay = \"newest\"\n\n\
         [[sink]]\nname = \"b\"\ntype = \"mqtt\"\nurl = \"mqtt://b\"\nreplay_rate_max_per_s = 5\n{DEVICE}{TAG}"
    );
    check(
        &bad,
        &[
            (5, "sink[a].replay", "unknown replay \"newest\""),
            (11, "sink[b].replay_rate_max_per_s", "only for replay = \"live-first\""),
        ],
    );
}

#[test]
fn edge_settings_of_a_tag_and_their_mistakes() {
    let tag = TAG.replace("type = \"f32\"", "type = \"f32\"\ndeadband_percent = 2\nspan_min = 0\nspan_max = 50\nswinging_door_dev = 0.5\nwindow_s = 60\nalarm_high = 80\nalarm_hysteresis = 2\nstale_s = 30");
    let config = parse(&with("", &tag), Path::new("plant.toml")).unwrap();
    let e = &config.devices[0].tags[0].edge;
    assert_eq!(e.deadband, Some(1.0));
    assert_eq!(e.swinging_door.map(|(d, max)| (d, max.as_secs())), Some((0.5, 3600)));
    assert_eq!(e.window.map(|w| w.as_secs()), Some(60));
    let alarms = e.alarms.as_ref().unwrap();
    assert_eq!((alarms.high, alarms.hysteresis, alarms.stale.map(|s| s.as_secs())), (Some(80.0), 2.0, Some(30)));
    assert_eq!(config.edge.shift.as_secs(), 8 * 3600);

    let bad = TAG.replace("type = \"f32\"", "type = \"bool\"\nbit = 1\ndeadband = 1\nproduction = true")
        + &TAG.replace("\"speed\"", "\"temp\"").replace(
            "address = 0",
            "address = 10\nalarm_low = 9\nalarm_high = 5\nalarm_on_delay_ms = 10\ndeadband = -1",
        );
    let text = with("", &bad);
    check(
        &text,
        &[
            (line_of(&text, "deadband = 1"), "device[press1].tag[speed].deadband", "only for a numeric tag"),
            (line_of(&text, "production = true"), "device[press1].tag[speed].production", "must be an integer type"),
            (line_of(&text, "alarm_low = 9"), "device[press1].tag[temp].alarm_low", "is not below alarm_high"),
            (line_of(&text, "deadband = -1"), "device[press1].tag[temp].deadband", "finite number 0 or more"),
        ],
    );
}

/// A part counter's pace: a number above 0, and only on a tag with `production = true`.
#[test]
fn a_counters_pace_is_checked_and_kept() {
    let counter = |extra: &str| {
        TAG.replace("type = \"f32\"", &format!("type = \"u64\"\n{extra}")).replace("\"speed\"", "\"parts\"")
    };
    let config =
        parse(&with("", &counter("production = true\nproduction_parts_max_per_s = 2.5")), Path::new("p.toml")).unwrap();
    let production = config.devices[0].tags[0].edge.production.as_ref().unwrap();
    assert_eq!(production.parts_max_per_s, Some(2.5));
    let text = with("", &counter("production = true\nproduction_parts_max_per_s = 0"));
    check(
        &text,
        &[(
            line_of(&text, "production_parts_max_per_s"),
            "device[press1].tag[parts].production_parts_max_per_s",
            "above 0",
        )],
    );
    let text = with("", &counter("production_parts_max_per_s = 3"));
    check(
        &text,
        &[(
            line_of(&text, "production_parts_max_per_s"),
            "device[press1].tag[parts].production_parts_max_per_s",
            "only for a tag with production = true",
        )],
    );
}

const WAVEFORM: &str = r#"
[[device.tag]]
name = "accel"
space = "holding_register"
address = 1000
type = "waveform"
waveform_samples = 512
sample_rate_hz = 512
bearing_balls = 9
bearing_ball_diameter_mm = 7.94
bearing_pitch_diameter_mm = 39.04
shaft_speed_tag = "speed"
"#;

#[test]
fn a_waveform_with_a_bearing_validates() {
    let text = with("", &format!("{TAG}{WAVEFORM}"));
    let config = parse(&text, Path::new("plant.toml")).unwrap();
    let Protocol::ModbusTcp(m) = &config.devices[0].protocol else { panic!("not a Modbus device") };
    assert_eq!(m.tags[1].data_type, DataType::Waveform { samples: 512, rate_hz: 512 });
    assert_eq!(m.tags[1].width(), 512);
    let b = config.devices[0].tags[1].edge.bearing.as_ref().unwrap();
    assert_eq!((b.balls, b.shaft_speed_tag, b.contact_angle_deg), (9, 0, 0.0));
    assert_eq!((b.ball_diameter_mm, b.pitch_diameter_mm), (7.94, 39.04));
}

#[test]
fn bearing_and_waveform_keys_in_the_wrong_place() {
    // The shaft speed names a tag the device does not have.
    let text = with("", &format!("{TAG}{}", WAVEFORM.replace("\"speed\"", "\"rpm\"")));
    check(&text, &[(line_of(&text, "\"rpm\""), "device[press1].tag[accel].shaft_speed_tag", "no tag \"rpm\"")]);
    // Balls larger than the pitch circle.
    let text = with("", &format!("{TAG}{}", WAVEFORM.replace("39.04", "5.0")));
    check(
        &text,
        &[(line_of(&text, "= 5.0"), "device[press1].tag[accel].bearing_pitch_diameter_mm", "not larger than the ball")],
    );
    // A waveform needs its sample count; a scalar tag takes no waveform or bearing key.
    let text = with("", &WAVEFORM.replace("waveform_samples = 512\n", "").replace("shaft_speed_tag = \"speed\"\n", ""));
    let errors = parse(&text, Path::new("plant.toml")).unwrap_err().0;
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"device[press1].tag[accel].waveform_samples"), "{errors:?}");
    assert!(keys.contains(&"device[press1].tag[accel].shaft_speed_tag"), "{errors:?}");
    let text = with("", &TAG.replace("type = \"f32\"", "type = \"f32\"\nsample_rate_hz = 100\nbearing_balls = 9"));
    check(
        &text,
        &[
            (line_of(&text, "sample_rate_hz"), "device[press1].tag[speed].sample_rate_hz", "only for a waveform"),
            (line_of(&text, "bearing_balls"), "device[press1].tag[speed].bearing_balls", "waveform tag only"),
        ],
    );
}

#[test]
fn numbers_outside_a_sane_range_are_refused() {
    // A rate of 1e-30 used to pass and panic the device task (a poll every 10^30 s).
    let text = with("rate_max_per_s = 1e-30\n", TAG);
    check(&text, &[(line_of(&text, "rate_max"), "device[press1].rate_max_per_s", "at least 0.001")]);
    let text = with("rate_max_per_s = 1e9\n", TAG);
    check(&text, &[(line_of(&text, "rate_max"), "device[press1].rate_max_per_s", "at most 100000")]);
    let sinks = format!(
        "[[sink]]\nname = \"a\"\ntype = \"mqtt\"\nurl = \"mqtt://b\"\nrate_max_per_s = 1e-30\nreplay = \"live-first\"\n\
         replay_rate_max_per_s = 1e-300\n{DEVICE}{TAG}"
    );
    check(
        &sinks,
        &[(5, "sink[a].rate_max_per_s", "at least 0.001"), (7, "sink[a].replay_rate_max_per_s", "at least 0.001")],
    );
    let oee = with(
        "oee = { state_tag = \"speed\", parts_tag = \"speed\", ideal_cycle_s = 1e-300, performance_drop_percent = 500 }\n",
        TAG,
    );
    check(
        &oee,
        &[
            (line_of(&oee, "oee"), "device[press1].oee.ideal_cycle_s", "at least 0.000001"),
            (line_of(&oee, "oee"), "device[press1].oee.performance_drop_percent", "at most 100"),
        ],
    );
}

#[test]
fn credentials_over_a_plain_transport_are_refused_unless_accepted() {
    let sink = |url: &str, extra: &str| {
        format!(
            "[[sink]]\nname = \"uns\"\ntype = \"mqtt\"\nurl = \"{url}\"\nusername = \"airlock\"\n\
             password_env = \"P\"\n{extra}{DEVICE}{TAG}"
        )
    };
    let text = sink("mqtt://broker.plant", "");
    check(&text, &[(6, "sink[uns].password_env", "a password over mqtt:// to broker.plant crosses the network")]);
    for fine in [sink("mqtts://broker.plant", ""), sink("mqtt://127.0.0.1", ""), sink("mqtt://localhost:1884", "")] {
        parse(&fine, Path::new("plant.toml")).unwrap();
    }
    parse(&sink("mqtt://broker.plant", "allow_plain_credentials = true\n"), Path::new("plant.toml")).unwrap();

    let http = |url: &str| {
        format!("[[sink]]\nname = \"erp\"\ntype = \"http\"\nurl = \"{url}\"\nbearer_token_env = \"T\"\n{DEVICE}{TAG}")
    };
    let text = http("http://user@erp.example:8080/hook");
    check(&text, &[(5, "sink[erp].bearer_token_env", "a bearer token over http:// to erp.example")]);
    parse(&http("https://erp.example/hook"), Path::new("plant.toml")).unwrap();
    parse(&http("http://[::1]:8080/hook"), Path::new("plant.toml")).unwrap();

    let jsonl = format!(
        "[[sink]]\nname = \"f\"\ntype = \"jsonl\"\npath = \"x\"\nallow_plain_credentials = true\n{DEVICE}{TAG}"
    );
    check(&jsonl, &[(5, "sink[f].allow_plain_credentials", "is only for a sink of type mqtt or sparkplug or http")]);
}

#[test]
fn an_http_proxy_is_only_what_the_config_names() {
    let http = |proxy: &str| {
        format!(
            "[[sink]]\nname = \"erp\"\ntype = \"http\"\nurl = \"https://erp.example/hook\"\nproxy = \"{proxy}\"\n{DEVICE}{TAG}"
        )
    };
    let config = parse(&http("http://proxy.plant:3128"), Path::new("plant.toml")).unwrap();
    let airlock_config::SinkKind::Http(h) = &config.sinks[0].kind else { panic!() };
    assert_eq!(h.proxy.as_deref(), Some("http://proxy.plant:3128"));
    check(&http("socks5://proxy:1080"), &[(5, "sink[erp].proxy", "is not an http://host:port proxy")]);
    let mqtt =
        format!("[[sink]]\nname = \"a\"\ntype = \"mqtt\"\nurl = \"mqtt://b\"\nproxy = \"http://p:1\"\n{DEVICE}{TAG}");
    check(&mqtt, &[(5, "sink[a].proxy", "is only for a sink of type http")]);
}

#[test]
fn a_simulated_clock_names_a_bad_speed_or_start() {
    let text = format!("[gateway]\nclock_speed = 0\nclock_start = \"yesterday\"\n{DEVICE}{TAG}");
    check(
        &text,
        &[
            (2, "gateway.clock_speed", "at least 0.001"),
            (3, "gateway.clock_start", "not a time like 2026-11-29T06:00:00Z"),
        ],
    );
    let text = format!("[gateway]\nclock_speed = 600\nclock_start = \"2026-11-29T06:00:00Z\"\n{DEVICE}{TAG}");
    let config = parse(&text, Path::new("plant.toml")).unwrap();
    assert_eq!(config.gateway.clock_speed, 600.0);
    assert_eq!(config.gateway.clock_start.map(|t| t.to_string()).as_deref(), Some("2026-11-29T06:00:00.000Z"));
    let plain = parse(&format!("{DEVICE}{TAG}"), Path::new("plant.toml")).unwrap();
    assert_eq!((plain.gateway.clock_speed, plain.gateway.clock_start), (1.0, None));
}

#[test]
fn a_dashboard_reachable_from_the_network_needs_a_token_and_tls() {
    let open = format!("[web]\nlisten = \"0.0.0.0:8080\"\n{DEVICE}{TAG}");
    check(&open, &[(2, "web.listen", "set token_env"), (2, "web.listen", "set cert_file and key_file")]);
    let plain = format!(
        "[web]\nlisten = \"0.0.0.0:8080\"\ntoken_env = \"AIRLOCK_WEB_TOKEN\"\nallow_plain_http = true\n{DEVICE}{TAG}"
    );
    let web = parse(&plain, Path::new("/etc/airlock/plant.toml")).unwrap().web.unwrap();
    assert_eq!((web.listen.port(), web.token_env.as_deref(), web.tls), (8080, Some("AIRLOCK_WEB_TOKEN"), None));
    let tls = format!(
        "[web]\nlisten = \"10.0.0.5:8443\"\ntoken_env = \"T\"\ncert_file = \"web.pem\"\nkey_file = \"web.key\"\n{DEVICE}{TAG}"
    );
    let web = parse(&tls, Path::new("/etc/airlock/plant.toml")).unwrap().web.unwrap();
    assert_eq!(web.tls.unwrap().0, Path::new("/etc/airlock/web.pem"));
    let half = format!("[web]\nlisten = \"10.0.0.5:8443\"\ntoken_env = \"T\"\ncert_file = \"web.pem\"\n{DEVICE}{TAG}");
    check(&half, &[(4, "web.cert_file", "come together")]);
    let bad = format!("[web]\nlisten = \"localhost:80\"\n{DEVICE}{TAG}");
    check(&bad, &[(2, "web.listen", "not ip:port")]);
    let loopback = format!("[web]\nlisten = \"127.0.0.1:8080\"\n{DEVICE}{TAG}");
    assert!(parse(&loopback, Path::new("plant.toml")).unwrap().web.unwrap().token_env.is_none());
}

#[test]
fn a_kafka_sink_names_its_bad_keys() {
    let good = format!("{DEVICE}{TAG}\n[[sink]]\nname = \"k\"\ntype = \"kafka\"\nbrokers = [\"10.0.0.9:9092\"]\n");
    let config = parse(&good, Path::new("plant.toml")).unwrap();
    let airlock_config::SinkKind::Kafka(k) = &config.sinks[0].kind else { panic!("a kafka sink") };
    assert_eq!((k.topic.as_str(), k.lz4, k.tls, k.sasl.is_none()), ("airlock.{class}", true, false, true));
    let bad = format!(
        "{DEVICE}{TAG}\n[[sink]]\nname = \"k\"\ntype = \"kafka\"\nbrokers = [\"nohost\"]\ntopic = \"plant/{{class}}\"\n\
         compression = \"gzip\"\nsasl = \"plain\"\nusername = \"u\"\npassword_env = \"P\"\nqos = 1\n"
    );
    check(
        &bad,
        &[
            (17, "sink[k].brokers", "is not host:port"),
            (18, "sink[k].topic", "is not a Kafka topic name"),
            (19, "sink[k].compression", "compression is \"lz4\" or \"none\""),
            (20, "sink[k].sasl", "SASL PLAIN without tls = true"),
            (23, "sink[k].qos", "is only for a sink of type mqtt"),
        ],
    );
    let none = format!("{DEVICE}{TAG}\n[[sink]]\nname = \"k\"\ntype = \"kafka\"\n");
    check(&none, &[(16, "sink[k].brokers", "a kafka sink needs brokers")]);
    // Every connection goes through the sink's broker gate (a SOCKS5 proxy), and the Kafka
    // client cannot ask it for an IPv6 address: refused here, saying what to give instead.
    let ipv6 = format!("{DEVICE}{TAG}\n[[sink]]\nname = \"k\"\ntype = \"kafka\"\nbrokers = [\"[fd00::5]:9092\"]\n");
    check(&ipv6, &[(17, "sink[k].brokers", "an IPv6 address: give the broker's host name")]);
}

#[test]
fn many_tags_on_one_register_give_one_problem_each_not_one_per_pair() {
    // A generated config gone wrong: every tag at address 0. Each tag after the first is
    // named once, against the tag just before it; pairs (4.5 million here) would take minutes
    // and gigabytes to list.
    let tags: String = (0..3_000)
        .map(|i| {
            format!("[[device.tag]]\nname = \"t{i}\"\nspace = \"holding_register\"\naddress = 0\ntype = \"u16\"\n")
        })
        .collect();
    let text = with("", &tags);
    let errors = parse(&text, Path::new("plant.toml")).unwrap_err().0;
    assert_eq!(errors.len(), 2_999);
    assert_eq!(errors[0].key, "device[press1].tag[t1].address");
    assert!(errors[0].message.contains("overlaps tag \"t0\" (0..1)"), "{}", errors[0]);
    assert!(errors[2_998].message.contains("overlaps tag \"t2998\""), "{}", errors[2_998]);
}

#[test]
fn a_wide_tag_overlaps_every_tag_inside_it_and_bits_share_a_register() {
    let tag = |name: &str, address: u32, ty: &str, bit: &str| {
        format!(
            "[[device.tag]]\nname = \"{name}\"\nspace = \"holding_register\"\naddress = {address}\ntype = \"{ty}\"\n{bit}"
        )
    };
    let tags = [
        tag("wide", 10, "f64", ""),
        tag("inside", 12, "u16", ""),
        tag("also_inside", 13, "u16", ""),
        tag("after", 14, "u16", ""),
        tag("b0", 20, "bool", "bit = 0\n"),
        tag("b1", 20, "bool", "bit = 1\n"),
        tag("b1_again", 20, "bool", "bit = 1\n"),
    ]
    .concat();
    let text = with("", &tags);
    check(
        &text,
        &[
            (line_of(&text, "address = 12"), "device[press1].tag[inside].address", "overlaps tag \"wide\" (10..14)"),
            (
                line_of(&text, "address = 13"),
                "device[press1].tag[also_inside].address",
                "overlaps tag \"wide\" (10..14)",
            ),
            (line_of(&text, "b1_again") + 2, "device[press1].tag[b1_again].address", "overlaps tag \"b1\" (20..21)"),
        ],
    );
}

/// Values that parse but would switch a feature off without a word: an infinite span (the
/// deadband in percent of it is infinite, and the tag never reports a change again), a contact
/// angle or an OEE running value that is no number, shifts that do not divide the day (they
/// would start at the configured hour only every few days).
#[test]
fn values_that_would_silently_switch_a_feature_off_are_refused() {
    let refused = |text: &str, key: &str, says: &str| {
        let errors = parse(text, Path::new("plant.toml")).unwrap_err().0;
        assert!(errors.iter().any(|e| e.key == key && e.message.contains(says)), "{key} {says:?}: {errors:#?}");
    };
    let tag =
        TAG.replace("type = \"f32\"", "type = \"f32\"\ndeadband_percent = 2\nspan_min = -1e308\nspan_max = 1e308");
    refused(&with("", &tag), "device[press1].tag[speed].deadband_percent", "not a finite deadband");
    let tag = TAG.replace("type = \"f32\"", "type = \"f32\"\ndeadband_percent = 2\nspan_min = -inf\nspan_max = 5");
    refused(&with("", &tag), "device[press1].tag[speed].span_min", "not a finite number");
    let waveform = WAVEFORM.replace("shaft_speed_tag", "bearing_contact_angle_deg = nan\nshaft_speed_tag");
    refused(&with("", &format!("{TAG}{waveform}")), "device[press1].tag[accel].bearing_contact_angle_deg", "0 to 90");
    let waveform = WAVEFORM.replace("shaft_speed_tag", "bearing_contact_angle_deg = 91\nshaft_speed_tag");
    refused(&with("", &format!("{TAG}{waveform}")), "device[press1].tag[accel].bearing_contact_angle_deg", "0 to 90");
    let tag = TAG.replace("type = \"f32\"", "type = \"f32\"\ndeadband_percent = 2\nspan_max = 5");
    refused(&with("", &tag), "device[press1].tag[speed].span_max", "needs span_min < span_max");
    let oee = "\n[device.oee]\nstate_tag = \"speed\"\nparts_tag = \"speed\"\nideal_cycle_s = 2\nrunning_value = nan\n";
    refused(&with("", &format!("{TAG}{oee}")), "device[press1].oee.running_value", "not a finite number");
    refused(&format!("[edge]\nshift_hours = 10\n{DEVICE}{TAG}"), "edge.shift_hours", "divide the day");
    assert!(parse(&format!("[edge]\nshift_hours = 12\n{DEVICE}{TAG}"), Path::new("plant.toml")).is_ok());
}
