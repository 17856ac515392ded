//! `airlock browse`: the address space of an OPC UA server as a tree, or (`--toml`) as a
//! `[[device]]` section of tags for the readable variables that `airlock check` accepts.

use std::path::PathBuf;

use airlock_config::{Identity, OpcUaDevice, ReadMode, Secret, Security};
use airlock_south_opcua::browse::{browse, toml, tree};
use anyhow::{Context as _, bail};
use clap::Args;

#[derive(Args, Debug)]
pub struct BrowseArgs {
    /// The server's endpoint, e.g. opc.tcp://192.168.10.30:4840
    pub endpoint: String,
    /// Levels below the start node to walk.
    #[arg(long, default_value_t = 3)]
    pub depth: usize,
    /// The node to start from (default: the Objects folder), e.g. "ns=2;s=Line3".
    #[arg(long)]
    pub under: Option<String>,
    /// Print a [[device]] section with a tag per readable variable instead of the tree.
    #[arg(long)]
    pub toml: bool,
    /// The device name written by --toml.
    #[arg(long, default_value = "opcua1")]
    pub name: String,
    /// none, sign or sign_and_encrypt.
    #[arg(long, default_value = "none")]
    pub security: String,
    /// A server certificate (DER or PEM) to trust; may be given more than once.
    #[arg(long)]
    pub trust: Vec<PathBuf>,
    /// A user name; the password is read from the environment variable AIRLOCK_OPCUA_PASSWORD.
    #[arg(long)]
    pub username: Option<String>,
    /// Where airlock keeps its OPC UA application certificate.
    #[arg(long, default_value = "airlock-data")]
    pub data_dir: PathBuf,
}

pub async fn run(args: BrowseArgs) -> anyhow::Result<()> {
    if !args.endpoint.starts_with("opc.tcp://") {
        bail!("{:?} is not an OPC UA endpoint (opc.tcp://host:port)", args.endpoint);
    }
    let security = Security::ALL
        .iter()
        .find(|(n, _)| *n == args.security)
        .map(|(_, s)| *s)
        .with_context(|| format!("--security {:?}: expected none, sign or sign_and_encrypt", args.security))?;
    let identity = match &args.username {
        Some(u) => Identity::User { username: u.clone(), password: Secret::Env("AIRLOCK_OPCUA_PASSWORD".into()) },
        None => Identity::Anonymous,
    };
    let device = OpcUaDevice {
        endpoint: args.endpoint.clone(),
        security,
        identity,
        trusted_server_certs: args.trust.clone(),
        mode: ReadMode::Poll,
        nodes: Vec::new(),
    };
    let nodes = browse(&device, &args.data_dir, args.under.as_deref(), args.depth).await.map_err(anyhow::Error::msg)?;
    if args.toml {
        crate::print_out(&toml(&nodes, &args.endpoint, &args.name));
    } else {
        crate::print_out(&tree(&nodes));
    }
    Ok(())
}
