//! The `airlock` command: `demo` runs the built-in demo plant with no setup, `run` runs a
//! config, `check` validates one, `sim` serves the simulated plant on its own.

#[cfg(feature = "sim")]
use airlock::demo;
use airlock::{browse, check, gateway, import, logger, parse_duration, query, receive, resend, service, status, view};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "The one-way airlock between a plant's machines (OT) and its business systems (IT)."
)]
struct Cli {
    /// How log lines are written: text, or one JSON object per line (also AIRLOCK_LOG_FORMAT).
    #[arg(long, global = true, value_enum)]
    log_format: Option<logger::Format>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the simulated press line and a gateway reading it, with a live view.
    #[cfg(feature = "sim")]
    Demo(demo::DemoArgs),
    /// (Not in this build: it was built without the simulator.)
    #[cfg(not(feature = "sim"))]
    #[command(hide = true)]
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the gateway with a config file.
    Run {
        /// The config file (TOML).
        file: PathBuf,
        /// Write what would go upstream to this JSON Lines file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stop after this long (e.g. 30s, 5m); runs until Ctrl-C by default.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Run the IT half of a diode: receive what a gateway's diode sink sends, keep it in this
    /// side's own outbox and send it on through this side's sinks.
    Receive {
        /// The receiving half's config file (TOML: [receive], [store], [[sink]]).
        file: PathBuf,
        /// Stop after this long (e.g. 30s, 5m); runs until Ctrl-C by default.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<Duration>,
    },
    /// Diode mode, on the OT side.
    Diode {
        #[command(subcommand)]
        action: DiodeAction,
    },
    /// Validate a config file and print what it would read; exit 1 on any problem.
    Check {
        /// The config file (TOML).
        file: PathBuf,
    },
    /// Print an OPC UA server's address space as a tree, or (--toml) as tags for a config.
    Browse(browse::BrowseArgs),
    /// Query the historian in a data folder: raw values, aggregates, interpolation, last values.
    Query(query::QueryArgs),
    /// Export the historian's samples in a time range to CSV or Parquet.
    Export(query::ExportArgs),
    /// Make config from what plant people already keep (a Modbus register list in CSV).
    Import {
        #[command(subcommand)]
        what: ImportWhat,
    },
    /// The health of a running gateway, from the status file in its data folder (no port).
    Status(status::StatusArgs),
    /// (Not in this build: it was built without the simulator.)
    #[cfg(not(feature = "sim"))]
    #[command(hide = true)]
    Sim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Serve the simulated press line (Modbus TCP, and OPC UA for the line) until Ctrl-C.
    #[cfg(feature = "sim")]
    Sim {
        /// The first machine's port; the others follow (0 picks free ports).
        #[arg(long, default_value_t = 5020)]
        base_port: u16,
        /// The seed of the plant's randomness.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Simulated seconds per real second.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Print a config that reads the simulated plant, then serve.
        #[arg(long)]
        print_config: bool,
        /// Serve only an OPC UA load server instead: this many Double nodes (ns=2;s=Load.<i>),
        /// each changing every 100 ms (for the OPC UA benchmark).
        #[arg(long)]
        opcua_load: Option<usize>,
    },
}

#[derive(Subcommand)]
enum ImportWhat {
    /// Print a [[device]] from a Modbus register list (CSV: name, address, type, order, scale,
    /// unit; 40001-style addresses, or 0-based ones with a space column).
    ModbusCsv(import::ModbusCsvArgs),
}

#[derive(Subcommand)]
enum DiodeAction {
    /// Send again from a record or a time (what the OT outbox still holds), for a range the
    /// IT side reported missing. Local: it writes a request into the data folder.
    Resend {
        /// The gateway's config file (TOML).
        file: PathBuf,
        /// A record id (r1200, e17) or an RFC 3339 time (2026-11-29T10:00:00Z).
        #[arg(long)]
        from: String,
        /// The diode sink, if the config has more than one.
        #[arg(long)]
        sink: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(format) = cli.log_format {
        logger::set_format(format);
    }
    match cli.command {
        Command::Check { file } => check::run(&file),
        Command::Diode { action: DiodeAction::Resend { file, from, sink } } => {
            report(resend::run(&file, &from, sink.as_deref()))
        }
        Command::Query(args) => report(query::query(args)),
        Command::Export(args) => report(query::export(args)),
        Command::Status(args) => status::run(&args),
        Command::Import { what: ImportWhat::ModbusCsv(args) } => report(import::modbus_csv(&args)),
        command => report(run_async(command)),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airlock: {}", airlock::error_text(&e));
            ExitCode::FAILURE
        }
    }
}

fn run_async(command: Command) -> anyhow::Result<()> {
    // Two workers, or one where the process may run on one core only (`taskset`, a container's
    // CPU set): a second worker there only adds wake-ups and a malloc arena.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.min(2))
        .enable_all()
        .build()
        .context("start the runtime")?;
    runtime.block_on(async {
        match command {
            #[cfg(feature = "sim")]
            Command::Demo(args) => demo::run(args).await,
            #[cfg(not(feature = "sim"))]
            Command::Demo { .. } | Command::Sim { .. } => Err(anyhow::anyhow!(
                "this airlock was built without the simulated plant (cargo build --no-default-features), \
                 so it has no demo and no sim; the default build has them"
            )),
            Command::Browse(args) => browse::run(args).await,
            Command::Run { file, out, duration } => run_config(file, out, duration).await,
            Command::Receive { file, duration } => receive::run(&file, duration).await,
            #[cfg(feature = "sim")]
            Command::Sim { base_port, opcua_load: Some(n), .. } => sim_opcua_load(base_port, n).await,
            #[cfg(feature = "sim")]
            Command::Sim { base_port, seed, speed, print_config, opcua_load: None } => {
                sim(base_port, seed, speed, print_config).await
            }
            Command::Check { .. }
            | Command::Query(_)
            | Command::Export(_)
            | Command::Status(_)
            | Command::Import { .. }
            | Command::Diode { .. } => Ok(()),
        }
    })
}

async fn run_config(file: PathBuf, out: Option<PathBuf>, duration: Option<Duration>) -> anyhow::Result<()> {
    logger::init(None);
    let mut config = airlock_config::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(path) = out {
        let kind = airlock_config::SinkKind::Jsonl { path };
        config.sinks.push(airlock_config::Sink { name: "cli-out".into(), kind });
    }
    log::info!(
        "running {} devices from {}; data in {}",
        config.devices.len(),
        file.display(),
        config.store.data_dir.display()
    );
    let mut gateway = gateway::Gateway::start(config).context("start the gateway")?;
    if let Some(w) = &gateway.web {
        match &w.login_url {
            Some(link) => {
                eprintln!("dashboard: {link}  (a one-time login link; scripts send the token as a bearer header)")
            }
            None => eprintln!("dashboard: http://{}/", w.address),
        }
    }
    let header = format!("airlock run {}", file.display());
    service::ready(&format!("running {} devices", gateway.config.devices.len()));
    let view = view::View::new(&gateway, header);
    view::show_view_until(view, &mut gateway, duration, Some(&file)).await;
    service::stopping();
    gateway.stop().await;
    log::info!("stopped");
    Ok(())
}

#[cfg(feature = "sim")]
async fn sim_opcua_load(port: u16, nodes: usize) -> anyhow::Result<()> {
    logger::init(None);
    let pki = std::env::temp_dir().join(format!("airlock-sim-opcua-load-{}", std::process::id()));
    let every = Duration::from_millis(100);
    let server = airlock_sim::opcua::serve_load([127, 0, 0, 1].into(), port, &pki, nodes, every)
        .await
        .context("start the OPC UA load server")?;
    eprintln!("OPC UA load on {} ({nodes} nodes, each changing every 100 ms)", server.endpoint);
    tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
    server.stop();
    Ok(())
}

#[cfg(feature = "sim")]
async fn sim(base_port: u16, seed: u64, speed: f64, print_config: bool) -> anyhow::Result<()> {
    logger::init(None);
    anyhow::ensure!(speed.is_finite() && speed > 0.0, "--speed must be above 0");
    let opts = airlock_sim::SimOptions { seed, speed, base_port, ..Default::default() };
    let sim = airlock_sim::start(&opts).await.context("start the simulated plant")?;
    if print_config {
        airlock::print_out(&format!("{}\n", sim.config_toml(1000)));
    }
    for (name, s) in &sim.servers {
        eprintln!("{name:<8} Modbus TCP on {}", s.addr);
    }
    if let Some(o) = &sim.opcua {
        eprintln!("line3    OPC UA on {}", o.endpoint);
    }
    eprintln!("simulated press line running at {speed}x (seed {seed}); Ctrl-C stops it");
    tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
    sim.stop();
    Ok(())
}
