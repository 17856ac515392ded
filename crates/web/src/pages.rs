//! The dashboard's pages, drawn on the server: overview, tag browser, trend, events, egress
//! ledger. Every text that came from a device, a config or IT is escaped. Each page's `<main>`
//! names how often the embedded script fetches it again (live values without a framework).

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::api;
use crate::chart::{self, escape};
use crate::serve::{App, bad_request, typed};

const CSS: &str = include_str!("../assets/app.css");
const JS: &str = include_str!("../assets/app.js");

/// The trend ranges offered, with the bucket width that gives a few hundred points and how
/// often the page is fetched again.
pub const RANGES: [(&str, &str, u32); 4] = [("15m", "5s", 2), ("1h", "10s", 5), ("1d", "5m", 30), ("7d", "30m", 60)];

pub(crate) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn page(app: &App, title: &str, refresh_s: u32, body: &str) -> Response {
    let d = &app.dashboard;
    let clock = if d.clock.is_wall() { String::new() } else { format!(" (simulated clock, {}x)", d.clock.speed()) };
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title} · airlock {gw}</title><link rel=\"stylesheet\" href=\"/static/app.css\"><script src=\"/static/app.js\" defer></script></head>\
         <body><header><strong>airlock</strong> <span class=\"gw\">{gw}</span>\
         <nav><a href=\"/\">Overview</a><a href=\"/tags\">Tags</a><a href=\"/trend\">Trend</a><a href=\"/events\">Events</a><a href=\"/ledger\">Egress ledger</a></nav>\
         <span class=\"now\">read-only · {now}{clock}</span></header>\
         <main data-refresh=\"{refresh_s}\"><h1>{title}</h1>{body}</main></body></html>",
        gw = escape(&d.gateway),
        now = d.now(),
    );
    typed("text/html; charset=utf-8", html)
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn events_table(events: &[airlock_model::FeedEvent]) -> String {
    let mut t = String::from(
        "<table class=\"events\"><thead><tr><th>time</th><th>severity</th><th>state</th><th>asset</th><th>message</th></tr></thead><tbody>",
    );
    for e in events {
        let _ = write!(
            t,
            "<tr class=\"{sev}\"><td>{}</td><td>{sev}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.time,
            e.state.word(),
            escape(&e.asset),
            escape(&e.message),
            sev = e.severity.word()
        );
    }
    if events.is_empty() {
        t.push_str("<tr><td colspan=\"5\">no events yet</td></tr>");
    }
    t.push_str("</tbody></table>");
    t
}

pub(crate) async fn overview(State(app): State<App>) -> Response {
    let (devices, sinks, st) = match api::rows(&app).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let d = &app.dashboard;
    let mut b = String::from(
        "<h2>Devices</h2><table id=\"devices\"><thead><tr><th>device</th><th>protocol</th><th>address</th><th>state</th>\
         <th>samples/s</th><th>requests/s</th><th>errors</th><th>restarts</th><th>last error</th></tr></thead><tbody>",
    );
    for r in devices {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"state {state}\">{state}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.name),
            r.protocol,
            escape(&r.address),
            r.samples_per_s,
            r.requests_per_s,
            r.exceptions + r.comm_errors + r.batches_dropped,
            r.restarts,
            escape(&r.last_error),
            state = r.state
        );
    }
    b.push_str("</tbody></table><h2>Sinks</h2><table id=\"sinks\"><thead><tr><th>sink</th><th>type</th><th>queued</th><th>delivered</th><th>lag</th><th>retries</th><th>dead letters</th><th>last sent</th><th>problem</th></tr></thead><tbody>");
    for s in sinks {
        let _ = write!(
            b,
            "<tr><td><a href=\"/ledger?sink={}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td><td>{}</td><td>{}</td><td class=\"problem\">{}</td></tr>",
            url_encode(&s.name),
            escape(&s.name),
            s.kind,
            s.queued,
            s.delivered,
            s.lag_s,
            s.failures,
            s.dead_lettered,
            s.last_sent.as_deref().unwrap_or("-"),
            escape(&s.problem)
        );
    }
    if d.sinks.is_empty() {
        b.push_str("<tr><td colspan=\"9\">no sink: records wait in the outbox</td></tr>");
    }
    let pct = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 * 100.0 / b as f64 };
    let _ = write!(
        b,
        "</tbody></table><h2>Store</h2><table id=\"store\"><tbody>\
         <tr><th>outbox</th><td>{} of {} ({:.1} %)</td><td><meter min=\"0\" max=\"100\" value=\"{:.1}\"></meter></td></tr>\
         <tr><th>historian</th><td>{} of {} ({:.1} %)</td><td><meter min=\"0\" max=\"100\" value=\"{:.1}\"></meter></td></tr>\
         <tr><th>samples stored</th><td>{}</td><td></td></tr><tr><th>records queued upstream</th><td>{}</td><td></td></tr>\
         <tr><th>dropped / lost</th><td>{} records, {} samples; {} store errors</td><td></td></tr></tbody></table>",
        bytes(st.outbox_bytes),
        bytes(st.outbox_bytes_max),
        pct(st.outbox_bytes, st.outbox_bytes_max),
        pct(st.outbox_bytes, st.outbox_bytes_max),
        bytes(st.historian_bytes),
        bytes(st.historian_bytes_max),
        pct(st.historian_bytes, st.historian_bytes_max),
        pct(st.historian_bytes, st.historian_bytes_max),
        st.samples_stored,
        st.records_queued,
        st.outbox_dropped,
        st.historian_samples_lost,
        st.store_errors,
    );
    b.push_str("<h2>Last events</h2>");
    b.push_str(&events_table(&d.collector.events.last(10)));
    page(&app, "Overview", 2, &b)
}

