//! `airlock import modbus-csv` as a PLC programmer uses it: a register list with every type in
//! every word order (1-based Modicon addresses), and one with a space column and 0-based
//! addresses, turned into a device that `airlock check` accepts and that reads, from pymodbus
//! (a Modbus device we did not write) serving those registers, the values it serves.
//!
//! Needs Python with pymodbus: `./scripts/test` makes `.venv` and sets `AIRLOCK_PYTHON`.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{Value as Json, json};

fn airlock(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_airlock")).args(args).output().unwrap()
}

/// One row: the CSV line, what pymodbus serves (0-based), and the value upstream must carry.
struct Row {
    csv: String,
    name: String,
    served: Json,
    expected: Json,
}

fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let numbers: [(&str, Json, u16); 8] = [
        ("uint16", json!(65000), 1),
        ("INT16", json!(-1234), 1),
        ("u32", json!(4_000_000_000u32), 2),
        ("DINT", json!(-2_000_000_000), 2),
        ("u64", json!(18_000_000_000_000_000_000u64), 4),
        ("i64", json!(-9_000_000_000_000_000_000i64), 4),
        ("REAL", json!(-123.25), 2),
        ("double", json!(6.02214076e23), 4),
    ];
    let canonical = |t: &str| {
        match t {
            "uint16" => "u16",
            "INT16" => "i16",
            "DINT" => "i32",
            "REAL" => "f32",
            "double" => "f64",
            t => t,
        }
        .to_owned()
    };
    let mut address = 0u16;
    // The order column as lists write it, and what it means.
    for (written, order) in [("", "abcd"), ("byte swap", "badc"), ("word swap", "cdab"), ("little endian", "dcba")] {
        for (ty, value, width) in &numbers {
            let name = format!("{}_{order}", canonical(ty));
            rows.push(Row {
                csv: format!("{name},{},{ty},{written},,", 40001 + u32::from(address)),
                name,
                served: json!({"space": "holding_register", "address": address, "type": canonical(ty), "order": order, "value": value}),
                expected: value.clone(),
            });
            address += width;
        }
    }
    rows.push(Row {
        csv: "Oil temp (degC),30021,int16,,0.1,degC".into(),
        name: "Oil_temp__degC_".into(),
        served: json!({"space": "input_register", "address": 20, "type": "i16", "order": "abcd", "value": 655}),
        expected: json!(65.5),
    });
    rows.push(Row {
        csv: "running,00006,bool,,,".into(),
        name: "running".into(),
        served: json!({"space": "coil", "address": 5, "type": "bool", "value": true}),
        expected: json!(true),
    });
    rows.push(Row {
        csv: "door_open,10008,BOOL,,,".into(),
        name: "door_open".into(),
        served: json!({"space": "discrete_input", "address": 7, "type": "bool", "value": true}),
        expected: json!(true),
    });
    rows
}

#[test]
fn a_register_list_reads_pymodbus_as_it_serves() {
    let dir = std::env::temp_dir().join(format!("airlock-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rows = rows();
    // The peer: every row's value, plus the second list's (0-based, with a space column).
    let mut served: Vec<Json> = rows.iter().map(|r| r.served.clone()).collect();
    served.push(
        json!({"space": "input_register", "address": 100, "type": "string", "order": "abcd", "value": "AIRLOCK-7"}),
    );
    served.push(json!({"space": "holding_register", "address": 300, "type": "bool", "value": true, "bit": 3}));
    let mut peer = Command::new(airlock_testkit::python())
        .arg(airlock_testkit::peer_script("modbus_device.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = peer.stdin.take().unwrap();
    writeln!(stdin, "{}", serde_json::to_string(&served).unwrap()).unwrap();
    let mut line = String::new();
    BufReader::new(peer.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = serde_json::from_str::<Json>(&line).unwrap()["port"].as_u64().unwrap();

    let list = dir.join("press1.csv");
    let csv: String = rows.iter().map(|r| format!("{}\r\n", r.csv)).collect();
    std::fs::write(&list, format!("Name,Address,Type,Word Order,Scale,Unit\r\n{csv}")).unwrap();
    let list0 = dir.join("press1-more.csv");
    std::fs::write(&list0, "name;space;address;type;length;bit\nserial;input_register;100;string;10;\nalarm;holding_register;300;bool;;3\n")
        .unwrap();
    let address = format!("127.0.0.1:{port}");
    let import = |list: &std::path::Path, device: &str| {
        let out = airlock(&[
            "import",
            "modbus-csv",
            list.to_str().unwrap(),
            "--device",
            device,
            "--address",
            &address,
            "--asset-path",
            &format!("acme/lab/{device}"),
            "--poll-interval-ms",
            "200",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let devices = format!("{}\n{}", import(&list, "press1"), import(&list0, "press1b"));
    let config = dir.join("plant.toml");
    let upstream = dir.join("up.jsonl");
    std::fs::write(
        &config,
        format!(
            "[store]\ndata_dir = \"{}\"\n\n[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"{}\"\n\n{devices}",
            dir.join("data").display(),
            upstream.display()
        ),
    )
    .unwrap();
    let check = airlock(&["check", config.to_str().unwrap()]);
    assert!(check.status.success(), "{}\n{devices}", String::from_utf8_lossy(&check.stderr));

    let run = airlock(&["run", config.to_str().unwrap(), "--duration", "3s"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let _ = peer.kill();
    let _ = peer.wait();
    let records: Vec<Json> =
        std::fs::read_to_string(&upstream).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = |name: &str| {
        records.iter().rev().find(|r| r["topic"].as_str().is_some_and(|t| t.ends_with(&format!("/{name}")))).cloned()
    };
    for row in &rows {
        let record = last(&row.name).unwrap_or_else(|| panic!("no record of {}", row.name));
        assert_eq!(record["quality"], "good", "{}: {record}", row.name);
        match (record["value"].as_f64(), row.expected.as_f64()) {
            (Some(got), Some(want)) if row.expected.is_f64() => {
                assert!((got - want).abs() <= want.abs() * 1e-9, "{}: read {got}, served {want}", row.name)
            }
            _ => assert_eq!(record["value"], row.expected, "{}", row.name),
        }
    }
    assert_eq!(last("serial").unwrap()["value"], "AIRLOCK-7");
    assert_eq!(last("alarm").unwrap()["value"], true);
    assert_eq!(last("Oil_temp__degC_").unwrap()["unit"], "degC");
    std::fs::remove_dir_all(&dir).unwrap();
}
