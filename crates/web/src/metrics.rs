//! `/metrics` in Prometheus' text format (prometheus-client's encoder): read at each scrape
//! from the same health counters the dashboard shows, so nothing is counted twice. Per device
//! polls, requests, samples, errors by reason and a request latency histogram; per sink
//! delivered, queued, lag, retries and dead letters; the store's bytes, samples and drops;
//! events by kind; the process's resident memory and CPU time (from `/proc/self`).

use std::sync::Arc;

use airlock_model::{DeviceHealth, Latency};
use axum::extract::State;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::Dashboard;
use crate::serve::{App, typed};

#[derive(Debug)]
struct Gateway(Arc<Dashboard>);

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").field("gateway", &self.gateway).finish_non_exhaustive()
    }
}

/// One metric family: its descriptor, then a value per label set.
fn family<'a, V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Vec<(&'a str, String)>, V)>,
    encode: impl Fn(&mut prometheus_client::encoding::MetricEncoder, &V) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in rows {
        let labels: Vec<(&str, String)> = labels;
        let mut one = metric.encode_family(&labels)?;
        encode(&mut one, &value)?;
    }
    Ok(())
}

fn counter(m: &mut prometheus_client::encoding::MetricEncoder, v: &u64) -> Result<(), std::fmt::Error> {
    m.encode_counter::<prometheus_client::encoding::NoLabelSet, u64, u64>(v, None)
}

fn gauge(m: &mut prometheus_client::encoding::MetricEncoder, v: &f64) -> Result<(), std::fmt::Error> {
    m.encode_gauge(v)
}

