//! The architecture invariants of ARCHITECTURE.md, checked:
//! 1. no IT-side crate (north, web) depends on a southbound crate or on the pipeline, directly
//!    or not; the pipeline depends on no southbound and no IT-side crate (drivers depend on it);
//!    the upstream record crate depends on no airlock crate but the model;
//! 2. the model, upstream, edge, config and store crates do not depend on tokio; no southbound
//!    crate depends on rumqttc (the OT-side MQTT client is our own, subscribe-only);
//! 3. no product crate names a write call of a device protocol library (matched as written, and
//!    the long names whatever their case), and only the IT side names MQTT publishing; clippy's
//!    `disallowed-methods` (clippy.toml) holds the same line at compile time.

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
    name.starts_with("airlock-north") || name.starts_with("airlock-web") || name == "airlock-diode"
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
        if is_south(name) && deps.contains("rumqttc") {
            out.push(format!("southbound crate {name} depends on rumqttc, a client that can publish"));
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
        "airlock-web",
        "airlock-diode",
    ];
    for expected in crates {
        assert!(graph.contains_key(expected), "{expected} missing from the workspace");
    }
    assert!(reachable(&graph, "airlock-north").contains("airlock-store"), "the north side reads the outbox");
    assert!(reachable(&graph, "airlock-web").contains("axum"), "the dashboard is checked too");
    assert_eq!(violations(&graph), Vec::<String>::new());
}

/// The dashboard holds a view of the outbox that cannot acknowledge, and only answers GET and
/// HEAD: its code names neither the reader that acknowledges nor a route of another method.
#[test]
fn the_dashboard_cannot_acknowledge_or_take_a_write_method() {
    let dir = workspace_root().join("crates/web/src");
    let mut found = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        files += 1;
        for (i, line) in text.lines().enumerate() {
            let code = code_of(line);
            for bad in
                ["OutboxReader", "OutboxWriter", "HistorianWriter", ".ack(", "post(", "put(", "delete(", "patch("]
            {
                if code.contains(bad) {
                    found.push(format!("{}:{}: {bad}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(files >= 5, "the web crate's sources were read");
    assert_eq!(found, Vec::<String>::new());
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
    edge(&mut graph, "airlock-south-mqtt", "rumqttc");
    assert_eq!(
        violations(&graph),
        vec![
            "airlock-edge depends on tokio; it must stay free of I/O runtimes".to_owned(),
            "IT-side crate airlock-north depends on southbound crate airlock-south-modbus".to_owned(),
            "IT-side crate airlock-north-kafka depends on southbound crate airlock-south-opcua".to_owned(),
            "IT-side crate airlock-north-kafka depends on the pipeline (it gets the outbox's reader only)".to_owned(),
            "the pipeline depends on airlock-south-opcua; drivers and sinks meet it through model types".to_owned(),
            "southbound crate airlock-south-mqtt depends on rumqttc, a client that can publish".to_owned(),
            "the upstream record crate depends on airlock-config; it may depend on the model only".to_owned(),
        ]
    );
}

/// Names that only a writer would use, matched as written. Modbus (as its libraries name them):
/// the `Writer` trait, the raw `call` that sends any request, the request variants that write. OPC UA
/// (async-opcua): the Write and Call services. MQTT (rumqttc, were it used, and the IT side's own
/// publisher): every publish call and the last will (a message the broker sends for us), so the
/// OT-side subscriber cannot send to the plant.
const WRITE_SIDE: &[&str] = &[
    "Writer",
    ".call(",
    "Request::Write",
    "Request::MaskWrite",
    "Request::ReadWrite",
    "Request::Custom",
    ".publish(",
    "publish_bytes",
    "try_publish",
    "set_last_will",
    "LastWill",
    ".write(",
    "services::Write",
    "WriteRequest",
    "WriteValue",
    "::Call",
    "CallMethodRequest",
];

/// Names matched whatever their case and underscores (`write_single_coil`, `WriteSingleCoil`
/// and `WRITE_SINGLE_COIL` alike): long enough to mean only one thing.
const WRITE_SIDE_ANY_CASE: &[&str] = &[
    "writesinglecoil",
    "writesingleregister",
    "writemultiplecoils",
    "writemultipleregisters",
    "maskwriteregister",
    "readwritemultipleregisters",
    "callone",
    "callmethod",
    "addnodes",
    "deletenodes",
    "addreferences",
    "deletereferences",
    "historyupdate",
];

/// What the IT side may name: publishing to IT brokers is the MQTT sink's job.
const IT_SIDE_MAY: &[&str] = &[".publish(", "publish_bytes", "try_publish", "set_last_will", "LastWill"];

/// A line without its comment: cut at a `//` outside a string literal (a `"//"` in a string
/// does not hide the code after it).
fn code_of(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b'\\' if in_string => {
                escaped = !escaped;
                continue;
            }
            b'"' if !escaped => in_string = !in_string,
            b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => return &line[..i],
            _ => {}
        }
        escaped = false;
    }
    line
}

/// Whether `code` names `name`: a name that starts with a letter must start a word there
/// (`Writer`, not `OutboxWriter`).
fn names(code: &str, name: &str) -> bool {
    let word = name.starts_with(|c: char| c.is_ascii_alphabetic());
    code.match_indices(name)
        .any(|(at, _)| !word || !code[..at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
}

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
                    let code = code_of(line);
                    let folded: String = code.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect();
                    for name in WRITE_SIDE.iter().filter(|n| names(code, n)) {
                        found.push((path.clone(), i + 1, *name));
                    }
                    for name in WRITE_SIDE_ANY_CASE.iter().filter(|n| folded.contains(**n)) {
                        found.push((path.clone(), i + 1, *name));
                    }
                }
            }
        }
    }
    found
}

