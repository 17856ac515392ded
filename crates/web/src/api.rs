//! The JSON API under `/api/v1/`, and the figures the pages draw from: devices, sinks, the
//! store, tags and their latest values, history from the historian, events, the egress ledger.
//! Every query parameter is checked and bounded; a bad one is a 400 that says why.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_model::{DeviceHealth, Timestamp, Value, readable};
use airlock_store::{Bucket, Class, StoredSample};
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Dashboard;
use crate::answers::ANSWER_WAIT_MAX;
use crate::serve::{App, bad_request, typed};

/// Buckets a history answer holds at most, and raw samples.
pub const BUCKETS_MAX: i64 = 5000;
pub const RAW_SAMPLES_MAX: usize = 100_000;
/// Rows a CSV download holds at most.
pub const CSV_ROWS_MAX: usize = 500_000;
/// The longest range a history request may ask for, and the longest interval.
pub const RANGE_MAX: Duration = Duration::from_secs(400 * 86_400);
pub const EVERY_MAX: Duration = Duration::from_secs(86_400);
/// Raw samples are read a day at a time: the historian's lock, shared with the writer the
/// plant's data goes through, is held for one day of one tag at most (and no further than the
/// query's bound of samples).
const RAW_SLICE: Duration = Duration::from_secs(86_400);

#[derive(Serialize)]
pub struct DeviceRow {
    pub name: String,
    pub protocol: &'static str,
    pub address: String,
    pub state: &'static str,
    pub last_error: String,
    pub samples_per_s: f64,
    pub requests_per_s: f64,
    pub polls: u64,
    pub requests: u64,
    pub samples: u64,
    pub exceptions: u64,
    pub comm_errors: u64,
    pub batches_dropped: u64,
    pub restarts: u64,
}

#[derive(Serialize)]
pub struct SinkRow {
    pub name: String,
    pub kind: &'static str,
    pub queued: u64,
    pub delivered: u64,
    pub failures: u64,
    pub dead_lettered: u64,
    pub restarts: u64,
    /// Seconds since the oldest record the sink has not delivered was made (0 when none waits).
    pub lag_s: f64,
    pub last_sent: Option<String>,
    pub problem: String,
}

#[derive(Serialize)]
pub struct StoreRow {
    pub samples_stored: u64,
    pub records_queued: u64,
    pub store_errors: u64,
    pub outbox_bytes: u64,
    pub outbox_bytes_max: u64,
    pub outbox_dropped: u64,
    pub historian_bytes: u64,
    pub historian_bytes_max: u64,
    pub historian_samples_lost: u64,
}

#[derive(Serialize)]
pub struct TagRow {
    pub path: String,
    pub name: String,
    pub device: String,
    pub unit: Option<String>,
    #[serde(rename = "type")]
    pub value_type: String,
    pub value: Option<serde_json::Value>,
    pub quality: Option<String>,
    pub age_s: Option<f64>,
}

/// Samples and requests per second per device, over the last few seconds: totals are kept
/// at most every [`Rates::WINDOW`], so any number of dashboards share one window.
#[derive(Default)]
pub struct Rates {
    kept: Mutex<Option<Kept>>,
}

/// When the totals were kept, the totals (samples, requests) then, and the rates last computed.
type Kept = (Instant, Vec<(u64, u64)>, Vec<(f64, f64)>);

impl Rates {
    const WINDOW: Duration = Duration::from_secs(5);

    fn get(&self, d: &Dashboard) -> Vec<(f64, f64)> {
        let totals: Vec<(u64, u64)> = d
            .devices
            .iter()
            .map(|v| (DeviceHealth::get(&v.health.samples), DeviceHealth::get(&v.health.requests)))
            .collect();
        let Ok(mut kept) = self.kept.lock() else { return vec![(0.0, 0.0); totals.len()] };
        let since_start = d.started.elapsed().as_secs_f64().max(1e-3);
        match kept.as_mut() {
            None => {
                let rates = totals.iter().map(|(s, r)| (*s as f64 / since_start, *r as f64 / since_start)).collect();
                *kept = Some((Instant::now(), totals, rates));
            }
            Some((at, before, rates)) if at.elapsed() >= Self::WINDOW => {
                let dt = at.elapsed().as_secs_f64();
                *rates = totals
                    .iter()
                    .zip(before.iter())
                    .map(|(n, b)| (n.0.saturating_sub(b.0) as f64 / dt, n.1.saturating_sub(b.1) as f64 / dt))
                    .collect();
                *at = Instant::now();
                *before = totals;
            }
            Some(_) => {}
        }
        kept.as_ref().map(|k| k.2.clone()).unwrap_or_default()
    }
}