impl Collector for Gateway {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let d = &self.0;
        let device = |name: &str| vec![("device", name.to_owned())];
        let each = |f: fn(&DeviceHealth) -> u64| {
            d.devices.iter().map(move |v| (device(&v.name), f(&v.health))).collect::<Vec<_>>()
        };
        let c = MetricType::Counter;
        family(
            &mut e,
            "airlock_device_polls",
            "Polls started, per device.",
            None,
            c,
            each(|h| DeviceHealth::get(&h.polls)),
            counter,
        )?;
        family(
            &mut e,
            "airlock_device_requests",
            "Requests sent to the device.",
            None,
            c,
            each(|h| DeviceHealth::get(&h.requests)),
            counter,
        )?;
        family(
            &mut e,
            "airlock_device_samples",
            "Samples read from the device.",
            None,
            c,
            each(|h| DeviceHealth::get(&h.samples)),
            counter,
        )?;
        family(
            &mut e,
            "airlock_device_restarts",
            "Times the device's task was restarted.",
            None,
            c,
            each(|h| DeviceHealth::get(&h.restarts)),
            counter,
        )?;
        let errors = d.devices.iter().flat_map(|v| {
            let h = &v.health;
            [
                ("exception", DeviceHealth::get(&h.exceptions)),
                ("communication", DeviceHealth::get(&h.comm_errors)),
                ("channel_full", DeviceHealth::get(&h.batches_dropped)),
            ]
            .map(|(reason, n)| (vec![("device", v.name.clone()), ("reason", reason.to_owned())], n))
        });
        family(
            &mut e,
            "airlock_device_errors",
            "Errors per device and reason: protocol exceptions, communication failures (timeouts, refused or dropped connections, malformed frames), batches dropped because the pipeline was full.",
            None,
            c,
            errors,
            counter,
        )?;
        let states = d
            .devices
            .iter()
            .map(|v| (device(&v.name), if v.health.state() == airlock_model::LinkState::Up { 1.0 } else { 0.0 }));
        family(
            &mut e,
            "airlock_device_up",
            "1 while the device's link is up.",
            None,
            MetricType::Gauge,
            states,
            gauge,
        )?;
        {
            let mut metric = e.encode_descriptor(
                "airlock_device_request_latency",
                "How long a request took to be answered (or to fail), per device.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for v in &d.devices {
                let (counts, sum) = v.health.latency.read();
                let mut buckets: Vec<(f64, u64)> =
                    Latency::BOUNDS_MS.iter().zip(counts.iter()).map(|(b, n)| (b / 1000.0, *n)).collect();
                buckets.push((f64::MAX, counts[counts.len() - 1]));
                let total = counts.iter().sum();
                let labels = device(&v.name);
                let mut one = metric.encode_family(&labels)?;
                one.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, total, &buckets, None)?;
            }
        }
        let sink = |name: &str| vec![("sink", name.to_owned())];
        let rows = crate::api::sink_rows(d);
        family(
            &mut e,
            "airlock_sink_delivered",
            "Records the sink's receiver acknowledged.",
            None,
            c,
            rows.iter().map(|r| (sink(&r.name), r.delivered)),
            counter,
        )?;
        family(
            &mut e,
            "airlock_sink_retries",
            "Deliveries that failed and are retried with backoff.",
            None,
            c,
            rows.iter().map(|r| (sink(&r.name), r.failures)),
            counter,
        )?;
        family(
            &mut e,
            "airlock_sink_dead_letters",
            "Records the receiver refused for good, parked.",
            None,
            c,
            rows.iter().map(|r| (sink(&r.name), r.dead_lettered)),
            counter,
        )?;
        family(
            &mut e,
            "airlock_sink_queued",
            "Records in the outbox the sink has not delivered.",
            None,
            MetricType::Gauge,
            rows.iter().map(|r| (sink(&r.name), r.queued as f64)),
            gauge,
        )?;
        family(
            &mut e,
            "airlock_sink_lag",
            "Age of the oldest record the sink has not delivered.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            rows.iter().map(|r| (sink(&r.name), r.lag_s)),
            gauge,
        )?;
        let sent = d.sinks.iter().flat_map(|s| {
            let v = s.health.ledger.view();
            airlock_store::Class::ALL
                .map(|c| (vec![("sink", s.name.clone()), ("class", c.name().to_owned())], v.bytes[c as usize]))
        });
        family(
            &mut e,
            "airlock_sink_sent_bytes",
            "Bytes the sink put on its wire, per class (the egress ledger).",
            None,
            c,
            sent,
            counter,
        )?;
        let store = crate::api::store_row(d);
        let none = Vec::<(&str, String)>::new;
        family(
            &mut e,
            "airlock_samples_stored",
            "Samples written to the historian.",
            None,
            c,
            [(none(), store.samples_stored)],
            counter,
        )?;
        family(
            &mut e,
            "airlock_records_queued",
            "Records the edge put into the outbox.",
            None,
            c,
            [(none(), store.records_queued)],
            counter,
        )?;
        family(
            &mut e,
            "airlock_store_errors",
            "Store writes that failed.",
            None,
            c,
            [(none(), store.store_errors)],
            counter,
        )?;
        family(
            &mut e,
            "airlock_outbox_dropped",
            "Records dropped unacknowledged (full, too old, or lost to a failed write).",
            None,
            c,
            [(none(), store.outbox_dropped)],
            counter,
        )?;
        family(
            &mut e,
            "airlock_historian_samples_lost",
            "Samples the historian could not write.",
            None,
            c,
            [(none(), store.historian_samples_lost)],
            counter,
        )?;
        let bytes = [("outbox", store.outbox_bytes as f64), ("historian", store.historian_bytes as f64)];
        family(
            &mut e,
            "airlock_store",
            "Bytes on disk per store.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            bytes.map(|(s, b)| (vec![("store", s.to_owned())], b)),
            gauge,
        )?;
        let events = d.collector.events.counts().into_iter().map(|(kind, n)| (vec![("kind", kind)], n));
        family(&mut e, "airlock_events", "Events queued upstream, per kind.", None, c, events, counter)?;
        let (rss, cpu) = process();
        family(
            &mut e,
            "airlock_process_resident_memory",
            "Resident memory of the process.",
            Some(&Unit::Bytes),
            MetricType::Gauge,
            [(none(), rss)],
            gauge,
        )?;
        let mut metric = e.encode_descriptor(
            "airlock_process_cpu",
            "CPU time of the process, user and system.",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        cpu.encode(metric.encode_family(&Vec::<(&str, String)>::new())?)?;
        Ok(())
    }
}

/// CPU seconds as a counter value.
struct CpuSeconds(f64);

impl EncodeMetric for CpuSeconds {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, f64, f64>(&self.0, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// The process's resident memory (bytes) and CPU time (seconds), from `/proc/self`. Linux
/// counts CPU time in clock ticks of 1/100 s on every platform airlock runs on.
fn process() -> (f64, CpuSeconds) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().to_owned()))
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces, in parentheses).
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0);
    (rss, CpuSeconds(cpu))
}

pub(crate) async fn metrics(State(app): State<App>) -> Response {
    let dashboard = Arc::clone(&app.dashboard);
    // Off the runtime's threads: a scrape reads the stores' counters under their locks.
    let text = crate::api::blocking(move || {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Gateway(dashboard)));
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            text = format!("# the metrics could not be encoded: {e}\n");
        }
        text
    })
    .await;
    match text {
        Ok(text) => typed("application/openmetrics-text; version=1.0.0; charset=utf-8", text),
        Err(r) => r,
    }
}