/// The libraries that can talk to a device (or publish to a broker).
const PROTOCOL_LIBRARIES: &[&str] = &["async-opcua", "async-opcua-client", "rumqttc"];

/// Every southbound crate, the IT side (whose own MQTT client publishes), the shared MQTT
/// helpers both sides use, and every other product crate (not the benches or test helpers)
/// that depends on a protocol library itself: only these can name a write call at all (any
/// other crate would have to go through one of them, and the crate graph test says which may
/// reach which).
fn product_crates() -> Vec<PathBuf> {
    let graph = normal_dependency_graph();
    let crates = workspace_root().join("crates");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&crates)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|d| {
            let dir = d.file_name().unwrap().to_string_lossy().into_owned();
            let package = if dir == "airlock" { dir.clone() } else { format!("airlock-{dir}") };
            let direct = graph.get(&package).cloned().unwrap_or_default();
            d.join("src").is_dir()
                && !["bench", "testkit"].contains(&dir.as_str())
                && (dir.starts_with("south-")
                    || ["north", "tls"].contains(&dir.as_str())
                    || direct.iter().any(|dep| PROTOCOL_LIBRARIES.contains(&dep.as_str())))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn no_product_crate_names_a_write_call_and_only_the_it_side_publishes() {
    let crates = product_crates();
    for expected in ["south-modbus", "south-opcua", "south-mqtt", "north", "sim", "tls"] {
        assert!(crates.iter().any(|d| d.ends_with(expected)), "{expected} not scanned: {crates:?}");
    }
    for dir in crates {
        let crate_name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut uses = write_side_uses(&dir.join("src"));
        if crate_name.starts_with("north") {
            uses.retain(|(_, _, name)| !IT_SIDE_MAY.contains(name));
            // The MQTT sink's link writes its own framed packets to the IT broker's socket
            // (`stream.write`, a call at a time so that a broker that stops reading is noticed):
            // the IT side's own connection; no plant connection is reachable from this crate
            // (the crate graph test).
            uses.retain(|(file, _, name)| !(file.ends_with("mqtt/link.rs") && *name == ".write("));
        }
        if crate_name == "sim" {
            // The simulator is the plant's side (an OPC UA server): it takes the write lock of
            // its own address space, and calls no client service.
            uses.retain(|(_, _, name)| *name != ".write(");
        }
        if crate_name == "south-opcua" {
            // link.rs takes the write lock of the session's decoding context once, to put its
            // type loader first (`encoding_context().write()`): a lock, not the Write service,
            // which clippy forbids and `ReadSession` does not offer.
            uses.retain(|(file, _, name)| !(file.ends_with("link.rs") && *name == ".write("));
        }
        assert_eq!(uses, vec![], "write-side names in {}", dir.display());
    }
}

#[test]
fn the_write_scan_finds_a_writer_import() {
    let dir = std::env::temp_dir().join(format!("airlock-scan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.rs"),
        "use tokio_modbus::client::Writer;\n// Writer in a comment is fine\nctx.call(req);\nclient.publish(t, q, r, p);\n\
         session.write(&nodes);\nlet s = \"//\"; ctx.call(req);\nFunctionCode::WriteSingleCoil;\n\
         options.set_last_will(will);\nlet x = \"a \\\" // b\"; WRITE_MULTIPLE_REGISTERS;\n\
         let w = OutboxWriter::open(dir);\n",
    )
    .unwrap();
    let found = write_side_uses(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    let names: Vec<(usize, &str)> = found.iter().map(|(_, line, name)| (*line, *name)).collect();
    assert_eq!(
        names,
        vec![
            (1, "Writer"),
            (3, ".call("),
            (4, ".publish("),
            (5, ".write("),
            (6, ".call("),
            (7, "writesinglecoil"),
            (8, "set_last_will"),
            (9, "writemultipleregisters")
        ]
    );
}

/// The protocol libraries' full-power handles (which could write, publish or call), and the
/// calls that put bytes on a connection (the Modbus and MQTT links frame their own requests).
/// In a southbound crate only `src/link.rs` may name them: it wraps each in a type that can
/// only read or subscribe (`ReadLink`, `SubscribeOnly`, `ReadSession`), frames only those
/// requests, and never hands the connection out.
const RAW_HANDLES: &[&str] = &[
    "AsyncClient",
    "EventLoop",
    "Session",
    "connect_to_matching_endpoint",
    "AsyncWrite",
    "AsyncWriteExt",
    "write_all",
    "write_buf",
    "write_vectored",
    "try_write",
    "poll_write",
];

/// Whether `code` has `name` as a whole word.
fn has_word(code: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.match_indices(name).any(|(at, _)| !code[..at].ends_with(ident) && !code[at + name.len()..].starts_with(ident))
}

#[test]
fn only_each_southbound_crates_link_names_a_protocol_handle() {
    let crates = workspace_root().join("crates");
    let mut links = 0;
    for entry in std::fs::read_dir(&crates).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.file_name().unwrap().to_string_lossy().starts_with("south-") {
            continue;
        }
        let src = dir.join("src");
        links += usize::from(src.join("link.rs").exists());
        let mut todo = vec![src];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    todo.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") || path.file_name().is_some_and(|n| n == "link.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, line) in text.lines().enumerate() {
                    if let Some(name) = RAW_HANDLES.iter().find(|n| has_word(code_of(line), n)) {
                        panic!("{}:{}: names {name}; only link.rs may hold the raw handle", path.display(), i + 1);
                    }
                }
            }
        }
    }
    assert_eq!(links, 3, "each southbound crate has its link.rs");
}