pub fn device_rows(d: &Dashboard, rates: &Rates) -> Vec<DeviceRow> {
    let rates = rates.get(d);
    d.devices
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let h = &v.health;
            let (samples_per_s, requests_per_s) = rates.get(i).copied().unwrap_or_default();
            DeviceRow {
                name: v.name.clone(),
                protocol: v.protocol,
                address: v.address.clone(),
                state: h.state().word(),
                last_error: h.last_error(),
                samples_per_s,
                requests_per_s,
                polls: DeviceHealth::get(&h.polls),
                requests: DeviceHealth::get(&h.requests),
                samples: DeviceHealth::get(&h.samples),
                exceptions: DeviceHealth::get(&h.exceptions),
                comm_errors: DeviceHealth::get(&h.comm_errors),
                batches_dropped: DeviceHealth::get(&h.batches_dropped),
                restarts: DeviceHealth::get(&h.restarts),
            }
        })
        .collect()
}

pub fn sink_rows(d: &Dashboard) -> Vec<SinkRow> {
    let end = d.outbox.end().ok();
    d.sinks
        .iter()
        .map(|s| {
            let h = &s.health;
            let queued = match (&end, d.outbox.position(&s.name)) {
                (Some(end), Ok(at)) => end.0.iter().zip(at.0).map(|(e, a)| e.saturating_sub(a)).sum(),
                _ => 0,
            };
            // Record times are the gateway's clock; lag is against it.
            let lag_s = match d.outbox.oldest_waiting(&s.name) {
                Ok(Some(t)) => (d.now().0.saturating_sub(t.0) as f64 / 1e9).max(0.0),
                _ => 0.0,
            };
            let ledger = h.ledger.view();
            SinkRow {
                name: s.name.clone(),
                kind: s.kind,
                queued,
                delivered: h.delivered.load(Relaxed),
                failures: h.failures.load(Relaxed),
                dead_lettered: h.dead_lettered.load(Relaxed),
                restarts: h.restarts.load(Relaxed),
                lag_s,
                last_sent: ledger.last_sent_at.map(|t| t.to_string()),
                problem: h.problem(),
            }
        })
        .collect()
}

pub fn store_row(d: &Dashboard) -> StoreRow {
    let outbox = d.outbox.stats();
    let historian = d.historian.stats();
    let c = &d.collector;
    StoreRow {
        samples_stored: c.samples_stored.load(Relaxed),
        records_queued: c.records_queued.load(Relaxed),
        store_errors: c.store_errors.load(Relaxed),
        outbox_bytes: outbox.bytes,
        outbox_bytes_max: d.budgets.outbox_bytes_max,
        outbox_dropped: (0..4).map(|i| outbox.dropped_full[i] + outbox.dropped_age[i] + outbox.dropped_write[i]).sum(),
        historian_bytes: historian.bytes,
        historian_bytes_max: d.budgets.historian_bytes_max,
        historian_samples_lost: historian.samples_lost,
    }
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::U64(u) => json!(u),
        Value::F64(f) if f.is_finite() => json!(f),
        Value::F64(_) => serde_json::Value::Null,
        Value::Text(t) => json!(t),
        Value::Waveform(w) => json!(format!("[{} samples]", w.len())),
    }
}

