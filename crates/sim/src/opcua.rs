//! The line controller of the simulated plant as an OPC UA server (async-opcua, security None,
//! anonymous), beside the machines' Modbus servers: line-level values a cell PLC would publish.
//! Namespace `urn:airlock:sim` (index 2), under `Objects/Line3`:
//!
//! | node id | type | value |
//! |---|---|---|
//! | `ns=2;s=Line3.Output` | UInt32 | parts made by the line since start (sum of machines) |
//! | `ns=2;s=Line3.Power` | Double | the line's power draw, kW (sum of machines) |
//! | `ns=2;s=Line3.AllRunning` | Boolean | every machine is running |
//! | `ns=2;s=Line3.<machine>.Speed` | Double | each machine's speed, rpm |
//!
//! A load variant ([`serve_load`]) serves `n` Double nodes `ns=2;s=Load.<i>` that all change at a
//! fixed interval, for the OPC UA benchmark.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use opcua::server::address_space::Variable;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{ServerBuilder, ServerHandle};
use opcua::types::{DataValue, DateTime, NodeId, Variant};
use tokio::task::JoinHandle;

use crate::plant::{Machine, MachineState};

const NAMESPACE: &str = "urn:airlock:sim";

/// A running OPC UA server of the simulator.
pub struct OpcUaServer {
    pub endpoint: String,
    handle: ServerHandle,
    manager: Arc<SimpleNodeManager>,
    namespace: u16,
    task: JoinHandle<()>,
    /// The folder the server keeps its PKI in (a temp folder of its own): removed at its stop.
    pki_dir: std::path::PathBuf,
}

impl std::fmt::Debug for OpcUaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpcUaServer").field("endpoint", &self.endpoint).finish()
    }
}

impl OpcUaServer {
    /// Stops serving and removes its PKI folder (a simulator leaves no files behind).
    pub fn stop(&self) {
        self.handle.cancel();
        self.task.abort();
        if let Err(e) = std::fs::remove_dir_all(&self.pki_dir)
            && e.kind() != io::ErrorKind::NotFound
        {
            log::warn!("the simulated OPC UA server's PKI folder {}: {e}", self.pki_dir.display());
        }
    }

    /// The folder it keeps its PKI in while it serves.
    pub fn pki_dir(&self) -> &Path {
        &self.pki_dir
    }

    /// Sets values by node name (`Line3.Output`), notifying subscriptions.
    pub fn set<'a>(&self, values: impl Iterator<Item = (&'a str, Variant)>) {
        let now = DateTime::now();
        let updates: Vec<(NodeId, DataValue)> = values
            .map(|(name, v)| {
                let mut dv = DataValue::new_at(v, now);
                dv.source_timestamp = Some(now);
                (NodeId::new(self.namespace, name), dv)
            })
            .collect();
        let subscriptions = self.handle.subscriptions();
        if let Err(e) = self.manager.set_values(subscriptions, updates.iter().map(|(id, dv)| (id, None, dv.clone()))) {
            log::warn!("simulated OPC UA server: cannot set values: {e}");
        }
    }

    /// Copies the line's state into its nodes.
    pub fn write_line(&self, machines: &[Machine]) {
        let output: u64 = machines.iter().map(|m| m.parts_made).sum();
        let power: f64 = machines.iter().map(|m| m.power_kw).sum();
        let all_running = machines.iter().all(|m| m.state == MachineState::Running);
        let mut values = vec![
            ("Line3.Output".to_owned(), Variant::UInt32(output as u32)),
            ("Line3.Power".to_owned(), Variant::Double(power)),
            ("Line3.AllRunning".to_owned(), Variant::Boolean(all_running)),
        ];
        for m in machines {
            values.push((format!("Line3.{}.Speed", m.spec.name), Variant::Double(m.speed_rpm)));
        }
        self.set(values.iter().map(|(n, v)| (n.as_str(), v.clone())));
    }
}

impl Drop for OpcUaServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on `bind` (the listener is closed again before the server binds it).
fn free_port(bind: IpAddr) -> io::Result<u16> {
    Ok(TcpListener::bind(SocketAddr::new(bind, 0))?.local_addr()?.port())
}

