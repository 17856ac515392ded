//! `airlock demo`: the simulated press line and a gateway reading it, with no setup at all.
//! It writes the config it generated, the log, and what would go upstream into one folder.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

use crate::gateway::{Gateway, tag_table};
use crate::upstream::Upstream;
use crate::{logger, parse_duration};

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. 30s); runs until Ctrl-C by default.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Where the demo writes its config, log and upstream file.
    #[arg(long, default_value = "airlock-demo")]
    dir: PathBuf,
    /// Simulated seconds per real second: at 60, an hour of plant passes in a minute.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// The seed of the simulated plant.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.speed.is_finite() && args.speed > 0.0, "--speed must be above 0");
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let log_path = args.dir.join("airlock.log");
    logger::init(Some(std::fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?));

    let opts = airlock_sim::SimOptions { seed: args.seed, speed: args.speed, ..Default::default() };
    let sim = airlock_sim::start(&opts).await.context("start the simulated plant")?;
    let config_path = args.dir.join("demo.toml");
    std::fs::write(&config_path, sim.config_toml(500)).with_context(|| format!("write {}", config_path.display()))?;
    let config = airlock_config::load(&config_path).map_err(|e| anyhow::anyhow!("the built-in config: {e}"))?;

    let upstream_path = args.dir.join("upstream.jsonl");
    let tags = Arc::new(tag_table(&config));
    let upstream = Upstream::to_file(&upstream_path, tags, &config.gateway.name)
        .with_context(|| format!("create {}", upstream_path.display()))?;
    let gateway = Gateway::start(config, upstream).context("start the gateway")?;
    println!("airlock demo: simulated press line at {}x, config {}", args.speed, config_path.display());
    println!("upstream records: {}   log: {}", upstream_path.display(), log_path.display());

    let header = format!(
        "airlock demo: press line at {}x  |  upstream: {}  |  Ctrl-C stops",
        args.speed,
        upstream_path.display()
    );
    show_until(&gateway, header, args.duration, |_| String::new()).await;
    let health = gateway.health.clone();
    let upstream = gateway.stop().await;
    sim.stop();
    let samples: u64 = health.iter().map(|h| airlock_model::DeviceHealth::get(&h.samples)).sum();
    println!("read {samples} samples; wrote {} upstream records to {}", upstream.records(), upstream_path.display());
    Ok(())
}

/// Redraws the live view until `duration` has passed or Ctrl-C is pressed.
pub async fn show_until(
    gateway: &Gateway,
    header: String,
    duration: Option<Duration>,
    footer: impl Fn(&Gateway) -> String,
) {
    let mut view = crate::view::View::new(gateway, header);
    let deadline = duration.map(|d| Instant::now() + d);
    let mut ticker = tokio::time::interval(view.period());
    ticker.tick().await;
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ticker.tick() => view.draw(gateway, &footer(gateway)),
            () = until_deadline => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    view.draw(gateway, &footer(gateway));
}