pub fn tag_rows(d: &Dashboard, filter: &str) -> Vec<TagRow> {
    let latest = d.latest.lock().map(|l| l.clone()).unwrap_or_default();
    let now = d.now();
    d.tags
        .iter()
        .zip(latest.iter().chain(std::iter::repeat(&None)))
        .filter(|(t, _)| t.path.contains(filter))
        .map(|(t, s)| TagRow {
            path: t.path.to_string(),
            name: t.name.clone(),
            device: d.devices.get(t.device).map(|v| v.name.clone()).unwrap_or_default(),
            unit: t.unit.as_deref().map(str::to_owned),
            value_type: format!("{:?}", t.value_type).to_lowercase(),
            value: s.as_ref().and_then(|s| s.value.as_ref()).map(value_json),
            quality: s.as_ref().map(|s| s.quality.to_string()),
            // The collector keeps the latest samples on the gateway's clock.
            age_s: s.as_ref().map(|s| (now.0.saturating_sub(s.gateway_time.0) as f64 / 1e9).max(0.0)),
        })
        .collect()
}

/// A time in a query: the model's `now`, `-1h`, RFC 3339 or epoch milliseconds.
pub fn parse_time(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    Timestamp::parse_at(text, now)
}

/// A span in a query (`15m`, `1h`, `7d`: the model's parser), at most ten years.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    let d = airlock_model::parse_duration(text)?;
    if d > Duration::from_secs(3650 * 86_400) {
        return Err(format!("{text:?} is too long"));
    }
    Ok(d)
}

/// The one tag `name` names: its full path, or the end of exactly one path.
pub fn find_tag(d: &Dashboard, name: &str) -> Result<String, String> {
    let name = name.trim_matches('/');
    if name.is_empty() {
        return Err("name a tag: tag=press1/speed or its full asset path".into());
    }
    match airlock_model::find_path(d.tags.iter().map(|t| t.path.as_str()), name) {
        Ok(path) => Ok(path.to_owned()),
        Err(none) if none.is_empty() => Err(format!("no tag {name:?}")),
        Err(many) => Err(format!("{name:?} matches {} tags; give more of the path", many.len())),
    }
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    pub tag: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub every: Option<String>,
}

/// What a history request asks for, checked.
pub struct HistoryAsk {
    pub path: String,
    pub from: Timestamp,
    pub to: Timestamp,
    pub every: Option<Duration>,
}

pub fn history_ask(d: &Dashboard, q: &HistoryQuery, default_from: &str) -> Result<HistoryAsk, String> {
    let path = find_tag(d, q.tag.as_deref().unwrap_or(""))?;
    let now = d.now();
    let from = parse_time(q.from.as_deref().unwrap_or(default_from), now)?;
    let to = parse_time(q.to.as_deref().unwrap_or("now"), now)?;
    if to <= from {
        return Err("to must come after from".into());
    }
    if to.0.saturating_sub(from.0) > RANGE_MAX.as_nanos() as i64 {
        return Err(format!("a range may be {} days at most", RANGE_MAX.as_secs() / 86_400));
    }
    let every = q.every.as_deref().map(parse_span).transpose()?;
    if every.is_some_and(|e| e.is_zero() || e > EVERY_MAX) {
        return Err("every is from 1ms to 1d".into());
    }
    if let Some(every) = every {
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
        if (to.as_millis() - from.as_millis()) / every_ms > BUCKETS_MAX {
            return Err(format!("at most {BUCKETS_MAX} intervals: make every longer or the range shorter"));
        }
    }
    Ok(HistoryAsk { path, from, to, every })
}

/// The historian's numbers as people and JSON clients read them ([`readable`]: a value stored
/// at a stated resolution is 0.57, not 0.5700000000000001).
fn readable_number(v: Option<f64>) -> Option<f64> {
    v.map(readable)
}

fn bucket_json(b: &Bucket) -> serde_json::Value {
    let n = readable_number;
    json!({
        "start": Timestamp::from_millis(b.start_ms).to_string(),
        "count": b.count, "min": n(b.min), "max": n(b.max), "avg": n(b.avg),
        "first": n(b.first), "last": n(b.last), "twa": n(b.twa),
    })
}

fn sample_json(s: &StoredSample) -> serde_json::Value {
    json!({ "time": s.time.to_string(), "value": readable_number(s.value), "quality": s.quality.to_string() })
}

/// Runs `f` off the runtime's threads (the device drivers run there), for anything that takes
/// a store's lock or reads a file.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    tokio::task::spawn_blocking(f).await.map_err(|e| bad_request(format!("the query failed: {e}")))
}

