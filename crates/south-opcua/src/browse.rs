//! Walking a server's address space, read-only (Browse, BrowseNext and Read of a variable's
//! DataType, ValueRank, ArrayDimensions and AccessLevel), for `airlock browse`: a tree for people
//! and a `[[device]]` section of tags that `airlock check` accepts.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use airlock_config::OpcUaDevice;
use opcua::client::SessionPollResult;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, NodeClass, NodeId, ReadValueId, ReferenceTypeId,
    TimestampsToReturn, Variant,
};

use crate::client::{Retry, client, endpoint, identity_token, next};
use crate::link::ReadSession;
use crate::trust::Pki;

/// References asked for per node and request.
const REFERENCES_PER_NODE: u32 = 1000;
/// Nodes found at most, so that a huge server cannot fill memory.
const NODES_MAX: usize = 100_000;

/// One node found, with what a tag needs to know of a variable.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub depth: usize,
    pub node_id: String,
    pub browse_name: String,
    pub class: NodeClass,
    /// A variable's built-in data type name (`Double`, `Int32`, ...) when it is one.
    pub data_type: Option<String>,
    /// A variable's array length (1-D arrays with a fixed length), `Some(0)` when unknown.
    pub array_length: Option<u32>,
    /// A variable's access level allows reading its value.
    pub readable: bool,
}

/// Walks the address space under `under` (default: the Objects folder) to `depth` levels.
pub async fn browse(
    opcua: &OpcUaDevice,
    data_dir: &Path,
    under: Option<&str>,
    depth: usize,
) -> Result<Vec<Node>, String> {
    let pki = Pki::new(data_dir, "browse");
    pki.prepare(&opcua.trusted_server_certs)?;
    let retry = Retry { limit: 0, initial: Duration::from_millis(200), max: Duration::from_secs(1) };
    let secured = opcua.security != airlock_config::Security::None;
    let mut client = client(&pki, "browse", retry, Duration::from_secs(5), secured)?;
    let identity = identity_token(&opcua.identity)?;
    let (session, event_loop) = ReadSession::connect(&mut client, endpoint(opcua), identity)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", opcua.endpoint))?;
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel::<Result<(), String>>(1);
    let driver = tokio::spawn(async move {
        let mut stream = Box::pin(event_loop.enter());
        while let Some(event) = next(&mut stream).await {
            let done = match event {
                Ok(SessionPollResult::Reconnected(_)) => Some(Ok(())),
                Ok(SessionPollResult::ConnectionLost(c) | SessionPollResult::ReconnectFailed(c)) | Err(c) => {
                    Some(Err(c.to_string()))
                }
                Ok(_) => None,
            };
            if let Some(d) = done {
                let _ = ready_tx.try_send(d);
            }
        }
    });
    let connected = tokio::time::timeout(Duration::from_secs(10), ready.recv()).await;
    let result = match connected {
        Ok(Some(Ok(()))) => walk(&session, under, depth).await,
        Ok(Some(Err(e))) => {
            let named = pki.rejected().into_iter().next().map(|(t, f)| {
                format!(" (the server certificate, SHA-1 thumbprint {t}, is not trusted; a copy is at {})", f.display())
            });
            Err(format!("cannot connect to {}: {e}{}", opcua.endpoint, named.unwrap_or_default()))
        }
        _ => Err(format!("no session with {} within 10 s", opcua.endpoint)),
    };
    let _ = session.disconnect().await;
    driver.abort();
    result
}

async fn walk(session: &ReadSession, under: Option<&str>, depth: usize) -> Result<Vec<Node>, String> {
    let root = match under {
        Some(text) => NodeId::from_str(text).map_err(|_| format!("{text:?} is not a node id"))?,
        None => NodeId::objects_folder_id(),
    };
    let mut out = Vec::new();
    let mut seen = HashSet::from([root.clone()]);
    // Depth first, each node before its children, children in the server's order.
    let mut todo: Vec<(Node, NodeId)> = Vec::new();
    let mut expand = vec![(root, 0usize)];
    loop {
        if let Some((parent, level)) = expand.pop()
            && level < depth
            && out.len() + todo.len() < NODES_MAX
        {
            let found = nodes_under(session, &parent, level, &mut seen).await?;
            todo.extend(found.into_iter().rev());
        }
        let Some((node, id)) = todo.pop() else { break };
        expand.push((id, node.depth + 1));
        out.push(node);
    }
    Ok(out)
}

