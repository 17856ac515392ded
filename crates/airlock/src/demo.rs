//! `airlock demo`: the simulated press line and a gateway reading it, with no setup at all.
//! It writes the config it generated, the log, and what would go upstream into one folder.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::gateway::Gateway;
use crate::{logger, parse_duration};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 30s); runs until Ctrl-C by default.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Where the demo writes its config, log and upstream file.
    #[arg(long, default_value = "airlock-demo")]
    dir: PathBuf,
    /// Simulated seconds per real second: at 600, an hour of plant passes in 6 seconds, and the
    /// gateway's clock runs as fast (its edge windows, shifts and trends are the plant's).
    #[arg(long, default_value_t = 600.0)]
    speed: f64,
    /// The seed of the simulated plant.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also publish upstream to this MQTT broker (`mqtt://host:1883`), under `airlock-demo/`.
    #[arg(long)]
    mqtt: Option<String>,
    /// Run in diode mode: the gateway's one sink is a diode (one-way UDP with forward error
    /// correction) to a receiving half in this process, on loopback, which writes the
    /// upstream file (and publishes to --mqtt).
    #[arg(long)]
    diode: bool,
    /// Where the read-only web dashboard listens (loopback: no token needed). If the port is
    /// taken, a free one is used and printed.
    #[arg(long, default_value = "127.0.0.1:8080")]
    web: std::net::SocketAddr,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.speed.is_finite() && args.speed > 0.0, "--speed must be above 0");
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    // Every demo starts afresh: no store or upstream file from an earlier run; but never the
    // store of a gateway that is running on it.
    for store in
        [("data", "outbox"), ("data", "historian"), ("it-data", "outbox")].map(|(d, s)| args.dir.join(d).join(s))
    {
        anyhow::ensure!(
            !airlock_store::is_in_use(&store),
            "{} is in use by a running airlock (its LOCK is held); stop it, or give the demo another --dir",
            store.display()
        );
    }
    let upstream_path = args.dir.join("upstream.jsonl");
    for stale in [args.dir.join("data"), args.dir.join("it-data"), upstream_path.clone()] {
        let _ = std::fs::remove_dir_all(&stale).or_else(|_| std::fs::remove_file(&stale));
    }
    let log_path = args.dir.join("airlock.log");
    logger::init(Some(std::fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?));

    // The line's bearings have run two days: press2's, which wears fastest, is on its way to
    // zone D, so that its maintenance advice comes within the demo's first minute and a half.
    let opts = airlock_sim::SimOptions {
        seed: args.seed,
        speed: args.speed,
        bearing_age_days: DEMO_BEARING_AGE_DAYS,
        ..Default::default()
    };
    let sim = airlock_sim::start(&opts).await.context("start the simulated plant")?;
    let config_path = args.dir.join("demo.toml");
    let mqtt_sink = args.mqtt.as_ref().map(|url| {
        format!("\n[[sink]]\nname = \"uns\"\ntype = \"mqtt\"\nurl = {url:?}\ntopic_prefix = \"airlock-demo/\"\n")
    });
    // Diode mode: the IT half first (it takes what the OT half sends from its first heartbeat on).
    let receiving = if args.diode {
        let port =
            std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).context("a free UDP port")?.port();
        let it_path = args.dir.join("receive.toml");
        let it_text = format!(
            "[receive]\nlisten = \"127.0.0.1:{port}\"\nsender = \"demo\"\n\n[store]\ndata_dir = \"it-data\"\n\n\
             [[sink]]\nname = \"upstream-file\"\ntype = \"jsonl\"\npath = \"upstream.jsonl\"\n{}",
            mqtt_sink.clone().unwrap_or_default()
        );
        std::fs::write(&it_path, it_text).with_context(|| format!("write {}", it_path.display()))?;
        let it_config =
            airlock_config::load_receive(&it_path).map_err(|e| anyhow::anyhow!("the built-in receive config: {e}"))?;
        Some((crate::receive::Receiving::start(&it_config).context("start the receiving half")?, port))
    } else {
        None
    };
    // The plant's first shift began at the top of this hour; the gateway's clock shows that
    // time when it starts and runs as fast as the plant.
    let plant_start = airlock_model::Timestamp::from_millis(
        airlock_model::Timestamp::now().as_millis().div_euclid(3_600_000) * 3_600_000,
    );
    let mut text = sim.config_toml_on_plant_clock(200, plant_start);
    match &receiving {
        Some((_, port)) => {
            text += &format!(
                "\n[store]\ndata_dir = \"data\"\nfsync_interval_ms = 10\n\n\
                 [[sink]]\nname = \"diode\"\ntype = \"diode\"\naddress = \"127.0.0.1:{port}\"\nrepair_percent = 5\nheartbeat_s = 1\n"
            );
        }
        None => {
            text += DEMO_STORE_AND_SINK;
            text += &mqtt_sink.unwrap_or_default();
        }
    }
    // Bound here and handed over, so that no other program takes the port in between.
    let web_listener = free_or_any(args.web)?;
    let web = web_listener.local_addr().context("the dashboard's address")?;
    text += &format!("\n# The read-only dashboard.\n[web]\nlisten = \"{web}\"\n");
    std::fs::write(&config_path, text).with_context(|| format!("write {}", config_path.display()))?;
    let config = airlock_config::load(&config_path).map_err(|e| anyhow::anyhow!("the built-in config: {e}"))?;

    let mut gateway = Gateway::start_with(config, Some(web_listener)).context("start the gateway")?;
    crate::say!("airlock demo: simulated press line at {}x, config {}", args.speed, config_path.display());
    crate::say!("upstream records: {}   log: {}", upstream_path.display(), log_path.display());
    if let Some(w) = &gateway.web {
        crate::say!("dashboard: http://{}/  (read-only; JSON API under /api/v1/, Prometheus at /metrics)", w.address);
    }
    if let Some(url) = &args.mqtt {
        crate::say!("publishing to {url} under airlock-demo/ (see them: mosquitto_sub -h HOST -t 'airlock-demo/#' -v)");
    }

    let header = format!(
        "airlock demo: press line at {}x  |  upstream: {}  |  Ctrl-C stops",
        args.speed,
        upstream_path.display()
    );
    let mut view = crate::view::View::new(&gateway, header);
    if let Some((r, _)) = &receiving {
        crate::say!(
            "diode mode: the gateway sends one way over UDP to a receiving half on 127.0.0.1 (its data in it-data)"
        );
        let (status, sinks) = (std::sync::Arc::clone(&r.status), r.sink_health.clone());
        view = view.with_extra(move || it_line(&status, &sinks));
    }
    crate::view::show_view_until(view, &mut gateway, args.duration, None).await;
    let health = gateway.health.clone();
    let sinks = gateway.sink_health.clone();
    let data_dir = gateway.config.store.data_dir.clone();
    let plant_now = gateway.clock.now();
    gateway.stop().await;
    sim.stop();
    if let Some((r, _)) = receiving {
        // What the OT half sent on its way out has a moment to arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        crate::say!("{}", it_line(&r.status, &r.sink_health));
        tokio::task::spawn_blocking(move || r.stop()).await.context("stop the receiving half")?;
    }
    let samples: u64 = health.iter().map(|h| airlock_model::DeviceHealth::get(&h.samples)).sum();
    crate::say!("read {samples} samples into the historian in {}", data_dir.display());
    for (name, h) in &sinks {
        crate::say!(
            "sink {name}: delivered {} upstream records",
            h.delivered.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    // The historian holds the plant's time, from the hour its first shift began.
    crate::say!(
        "query it: airlock query --data {} --tag press1/speed --from {plant_start} --to {plant_now} --every 1h",
        data_dir.display()
    );
    Ok(())
}

/// The IT half's line in the live view: what came through the diode, and what its sinks sent.
fn it_line(status: &airlock_diode::receive::ReceiveStatus, sinks: &crate::gateway::SinkHealths) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let s = status.stats.lock().map(|s| *s).unwrap_or_default();
    let delivered: Vec<String> =
        sinks.iter().map(|(name, h)| format!("{name} {}", h.delivered.load(Relaxed))).collect();
    format!(
        "IT half (receive): {} records through the diode, {} missing, {} duplicates; {} datagrams, {} blocks{}; delivered: {}",
        s.records,
        s.missing,
        s.duplicates,
        s.datagrams,
        s.blocks_decoded,
        if status.silent.load(Relaxed) { "; SILENT" } else { "" },
        delivered.join(", ")
    )
}

/// A listener on `wanted` if it is free, else on the same address with a port the system picks.
fn free_or_any(wanted: std::net::SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    if let Ok(listener) = std::net::TcpListener::bind(wanted) {
        return Ok(listener);
    }
    let any = std::net::SocketAddr::new(wanted.ip(), 0);
    std::net::TcpListener::bind(any)
        .with_context(|| format!("{wanted} is taken and no free port was found on {}", wanted.ip()))
}

/// How long the demo line's bearings have run when it starts.
pub const DEMO_BEARING_AGE_DAYS: f64 = 2.0;

/// The demo's store (beside its config) and its one sink, the upstream file.
const DEMO_STORE_AND_SINK: &str = r#"
[store]
data_dir = "data"
fsync_interval_ms = 10

[[sink]]
name = "upstream-file"
type = "jsonl"
path = "upstream.jsonl"
"#;