/// As [`blocking`], for a historian query: at most [`crate::serve::QUERIES_AT_ONCE`] at once.
pub async fn query<T: Send + 'static>(app: &App, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Response> {
    let _permit = app.queries.acquire().await.map_err(|_| bad_request("the server is stopping"))?;
    blocking(f).await
}

/// The raw samples of `path` in `[from, to)`, read a day at a time; `Err` with the count read
/// once more than `max` are found. The historian stops decoding there: a day of a 1 kHz tag
/// (86 million samples) was decoded whole, under the historian's lock, before the count was
/// looked at.
pub fn raw_bounded(
    historian: &airlock_store::HistorianReader,
    path: &str,
    from: Timestamp,
    to: Timestamp,
    max: usize,
) -> Result<Result<Vec<StoredSample>, usize>, airlock_store::StoreError> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let end = at.plus(RAW_SLICE).min(to);
        match historian.raw_at_most(path, at, end, max - out.len())? {
            Ok(slice) => out.extend(slice),
            Err(read) => return Ok(Err(out.len() + read)),
        }
        at = end;
    }
    Ok(Ok(out))
}

pub async fn history(State(app): State<App>, Query(q): Query<HistoryQuery>) -> Response {
    let d = &app.dashboard;
    let ask = match history_ask(d, &q, "-1h") {
        Ok(a) => a,
        Err(e) => return bad_request(e),
    };
    let historian = d.historian.clone();
    let answer = query(&app, move || match ask.every {
        Some(every) => historian.aggregate(&ask.path, ask.from, ask.to, every).map(|b| {
            Ok(json!({ "tag": ask.path, "every_ms": every.as_millis() as u64,
                    "buckets": b.iter().map(bucket_json).collect::<Vec<_>>() }))
        }),
        None => raw_bounded(&historian, &ask.path, ask.from, ask.to, RAW_SAMPLES_MAX).map(|s| match s {
            Ok(s) => Ok(json!({ "tag": ask.path, "samples": s.iter().map(sample_json).collect::<Vec<_>>() })),
            Err(n) => {
                Err(format!("more than {RAW_SAMPLES_MAX} samples ({n} read so far): give every=1m or a shorter range"))
            }
        }),
    })
    .await;
    match answer {
        // Held against the server's budget of answer bytes until it is read or dropped.
        Ok(Ok(Ok(v))) => match serde_json::to_vec(&v) {
            Ok(json) => match app.answers.body(json.into(), ANSWER_WAIT_MAX).await {
                Ok(body) => typed("application/json", body),
                Err(busy) => busy,
            },
            Err(e) => bad_request(format!("the answer could not be written: {e}")),
        },
        Ok(Ok(Err(too_many))) => bad_request(too_many),
        Ok(Err(e)) => bad_request(e.to_string()),
        Err(r) => r,
    }
}

pub async fn history_csv(State(app): State<App>, Query(q): Query<HistoryQuery>) -> Response {
    let d = &app.dashboard;
    let ask = match history_ask(d, &q, "-1h") {
        Ok(a) => a,
        Err(e) => return bad_request(e),
    };
    let historian = d.historian.clone();
    let path = ask.path.clone();
    let csv = query(&app, move || {
        let samples = match raw_bounded(&historian, &ask.path, ask.from, ask.to, CSV_ROWS_MAX) {
            Ok(Ok(s)) => s,
            Ok(Err(n)) => {
                return Err(format!("more than {CSV_ROWS_MAX} samples ({n} read so far): take a shorter range"));
            }
            Err(e) => return Err(e.to_string()),
        };
        let mut csv = String::from("time,value,quality\n");
        for s in &samples {
            let value = readable_number(s.value).map(|v| v.to_string()).unwrap_or_default();
            let quality = s.quality.to_string().replace(',', ";");
            csv.push_str(&format!("{},{value},{quality}\n", s.time));
        }
        Ok(csv)
    })
    .await;
    let csv = match csv {
        Ok(Ok(csv)) => csv,
        Ok(Err(e)) => return bad_request(e),
        Err(r) => return r,
    };
    let body = match app.answers.body(csv.into(), ANSWER_WAIT_MAX).await {
        Ok(body) => body,
        Err(busy) => return busy,
    };
    let mut r = typed("text/csv; charset=utf-8", body);
    let file: String = path.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    if let Ok(v) = axum::http::HeaderValue::from_str(&format!("attachment; filename=\"{file}.csv\"")) {
        r.headers_mut().insert(axum::http::header::CONTENT_DISPOSITION, v);
    }
    r
}