/// The new children of `parent` as nodes at `level`, with their variable details.
async fn nodes_under(
    session: &ReadSession,
    parent: &NodeId,
    level: usize,
    seen: &mut HashSet<NodeId>,
) -> Result<Vec<(Node, NodeId)>, String> {
    let children: Vec<(NodeId, String, NodeClass)> =
        children(session, parent).await?.into_iter().filter(|(id, _, _)| seen.insert(id.clone())).collect();
    let variables: Vec<NodeId> =
        children.iter().filter(|(_, _, c)| *c == NodeClass::Variable).map(|(id, _, _)| id.clone()).collect();
    let details = variable_details(session, &variables).await?;
    Ok(children
        .into_iter()
        .map(|(id, browse_name, class)| {
            let (data_type, array_length, readable) = details
                .iter()
                .find(|(v, ..)| *v == id)
                .map(|(_, t, a, r)| (t.clone(), *a, *r))
                .unwrap_or((None, None, false));
            let node =
                Node { depth: level, node_id: id.to_string(), browse_name, class, data_type, array_length, readable };
            (node, id)
        })
        .collect())
}

/// The hierarchical children of a node: (id, browse name, class).
async fn children(session: &ReadSession, parent: &NodeId) -> Result<Vec<(NodeId, String, NodeClass)>, String> {
    let description = BrowseDescription {
        node_id: parent.clone(),
        browse_direction: BrowseDirection::Forward,
        reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
        include_subtypes: true,
        node_class_mask: 0,
        result_mask: BrowseResultMask::All as u32,
    };
    let mut results =
        session.browse(&[description], REFERENCES_PER_NODE).await.map_err(|e| format!("browse {parent}: {e}"))?;
    let mut out = Vec::new();
    while let Some(result) = results.pop() {
        for r in result.references.unwrap_or_default() {
            if r.node_id.server_index != 0 {
                continue;
            }
            out.push((r.node_id.node_id, r.browse_name.name.as_ref().to_owned(), r.node_class));
        }
        if result.continuation_point.is_null() || out.len() >= NODES_MAX {
            break;
        }
        results = session
            .browse_next(&[result.continuation_point])
            .await
            .map_err(|e| format!("browse next {parent}: {e}"))?;
    }
    Ok(out)
}

/// Per variable: its built-in type name, array length and whether its value is readable.
async fn variable_details(
    session: &ReadSession,
    variables: &[NodeId],
) -> Result<Vec<(NodeId, Option<String>, Option<u32>, bool)>, String> {
    let attributes =
        [AttributeId::DataType, AttributeId::ValueRank, AttributeId::ArrayDimensions, AttributeId::AccessLevel];
    let mut out = Vec::new();
    for chunk in variables.chunks(100) {
        let reads: Vec<ReadValueId> = chunk
            .iter()
            .flat_map(|id| {
                attributes.iter().map(move |a| ReadValueId {
                    node_id: id.clone(),
                    attribute_id: *a as u32,
                    ..Default::default()
                })
            })
            .collect();
        let values =
            session.read(&reads, TimestampsToReturn::Neither).await.map_err(|e| format!("read attributes: {e}"))?;
        for (id, v) in chunk.iter().zip(values.chunks(attributes.len())) {
            let value = |i: usize| v.get(i).and_then(|dv| dv.value.clone());
            let data_type = match value(0) {
                Some(Variant::NodeId(t)) => builtin_name(&t).map(str::to_owned),
                _ => None,
            };
            let rank = match value(1) {
                Some(Variant::Int32(r)) => r,
                _ => -1,
            };
            let array_length = (rank >= 1).then(|| match value(2) {
                Some(Variant::Array(a)) => match a.values.first() {
                    Some(Variant::UInt32(n)) => *n,
                    _ => 0,
                },
                _ => 0,
            });
            let readable = matches!(value(3), Some(Variant::Byte(level)) if level & 1 == 1);
            out.push((id.clone(), data_type, array_length, readable));
        }
    }
    Ok(out)
}

/// The OPC UA built-in types a tag can read (Part 6, 5.1.2), by their namespace-0 node id.
fn builtin_name(t: &NodeId) -> Option<&'static str> {
    const NAMES: [&str; 14] = [
        "", "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64", "Float", "Double",
        "String", "DateTime",
    ];
    if t.namespace != 0 {
        return None;
    }
    match &t.identifier {
        opcua::types::Identifier::Numeric(n) if (1..14).contains(n) => Some(NAMES[*n as usize]),
        opcua::types::Identifier::Numeric(21) => Some("LocalizedText"),
        _ => None,
    }
}

/// Our type name for an OPC UA built-in type.
pub fn tag_type(opcua_type: &str) -> Option<&'static str> {
    Some(match opcua_type {
        "Boolean" => "bool",
        "SByte" | "Int16" => "i16",
        "Byte" | "UInt16" => "u16",
        "Int32" => "i32",
        "UInt32" => "u32",
        "Int64" | "DateTime" => "i64",
        "UInt64" => "u64",
        "Float" => "f32",
        "Double" => "f64",
        "String" | "LocalizedText" => "string",
        _ => return None,
    })
}