#[test]
fn the_handle_scan_sees_whole_words_only() {
    assert!(has_word("let s: Arc<Session> = x;", "Session"));
    assert!(!has_word("SessionPollResult::Reconnected", "Session"));
    assert!(!has_word("ReadSession::connect", "Session"));
    assert!(has_word("self.stream.write_all(&request).await", "write_all"));
    assert!(!has_word("stream.write_all_of(x)", "write_all"));
}

/// Calls that take something from the network: the diode's sending half has none.
const RECEIVE_CALLS: &[&str] =
    &["recv", "peek", "accept", "listen", "read_from", "poll_recv", "TcpStream", "TcpListener"];
/// Calls that put something on the network: the diode's receiving half has none.
const SEND_CALLS: &[&str] =
    &["send_to", ".send(", "sendmsg", "sendmmsg", "try_send", "poll_send", ".connect(", "TcpStream", "write_to"];

/// `(line, name)` of every use of `calls` in `text`, comments and the unit tests (from the
/// first `#[cfg(test)]` on, which the product does not contain) aside.
fn calls_in(text: &str, calls: &[&'static str]) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate().take_while(|(_, l)| l.trim() != "#[cfg(test)]") {
        let code = code_of(line).to_lowercase();
        for call in calls.iter().filter(|c| code.contains(&c.to_lowercase())) {
            found.push((i + 1, *call));
        }
    }
    found
}

#[test]
fn the_diodes_sending_half_never_receives_and_its_receiving_half_never_sends() {
    let src = workspace_root().join("crates/diode/src");
    let send = std::fs::read_to_string(src.join("send.rs")).unwrap();
    assert!(send.contains("send_to("), "the scan looks at the sending half");
    assert_eq!(calls_in(&send, RECEIVE_CALLS), vec![], "the sending half (send.rs) names a receive call");
    for file in ["receive.rs", "assemble.rs"] {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        assert_eq!(calls_in(&text, SEND_CALLS), vec![], "the receiving half ({file}) names a send call");
    }
    let receive = std::fs::read_to_string(src.join("receive.rs")).unwrap();
    assert!(receive.contains("recv_from("), "the scan looks at the receiving half");
    // The scan sees what it must: a receive call slipped into the sender, a send into the receiver.
    assert_eq!(calls_in("let n = socket.recv_from(&mut buf)?; // ok", RECEIVE_CALLS), vec![(1, "recv")]);
    assert_eq!(calls_in("socket.send_to(b, peer)?;", SEND_CALLS), vec![(1, "send_to")]);
    assert_eq!(calls_in("// socket.send_to(b, peer)", SEND_CALLS), vec![]);
    assert_eq!(calls_in("fn f() {}\n#[cfg(test)]\nmod tests { socket.send_to(b, peer) }", SEND_CALLS), vec![]);
}