/// Devices, sinks and the store, read off the runtime's threads (the store's locks).
pub async fn rows(app: &App) -> Result<(Vec<DeviceRow>, Vec<SinkRow>, StoreRow), Response> {
    let app = app.clone();
    blocking(move || {
        let d = &app.dashboard;
        (device_rows(d, &app.rates), sink_rows(d), store_row(d))
    })
    .await
}

pub async fn overview(State(app): State<App>) -> Response {
    let (devices, sinks, store) = match rows(&app).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let d = &app.dashboard;
    Json(json!({
        "gateway": d.gateway,
        "now": d.now().to_string(),
        "clock_speed": d.clock.speed(),
        "devices": devices,
        "sinks": sinks,
        "store": store,
    }))
    .into_response()
}

pub async fn devices(State(app): State<App>) -> Response {
    Json(device_rows(&app.dashboard, &app.rates)).into_response()
}

#[derive(Deserialize)]
pub struct TagQuery {
    pub path: Option<String>,
}

/// An answer built and written as JSON off the runtime's threads, where the device drivers
/// run (a review measured a 10 ms timer there 81 ms late with 8 clients asking for 20,000
/// tags' values), as many at once as historian queries.
async fn json_off_runtime<T: Serialize>(app: &App, f: impl FnOnce() -> T + Send + 'static) -> Response {
    match query(app, move || serde_json::to_vec(&f())).await {
        Ok(Ok(json)) => typed("application/json", json),
        Ok(Err(e)) => bad_request(format!("the answer could not be written: {e}")),
        Err(r) => r,
    }
}

pub async fn tags(State(app): State<App>, Query(q): Query<TagQuery>) -> Response {
    let dashboard = Arc::clone(&app.dashboard);
    json_off_runtime(&app, move || {
        let rows = tag_rows(&dashboard, q.path.as_deref().unwrap_or(""));
        rows.iter()
            .map(|t| json!({"path": t.path, "device": t.device, "unit": t.unit, "type": t.value_type}))
            .collect::<Vec<serde_json::Value>>()
    })
    .await
}

pub async fn values(State(app): State<App>, Query(q): Query<TagQuery>) -> Response {
    let dashboard = Arc::clone(&app.dashboard);
    json_off_runtime(&app, move || tag_rows(&dashboard, q.path.as_deref().unwrap_or(""))).await
}

#[derive(Deserialize)]
pub struct EventQuery {
    pub limit: Option<usize>,
    pub kind: Option<String>,
}

pub async fn events(State(app): State<App>, Query(q): Query<EventQuery>) -> Response {
    let dashboard = Arc::clone(&app.dashboard);
    json_off_runtime(&app, move || {
        let events = dashboard.collector.events.last(airlock_model::EventFeed::KEPT);
        let limit = q.limit.unwrap_or(100);
        events
            .iter()
            .filter(|e| q.kind.as_deref().is_none_or(|k| k == e.kind))
            .take(limit)
            .map(|e| {
                json!({
                    "id": e.id, "time": e.time.to_string(), "asset": e.asset, "kind": e.kind,
                    "severity": e.severity.word(), "state": e.state.word(), "message": e.message,
                })
            })
            .collect::<Vec<serde_json::Value>>()
    })
    .await
}