async fn start(
    bind: IpAddr,
    port: u16,
    pki_dir: &Path,
    build: impl FnOnce(&mut opcua::server::address_space::AddressSpace, u16),
) -> io::Result<OpcUaServer> {
    let port = if port == 0 { free_port(bind)? } else { port };
    let mut builder = ServerBuilder::new_anonymous("airlock simulated line");
    // Room for the load benchmark's tens of thousands of monitored items.
    builder.limits_mut().subscriptions.max_monitored_items_per_sub = 0;
    let (server, handle) = builder
        .application_uri("urn:airlock:sim:server")
        .product_uri("urn:airlock:sim:server")
        .host(bind.to_string())
        .port(port)
        .pki_dir(pki_dir)
        .create_sample_keypair(false)
        .diagnostics_enabled(false)
        .with_node_manager(simple_node_manager(
            NamespaceMetadata { namespace_uri: NAMESPACE.to_owned(), ..Default::default() },
            "sim",
        ))
        .build()
        .map_err(io::Error::other)?;
    let manager = handle
        .node_managers()
        .get_of_type::<SimpleNodeManager>()
        .ok_or_else(|| io::Error::other("no simple node manager"))?;
    let namespace = handle.get_namespace_index(NAMESPACE).ok_or_else(|| io::Error::other("no namespace"))?;
    {
        let mut space = manager.address_space().write();
        build(&mut space, namespace);
    }
    let task = tokio::spawn(async move {
        if let Err(e) = server.run().await {
            log::error!("simulated OPC UA server stopped: {e}");
        }
    });
    let endpoint = format!("opc.tcp://{bind}:{port}/");
    // Wait until it listens (bounded: 5 s).
    for _ in 0..250 {
        if tokio::net::TcpStream::connect(SocketAddr::new(bind, port)).await.is_ok() {
            return Ok(OpcUaServer { endpoint, handle, manager, namespace, task, pki_dir: pki_dir.to_owned() });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(io::Error::other(format!("the simulated OPC UA server did not listen on {endpoint}")))
}

/// The line controller of `machines` on `bind:port` (0: a free port). `pki_dir` is a folder of
/// its own: [`OpcUaServer::stop`] removes it.
pub async fn serve_line(bind: IpAddr, port: u16, pki_dir: &Path, machines: &[Machine]) -> io::Result<OpcUaServer> {
    let names: Vec<String> = machines.iter().map(|m| m.spec.name.to_owned()).collect();
    let server = start(bind, port, pki_dir, |space, ns| {
        let line = NodeId::new(ns, "Line3");
        space.add_folder(&line, "Line3", "Line3", &NodeId::objects_folder_id());
        let mut vars = vec![
            Variable::new(&NodeId::new(ns, "Line3.Output"), "Output", "Output", 0u32),
            Variable::new(&NodeId::new(ns, "Line3.Power"), "Power", "Power", 0f64),
            Variable::new(&NodeId::new(ns, "Line3.AllRunning"), "AllRunning", "AllRunning", false),
        ];
        for n in &names {
            let id = format!("Line3.{n}.Speed");
            vars.push(Variable::new(&NodeId::new(ns, id.as_str()), format!("{n}.Speed").as_str(), "Speed", 0f64));
        }
        space.add_variables(vars, &line);
    })
    .await?;
    server.write_line(machines);
    Ok(server)
}

/// `n` Double nodes `ns=2;s=Load.<i>` under `Objects/Load`, all set to a new value every
/// `every` until the server stops: `n / every` values offered per second. `pki_dir` is a folder
/// of its own, as [`serve_line`]'s.
pub async fn serve_load(
    bind: IpAddr,
    port: u16,
    pki_dir: &Path,
    n: usize,
    every: Duration,
) -> io::Result<Arc<OpcUaServer>> {
    let server = Arc::new(
        start(bind, port, pki_dir, |space, ns| {
            let folder = NodeId::new(ns, "Load");
            space.add_folder(&folder, "Load", "Load", &NodeId::objects_folder_id());
            let vars = (0..n)
                .map(|i| {
                    let id = format!("Load.{i}");
                    Variable::new(&NodeId::new(ns, id.as_str()), id.as_str(), id.as_str(), 0f64)
                })
                .collect();
            space.add_variables(vars, &folder);
        })
        .await?,
    );
    let names: Vec<String> = (0..n).map(|i| format!("Load.{i}")).collect();
    let s = Arc::clone(&server);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        let mut tick = 0u64;
        loop {
            ticker.tick().await;
            tick += 1;
            s.set(names.iter().enumerate().map(|(i, name)| (name.as_str(), Variant::Double((tick + i as u64) as f64))));
        }
    });
    Ok(server)
}