#[derive(Deserialize)]
pub(crate) struct TagsQuery {
    path: Option<String>,
}

pub(crate) async fn tags(State(app): State<App>, Query(q): Query<TagsQuery>) -> Response {
    let filter = q.path.unwrap_or_default();
    let rows = api::tag_rows(&app.dashboard, &filter);
    let mut b = format!(
        "<form method=\"get\" action=\"/tags\"><input name=\"path\" value=\"{}\" placeholder=\"asset path contains\"> <button>filter</button></form>",
        escape(&filter)
    );
    // Grouped by the asset the tags belong to (the path without the tag's own name).
    let mut group = String::new();
    b.push_str("<table id=\"tags\"><thead><tr><th>tag</th><th>value</th><th>unit</th><th>quality</th><th>age</th><th>type</th></tr></thead><tbody>");
    for t in &rows {
        let asset = t.path.rsplit_once('/').map_or("", |(a, _)| a);
        if asset != group {
            group = asset.to_owned();
            let _ = write!(
                b,
                "<tr class=\"asset\"><th colspan=\"6\"><a href=\"/tags?path={}\">{}</a></th></tr>",
                url_encode(asset),
                escape(asset)
            );
        }
        let value = t.value.as_ref().map_or("-".to_owned(), |v| match v {
            serde_json::Value::Number(n) => n.as_f64().map_or(n.to_string(), |f| {
                if f.fract() == 0.0 && f.abs() < 1e15 { format!("{f:.0}") } else { format!("{f:.3}") }
            }),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let quality = t.quality.as_deref().unwrap_or("-");
        let _ = write!(
            b,
            "<tr><td><a href=\"/trend?tag={}\">{}</a></td><td class=\"value\">{}</td><td>{}</td><td class=\"q {}\">{}</td><td>{}</td><td>{}</td></tr>",
            url_encode(&t.path),
            escape(&t.name),
            escape(&value),
            escape(t.unit.as_deref().unwrap_or("")),
            quality.split(' ').next().unwrap_or(""),
            escape(quality),
            t.age_s.map_or("-".to_owned(), |a| format!("{a:.1} s")),
            t.value_type
        );
    }
    b.push_str("</tbody></table>");
    page(&app, "Tags", 2, &b)
}

#[derive(Deserialize)]
pub(crate) struct TrendQuery {
    tag: Option<String>,
    range: Option<String>,
}

fn range_of(name: Option<&str>) -> Option<(&'static str, &'static str, u32)> {
    let name = name.unwrap_or("1h");
    RANGES.iter().copied().find(|(r, ..)| *r == name)
}

pub(crate) async fn trend(State(app): State<App>, Query(q): Query<TrendQuery>) -> Response {
    let d = &app.dashboard;
    let Some((range, _, refresh)) = range_of(q.range.as_deref()) else {
        return bad_request("range is one of 15m, 1h, 1d, 7d");
    };
    let mut b = String::new();
    let Some(name) = q.tag.as_deref().filter(|t| !t.is_empty()) else {
        b.push_str("<p>Pick a tag:</p><ul class=\"pick\">");
        for t in d
            .tags
            .iter()
            .filter(|t| !matches!(t.value_type, airlock_model::ValueType::Text | airlock_model::ValueType::Waveform))
        {
            let _ = write!(b, "<li><a href=\"/trend?tag={}\">{}</a></li>", url_encode(&t.path), escape(&t.path));
        }
        b.push_str("</ul>");
        return page(&app, "Trend", 3600, &b);
    };
    let path = match api::find_tag(d, name) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let tag = url_encode(&path);
    let _ = write!(b, "<p class=\"tag\">{}</p><p class=\"ranges\">", escape(&path));
    for (r, ..) in RANGES {
        let class = if r == range { " class=\"on\"" } else { "" };
        let _ = write!(b, "<a{class} href=\"/trend?tag={tag}&amp;range={r}\">{r}</a> ");
    }
    let _ = write!(b, "<a class=\"csv\" href=\"/api/v1/history.csv?tag={tag}&amp;from=-{range}\">CSV</a></p>");
    match chart_of(&app, &path, range, None).await {
        Ok(svg) => {
            let _ = write!(b, "<figure id=\"trend\">{svg}</figure>");
        }
        Err(e) => return bad_request(e),
    }
    let _ = write!(
        b,
        "<p class=\"note\">band: minimum to maximum per interval; line: average. Updates every {refresh} s. \
         The same chart alone: <a href=\"/trend.svg?tag={tag}&amp;range={range}\">SVG</a>.</p>"
    );
    page(&app, "Trend", refresh, &b)
}

#[derive(Deserialize)]
pub(crate) struct SvgQuery {
    tag: Option<String>,
    range: Option<String>,
    at: Option<i64>,
}

/// The SVG trend of `path` over the `range` that ends at `at` (epoch ms; the gateway's now
/// when `None`).
async fn chart_of(app: &App, path: &str, range: &str, at: Option<i64>) -> Result<String, String> {
    let d = &app.dashboard;
    let (_, every, _) = range_of(Some(range)).ok_or("range is one of 15m, 1h, 1d, 7d")?;
    let span = api::parse_span(range)?;
    let to = at.map_or_else(|| d.now(), airlock_model::Timestamp::from_millis);
    let from = airlock_model::Timestamp(to.0.saturating_sub(i64::try_from(span.as_nanos()).unwrap_or(i64::MAX)));
    let every = api::parse_span(every)?;
    let unit = d.tags.iter().find(|t| t.path == path).and_then(|t| t.unit.as_deref().map(str::to_owned));
    let historian = d.historian.clone();
    let owned = path.to_owned();
    let buckets = api::query(app, move || historian.aggregate(&owned, from, to, every))
        .await
        .map_err(|_| "the query failed".to_owned())?
        .map_err(|e| e.to_string())?;
    let every_ms = i64::try_from(every.as_millis()).unwrap_or(1);
    Ok(chart::svg(&buckets, from.as_millis(), to.as_millis(), every_ms, unit.as_deref().unwrap_or("")))
}

pub(crate) async fn trend_svg(State(app): State<App>, Query(q): Query<SvgQuery>) -> Response {
    let d = &app.dashboard;
    let Some((range, ..)) = range_of(q.range.as_deref()) else {
        return bad_request("range is one of 15m, 1h, 1d, 7d");
    };
    let path = match api::find_tag(d, q.tag.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let svg = match chart_of(&app, &path, range, q.at).await {
        Ok(svg) => svg,
        Err(e) => return bad_request(e),
    };
    let mut r = typed("image/svg+xml", svg);
    // A chart of a past `at` never changes.
    if q.at.is_some() {
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=60"));
    }
    r
}

#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    kind: Option<String>,
}

pub(crate) async fn events(State(app): State<App>, Query(q): Query<EventsQuery>) -> Response {
    let kind = q.kind.unwrap_or_default();
    let all = app.dashboard.collector.events.last(airlock_model::EventFeed::KEPT);
    let events: Vec<_> = all.into_iter().filter(|e| kind.is_empty() || e.kind == kind).take(200).collect();
    let mut b = String::from("<p class=\"kinds\">");
    let kinds = app.dashboard.collector.events.counts();
    let _ = write!(b, "<a href=\"/events\">all</a> ");
    for (k, n) in &kinds {
        let _ = write!(b, "<a href=\"/events?kind={}\">{} ({n})</a> ", url_encode(k), escape(k));
    }
    b.push_str("</p>");
    b.push_str(&events_table(&events));
    page(&app, "Events", 2, &b)
}

#[derive(Deserialize)]
pub(crate) struct LedgerQuery {
    sink: Option<String>,
    topic: Option<String>,
}

pub(crate) async fn ledger(State(app): State<App>, Query(q): Query<LedgerQuery>) -> Response {
    let d = &app.dashboard;
    let topic = q.topic.unwrap_or_default();
    let mut b = String::from(
        "<p class=\"note\">What left the plant: each sink's messages exactly as it put them on its wire (payloads cut at 4 KiB), counts per class and hour.</p>",
    );
    for s in d.sinks.iter().filter(|s| q.sink.as_deref().is_none_or(|n| n == s.name)) {
        let v = api::ledger_json(d, s, &topic, 50);
        let _ = write!(b, "<section class=\"sink\"><h2>sink {} ({})</h2>", escape(&s.name), s.kind);
        b.push_str("<table class=\"classes\"><thead><tr><th>class</th><th>records sent</th><th>bytes sent</th><th>last id sent</th><th>last id delivered</th></tr></thead><tbody>");
        for c in v["classes"].as_array().into_iter().flatten() {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c["class"].as_str().unwrap_or(""),
                c["records"],
                bytes(c["bytes"].as_u64().unwrap_or(0)),
                escape(c["last_sent"].as_str().unwrap_or("-")),
                escape(c["last_delivered"].as_str().unwrap_or("-"))
            );
        }
        b.push_str(
            "</tbody></table><table class=\"hours\"><thead><tr><th>hour (UTC, wall clock)</th><th>records</th><th>bytes</th>\
             <th>events</th><th>aggregates</th><th>series</th><th>raw</th></tr></thead><tbody>",
        );
        for h in v["hours"].as_array().into_iter().flatten().rev().take(24) {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td>",
                h["hour"].as_str().unwrap_or(""),
                h["records"],
                bytes(h["bytes"].as_u64().unwrap_or(0))
            );
            for c in h["per_class"].as_array().into_iter().flatten() {
                let _ = write!(b, "<td>{} ({})</td>", c["records"], bytes(c["bytes"].as_u64().unwrap_or(0)));
            }
            b.push_str("</tr>");
        }
        let _ = write!(
            b,
            "</tbody></table><form method=\"get\" action=\"/ledger\"><input type=\"hidden\" name=\"sink\" value=\"{}\">\
             <input name=\"topic\" value=\"{}\" placeholder=\"topic contains\"> <button>search</button></form>\
             <table class=\"messages\"><thead><tr><th>time</th><th>topic</th><th>ids</th><th>bytes</th><th>payload as sent</th></tr></thead><tbody>",
            escape(&s.name),
            escape(&topic)
        );
        let messages = v["messages"].as_array().cloned().unwrap_or_default();
        for m in &messages {
            let payload = m["payload"]
                .as_str()
                .map_or_else(|| format!("(binary) {}", m["payload_hex"].as_str().unwrap_or("")), str::to_owned);
            let ids = if m["records"] == 1 {
                m["first_id"].as_str().unwrap_or("").to_owned()
            } else {
                format!(
                    "{} .. {} ({})",
                    m["first_id"].as_str().unwrap_or(""),
                    m["last_id"].as_str().unwrap_or(""),
                    m["records"]
                )
            };
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td><pre>{}</pre></td></tr>",
                m["time"].as_str().unwrap_or(""),
                escape(m["topic"].as_str().unwrap_or("")),
                escape(&ids),
                m["bytes"],
                if m["cut"] == true { " (cut)" } else { "" },
                escape(&payload)
            );
        }
        if messages.is_empty() {
            b.push_str("<tr><td colspan=\"5\">nothing sent yet (or nothing matches)</td></tr>");
        }
        b.push_str("</tbody></table></section>");
    }
    if d.sinks.is_empty() {
        b.push_str("<p>No sink is configured: nothing leaves the plant.</p>");
    }
    page(&app, "Egress ledger", 5, &b)
}

pub(crate) async fn css() -> Response {
    let mut r = typed("text/css; charset=utf-8", CSS);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    r
}

pub(crate) async fn js() -> Response {
    let mut r = typed("text/javascript; charset=utf-8", JS);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=3600"));
    r.into_response()
}