pub async fn sinks(State(app): State<App>) -> Response {
    match rows(&app).await {
        Ok((_, sinks, _)) => Json(sinks).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub struct LedgerQuery {
    pub sink: Option<String>,
    pub topic: Option<String>,
    pub limit: Option<usize>,
}

/// One sink's ledger as JSON: per class totals, per hour counts, and the last messages.
pub fn ledger_json(d: &Dashboard, sink: &crate::SinkView, topic: &str, limit: usize) -> serde_json::Value {
    let v = sink.health.ledger.view();
    let id = |i: Option<airlock_store::RecordId>| i.map(|i| format!("{}-{i}", d.gateway));
    let classes: Vec<serde_json::Value> = Class::ALL
        .iter()
        .map(|c| {
            let i = *c as usize;
            json!({ "class": c.name(), "records": v.records[i], "bytes": v.bytes[i],
                    "last_sent": id(v.last_sent[i]), "last_delivered": id(v.last_delivered[i]) })
        })
        .collect();
    let hours: Vec<serde_json::Value> = v
        .hours
        .iter()
        .map(|h| {
            json!({ "hour": Timestamp::from_millis(h.hour_start_ms).to_string(),
                    "records": h.records.iter().sum::<u64>(), "bytes": h.bytes.iter().sum::<u64>(),
                    "per_class": Class::ALL.iter().map(|c| json!({"class": c.name(),
                        "records": h.records[*c as usize], "bytes": h.bytes[*c as usize]})).collect::<Vec<_>>() })
        })
        .collect();
    let messages: Vec<serde_json::Value> = sink
        .health
        .ledger
        .messages(topic, limit)
        .iter()
        .map(|m| {
            let mut one = json!({
                "time": m.time.to_string(), "topic": m.topic, "records": m.records,
                "first_id": format!("{}-{}", d.gateway, m.first_id), "last_id": format!("{}-{}", d.gateway, m.last_id),
                "bytes": m.bytes, "cut": m.payload.len() < m.bytes,
            });
            match std::str::from_utf8(&m.payload) {
                Ok(text) => one["payload"] = json!(text),
                Err(_) => one["payload_hex"] = json!(m.payload.iter().map(|b| format!("{b:02x}")).collect::<String>()),
            }
            one
        })
        .collect();
    json!({ "sink": sink.name, "kind": sink.kind, "classes": classes, "hours": hours, "messages": messages })
}

pub async fn ledger(State(app): State<App>, Query(q): Query<LedgerQuery>) -> Response {
    if let Some(name) = q.sink.as_deref()
        && !app.dashboard.sinks.iter().any(|s| s.name == name)
    {
        return bad_request("no such sink");
    }
    let dashboard = Arc::clone(&app.dashboard);
    json_off_runtime(&app, move || {
        let limit = q.limit.unwrap_or(50).min(airlock_north::ledger::MESSAGES_KEPT);
        let topic = q.topic.as_deref().unwrap_or("");
        dashboard
            .sinks
            .iter()
            .filter(|s| q.sink.as_deref().is_none_or(|n| n == s.name))
            .map(|s| ledger_json(&dashboard, s, topic, limit))
            .collect::<Vec<serde_json::Value>>()
    })
    .await
}

const OPENAPI: &str = include_str!("../assets/openapi.json");

pub async fn openapi() -> Response {
    typed("application/json", OPENAPI)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_spans_parse_and_refuse() {
        let now = Timestamp::from_millis(10_000_000);
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("-1h", now), Ok(Timestamp::from_millis(10_000_000 - 3_600_000)));
        assert_eq!(parse_time("1000", now), Ok(Timestamp::from_millis(1000)));
        assert!(parse_time("2026-11-29T10:00:00Z", now).is_ok());
        assert!(parse_time("yesterday", now).is_err());
        assert_eq!(parse_span("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_span("99999999999999d").is_err());
        assert!(parse_span("1w").is_err());
        assert!(parse_span("").is_err());
    }
}

/// The gateway's health as one JSON object: what `airlock status` reads from the status file
/// (devices, sinks and store as the dashboard's API shows them, and when it was written).
#[derive(Default)]
pub struct Status {
    rates: Rates,
}

impl Status {
    /// A snapshot; `running` is false in the last one a gateway writes as it stops.
    pub fn snapshot(&self, d: &Dashboard, running: bool) -> serde_json::Value {
        let written = Timestamp::now();
        serde_json::json!({
            "gateway": d.gateway,
            "running": running,
            "pid": std::process::id(),
            "written": written.to_string(),
            "written_unix_ms": written.0 / 1_000_000,
            "uptime_s": d.started.elapsed().as_secs(),
            "devices": device_rows(d, &self.rates),
            "sinks": sink_rows(d),
            "store": store_row(d),
        })
    }
}