/// The tree for people: one line per node, indented by depth.
pub fn tree(nodes: &[Node]) -> String {
    let mut out = String::new();
    for n in nodes {
        let class = format!("{:?}", n.class);
        let mut line = format!("{}{}  {}  [{class}", "  ".repeat(n.depth), n.browse_name, n.node_id);
        if n.class == NodeClass::Variable {
            let ty = n.data_type.as_deref().unwrap_or("other");
            match n.array_length {
                Some(0) => line += &format!(", {ty}[]"),
                Some(len) => line += &format!(", {ty}[{len}]"),
                None => line += &format!(", {ty}"),
            }
            line += if n.readable { ", readable" } else { ", not readable" };
        }
        line += "]\n";
        out += &line;
    }
    out
}

/// A `[[device]]` section reading every readable variable of a type a tag can take: arrays of
/// numbers become waveform tags when their length is fixed (the sample rate is unknown to the
/// server and must be set: 1 Hz is written, with a comment). Others are listed as comments.
pub fn toml(nodes: &[Node], endpoint: &str, device: &str) -> String {
    // Everything the server names goes in escaped: a browse name or node id holding a line
    // break or a quote must not add a line of its own to the config (a sink, say).
    let mut out = format!(
        "# Written by `airlock browse {} --toml`: check the names, units and the edge settings.\n\
         [[device]]\nname = {}\nasset_path = \"site/area\"\nprotocol = \"opcua\"\naddress = {}\n",
        comment(endpoint),
        airlock_config::toml_quoted(device),
        airlock_config::toml_quoted(endpoint)
    );
    let mut names = HashSet::new();
    for n in nodes.iter().filter(|n| n.class == NodeClass::Variable) {
        let Some(ty) = n.data_type.as_deref() else {
            out += &format!(
                "# {} ({}): not a built-in type a tag can read\n",
                comment(&n.browse_name),
                comment(&n.node_id)
            );
            continue;
        };
        if !n.readable {
            out += &format!("# {} ({}): its value is not readable\n", comment(&n.browse_name), comment(&n.node_id));
            continue;
        }
        let mut name = segment(&n.browse_name);
        let base = name.clone();
        let mut k = 2;
        while !names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        let node_id = airlock_config::toml_quoted(&n.node_id);
        match (n.array_length, tag_type(ty)) {
            (None, Some(t)) => {
                out += &format!("\n[[device.tag]]\nname = \"{name}\"\nnode_id = {node_id}\ntype = \"{t}\"\n")
            }
            (Some(len), Some(t)) if (16..=4096).contains(&len) && !matches!(t, "bool" | "string") => {
                out += &format!(
                    "\n[[device.tag]]\nname = \"{name}\"\nnode_id = {node_id}\ntype = \"waveform\"\nwaveform_samples = {len}\n\
                     sample_rate_hz = 1 # the server does not say: set the real rate\n"
                )
            }
            _ => {
                let (name, id) = (comment(&n.browse_name), comment(&n.node_id));
                out += &format!("# {name} ({id}): an array airlock cannot read as a tag\n");
            }
        }
    }
    out
}

/// `text` fit for a TOML comment: control characters (a line break would end the comment and
/// start a line of config) shown as `?`.
fn comment(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A browse name as a tag name: letters, digits, `_` and `-` kept, the rest `_`.
fn segment(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if s.is_empty() { "tag".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variable(browse_name: &str, node_id: &str, data_type: Option<&str>, readable: bool) -> Node {
        Node {
            depth: 1,
            node_id: node_id.into(),
            browse_name: browse_name.into(),
            class: NodeClass::Variable,
            data_type: data_type.map(Into::into),
            array_length: None,
            readable,
        }
    }

    #[test]
    fn names_from_the_server_cannot_inject_config() {
        let inject = "\n[[sink]]\nname = \"leak\"\ntype = \"jsonl\"\npath = \"/tmp/leak\"\n";
        let nodes = [
            variable(&format!("speed{inject}"), &format!("ns=2;s=a\"b\\c{inject}"), Some("Double"), true),
            variable(&format!("locked{inject}"), &format!("ns=2;s=l{inject}"), Some("Double"), false),
            variable(&format!("odd{inject}"), "ns=2;s=o\r\n", None, true),
        ];
        let text = toml(&nodes, "opc.tcp://127.0.0.1:4840", "cell");
        let config = airlock_config::parse(&text, std::path::Path::new("browsed.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(config.sinks.is_empty(), "a sink was injected:\n{text}");
        let tags = &config.devices[0].tags;
        assert_eq!(tags.len(), 1, "{text}");
        let airlock_config::Protocol::OpcUa(o) = &config.devices[0].protocol else { panic!("an OPC UA device") };
        assert_eq!(o.nodes[0].node_id, format!("ns=2;s=a\"b\\c{inject}"), "the node id survives, escaped");
    }
}
