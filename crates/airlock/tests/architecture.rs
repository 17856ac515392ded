//! The architecture invariants of ARCHITECTURE.md, checked:
//! 1. no IT-side crate (north, web) depends on a southbound crate or on the pipeline, directly
//!    or not; the pipeline depends on no southbound and no IT-side crate (drivers depend on it);
//!    the upstream record crate depends on no airlock crate but the model;
//! 2. the model, upstream, edge, config and store crates do not depend on tokio;
//! 3. no southbound crate names a write call of its protocol library.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Package name to the names of its normal (not dev, not build) dependencies, from
/// `cargo metadata` for the host platform.
fn normal_dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustc = Command::new("rustc").arg("-vV").output().unwrap();
    let host = String::from_utf8(rustc.stdout).unwrap();
    let host = host.lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_owned();
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--filter-platform", &host])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()));
        let deps = deps.map(|d| names[d["pkg"].as_str().unwrap()].to_owned()).collect();
        graph.insert(names[node["id"].as_str().unwrap()].to_owned(), deps);
    }
    graph
}

/// Every crate `name` depends on, directly or through others.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_owned()];
    while let Some(n) = todo.pop() {
        for d in graph.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

fn is_it_side(name: &str) -> bool {
    name.starts_with("airlock-north") || name.starts_with("airlock-web")
}

fn is_south(name: &str) -> bool {
    name.starts_with("airlock-south")
}

/// The broken invariants of `graph`, as sentences.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for name in graph.keys() {
        let deps = reachable(graph, name);
        if is_it_side(name) {
            for south in deps.iter().filter(|d| is_south(d)) {
                out.push(format!("IT-side crate {name} depends on southbound crate {south}"));
            }
            if deps.contains("airlock-pipeline") {
                out.push(format!("IT-side crate {name} depends on the pipeline (it gets the outbox's reader only)"));
            }
        }
        if name == "airlock-pipeline" {
            for d in deps.iter().filter(|d| is_south(d) || is_it_side(d)) {
                out.push(format!("the pipeline depends on {d}; drivers and sinks meet it through model types"));
            }
        }
        if name == "airlock-upstream" {
            for d in deps.iter().filter(|d| d.starts_with("airlock-") && *d != "airlock-model") {
                out.push(format!("the upstream record crate depends on {d}; it may depend on the model only"));
            }
        }
        let pure = ["airlock-model", "airlock-upstream", "airlock-edge", "airlock-config", "airlock-store"];
        if pure.contains(&name.as_str()) && deps.contains("tokio") {
            out.push(format!("{name} depends on tokio; it must stay free of I/O runtimes"));
        }
    }
    out
}

#[test]
fn the_crate_graph_keeps_the_airlock_one_way() {
    let graph = normal_dependency_graph();
    let crates = [
        "airlock",
        "airlock-model",
        "airlock-config",
        "airlock-south-modbus",
        "airlock-south-mqtt",
        "airlock-south-opcua",
        "airlock-sparkplug",
        "airlock-tls",
        "airlock-sim",
        "airlock-store",
        "airlock-north",
        "airlock-edge",
        "airlock-pipeline",
        "airlock-upstream",
    ];
    for expected in crates {
        assert!(graph.contains_key(expected), "{expected} missing from the workspace");
    }
    assert!(reachable(&graph, "airlock-south-modbus").contains("tokio-modbus"));
    assert!(reachable(&graph, "airlock-north").contains("airlock-store"), "the north side reads the outbox");
    assert_eq!(violations(&graph), Vec::<String>::new());
}

#[test]
fn the_graph_check_catches_a_bad_edge() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let edge = |g: &mut BTreeMap<String, BTreeSet<String>>, a: &str, b: &str| {
        g.entry(a.into()).or_default().insert(b.into());
    };
    edge(&mut graph, "airlock-north", "airlock-store");
    edge(&mut graph, "airlock-store", "airlock-south-modbus");
    edge(&mut graph, "airlock-model", "thiserror");
    edge(&mut graph, "airlock-edge", "mio-wrapper");
    edge(&mut graph, "mio-wrapper", "tokio");
    edge(&mut graph, "airlock-pipeline", "airlock-south-opcua");
    edge(&mut graph, "airlock-north-kafka", "airlock-pipeline");
    edge(&mut graph, "airlock-upstream", "airlock-config");
    assert_eq!(
        violations(&graph),
        vec![
            "airlock-edge depends on tokio; it must stay free of I/O runtimes".to_owned(),
            "IT-side crate airlock-north depends on southbound crate airlock-south-modbus".to_owned(),
            "IT-side crate airlock-north-kafka depends on southbound crate airlock-south-opcua".to_owned(),
            "IT-side crate airlock-north-kafka depends on the pipeline (it gets the outbox's reader only)".to_owned(),
            "the pipeline depends on airlock-south-opcua; drivers and sinks meet it through model types".to_owned(),
            "the upstream record crate depends on airlock-config; it may depend on the model only".to_owned(),
        ]
    );
}

/// Names that only a writer would use. Modbus (tokio-modbus): the `Writer` trait and its
/// methods, the read-write call, the raw `call` that sends any request, write request variants.
/// MQTT (rumqttc): every publish call, so the OT-side subscriber cannot send to the plant.
/// OPC UA (async-opcua): Write, Call and the node-management and history-update services.
const WRITE_SIDE: &[&str] = &[
    "Writer",
    "write_single_coil",
    "write_single_register",
    "write_multiple_coils",
    "write_multiple_registers",
    "masked_write_register",
    "read_write_multiple_registers",
    ".call(",
    "Request::Write",
    "Request::MaskWrite",
    "Request::ReadWrite",
    "Request::Custom",
    ".publish(",
    "publish_bytes",
    "try_publish",
    ".write(",
    "services::Write",
    "WriteRequest",
    "WriteValue",
    "::Call",
    ".call_one(",
    "CallMethodRequest",
    "add_nodes",
    "delete_nodes",
    "add_references",
    "delete_references",
    "history_update",
];

/// `(file, line, name)` for every write-side name in the Rust sources under `dir`.
fn write_side_uses(dir: &Path) -> Vec<(PathBuf, usize, &'static str)> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    for name in WRITE_SIDE.iter().filter(|n| code.contains(**n)) {
                        found.push((path.clone(), i + 1, *name));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn no_southbound_crate_names_a_write_call() {
    let crates = workspace_root().join("crates");
    let mut south = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        if dir.file_name().unwrap().to_string_lossy().starts_with("south-") {
            south += 1;
            assert_eq!(write_side_uses(&dir.join("src")), vec![], "write-side names in {}", dir.display());
        }
    }
    assert!(south >= 1, "no southbound crate found under {}", crates.display());
}

#[test]
fn the_write_scan_finds_a_writer_import() {
    let dir = std::env::temp_dir().join(format!("airlock-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.rs"),
        "use tokio_modbus::client::Writer;\n// Writer in a comment is fine\nctx.call(req);\nclient.publish(t, q, r, p);\nsession.write(&nodes);\n",
    )
    .unwrap();
    let found = write_side_uses(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let names: Vec<(usize, &str)> = found.iter().map(|(_, line, name)| (*line, *name)).collect();
    assert_eq!(names, vec![(1, "Writer"), (3, ".call("), (4, ".publish("), (5, ".write(")]);
}
