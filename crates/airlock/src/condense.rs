//! The edge, wired: each tag's chain of transforms (from its config), fed every sample, and what
//! comes out turned into upstream records for the outbox, each in its priority class:
//! - condensed samples (deadband, then swinging door) in `series`; a tag with neither sends its
//!   changes in `raw`, except a part counter, whose production is what goes upstream;
//! - window aggregates and production per interval in `aggregates`;
//! - events (alarms raised and cleared, parts produced, shift totals, bearing defects) in
//!   `events`.
//!
//! A waveform tag sends nothing itself: a tag with bearing keys has its waveforms searched for
//! the bearing's defect frequencies (at the shaft speed last read from its speed tag), and only a
//! defect that grows goes upstream.

use std::sync::Arc;

use airlock_config::{Config, DataType, OeeSettings, Tag};
use airlock_edge::alarm::{AlarmConfig, Alarms};
use airlock_edge::counter::{Counter, CounterConfig};
use airlock_edge::deadband::Deadband;
use airlock_edge::oee::{Oee, OeeConfig, OeeFigures};
use airlock_edge::sdt::SwingingDoor;
use airlock_edge::spectrum::{BearingGeometry, BearingWatch};
use airlock_edge::vibration::{Vibration, VibrationConfig, iso_zones};
use airlock_edge::window::Window;
use airlock_edge::{Aggregate, EdgeEvent, Output, Production, Transform, Transition};
use airlock_model::{Sample, Severity, TagId, Timestamp, Value};
use airlock_store::Class;
use serde_json::{Map, Value as Json, json};

use crate::gateway::TagInfo;

/// One upstream record: its class, its time and its JSON payload.
pub type Record = (Class, Timestamp, Vec<u8>);

/// A tag's transforms.
struct Chain {
    /// Deadband (or, for a tag with no condensing, a change filter), then swinging door. `None`
    /// for a part counter with no condensing of its own: its production says it all.
    deadband: Option<Deadband>,
    sdt: Option<SwingingDoor>,
    series_class: Class,
    window: Option<Window>,
    alarms: Option<Alarms>,
    counter: Option<Counter>,
    vibration: Option<Vibration>,
    bearing: Option<Bearing>,
}

/// Waveforms averaged into a bearing's baseline, and the growth over it that raises an event.
const BEARING_BASELINE_WAVEFORMS: usize = 10;
const BEARING_GROWTH: f64 = 2.0;

/// A bearing watched in a waveform tag.
struct Bearing {
    watch: BearingWatch,
    sample_rate_hz: f64,
    shaft_speed: TagId,
}

impl Chain {
    /// The steps that see every sample and every tick (the series condensing aside).
    fn steps(&mut self) -> [Option<&mut dyn Transform>; 4] {
        [
            self.window.as_mut().map(|w| w as &mut dyn Transform),
            self.alarms.as_mut().map(|a| a as &mut dyn Transform),
            self.counter.as_mut().map(|c| c as &mut dyn Transform),
            self.vibration.as_mut().map(|v| v as &mut dyn Transform),
        ]
    }
}

pub struct Condenser {
    tags: Arc<Vec<TagInfo>>,
    chains: Vec<Chain>,
    /// Per device (by index), its OEE rule, fed the device's samples.
    oee: Vec<Option<Oee>>,
    /// Per tag, the last good value of a tag that is a bearing's shaft speed (rpm); `None` for
    /// the others, which are not kept.
    shaft_rpm: Vec<Option<f64>>,
    is_shaft_speed: Vec<bool>,
    scratch: Vec<Output>,
}

impl Condenser {
    pub fn new(config: &Config, tags: Arc<Vec<TagInfo>>) -> Self {
        let mut chains = Vec::new();
        let mut oee = Vec::new();
        for d in &config.devices {
            let first = chains.len();
            for t in &d.tags {
                let id = TagId(chains.len() as u32);
                chains.push(chain(config, id, &tags[id.0 as usize], t, first));
            }
            oee.push(d.oee.as_ref().map(|o| oee_rule(config, d, o, first, &tags)));
        }
        let mut is_shaft_speed = vec![false; chains.len()];
        for b in chains.iter().filter_map(|c| c.bearing.as_ref()) {
            is_shaft_speed[b.shaft_speed.0 as usize] = true;
        }
        let shaft_rpm = vec![None; chains.len()];
        Self { tags, chains, oee, shaft_rpm, is_shaft_speed, scratch: Vec::new() }
    }

    pub fn on_samples(&mut self, samples: &[Sample], out: &mut Vec<Record>) {
        for s in samples {
            let Some(chain) = self.chains.get_mut(s.tag.0 as usize) else { continue };
            if self.is_shaft_speed[s.tag.0 as usize]
                && let Some(rpm) = s.value.as_ref().and_then(|v| v.as_f64())
            {
                self.shaft_rpm[s.tag.0 as usize] = Some(rpm);
            }
            let mut series = Vec::new();
            if let Some(deadband) = chain.deadband.as_mut() {
                deadband.on_sample(s, &mut series);
            }
            let mut outputs = std::mem::take(&mut self.scratch);
            match chain.sdt.as_mut() {
                Some(sdt) => {
                    for o in series {
                        if let Output::Sample(passed) = o {
                            sdt.on_sample(&passed, &mut outputs);
                        }
                    }
                }
                None => outputs.extend(series),
            }
            for step in chain.steps().into_iter().flatten() {
                step.on_sample(s, &mut outputs);
            }
            if let (Some(b), Some(Value::Waveform(w))) = (chain.bearing.as_mut(), s.value.as_ref())
                && let Some(Some(rpm)) = self.shaft_rpm.get(b.shaft_speed.0 as usize)
            {
                b.watch.on_waveform(s.gateway_time, w, b.sample_rate_hz, *rpm, &mut outputs);
            }
            let device = self.tags[s.tag.0 as usize].device;
            if let Some(Some(rule)) = self.oee.get_mut(device) {
                rule.on_sample(s, &mut outputs);
            }
            let class = chain.series_class;
            for o in outputs.drain(..) {
                out.push(self.record(o, class));
            }
            self.scratch = outputs;
        }
    }

    /// Time passes: windows close, stale alarms raise, held swinging-door points go out.
    pub fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Record>) {
        let mut outputs = std::mem::take(&mut self.scratch);
        for i in 0..self.chains.len() {
            let chain = &mut self.chains[i];
            let class = chain.series_class;
            if let Some(sdt) = chain.sdt.as_mut() {
                sdt.on_tick(now, &mut outputs);
            }
            for step in chain.steps().into_iter().flatten() {
                step.on_tick(now, &mut outputs);
            }
            for o in outputs.drain(..) {
                out.push(self.record(o, class));
            }
        }
        self.scratch = outputs;
    }

    fn record(&self, o: Output, series_class: Class) -> Record {
        match o {
            Output::Sample(s) => (series_class, s.gateway_time, sample_json(&self.tags[s.tag.0 as usize], &s)),
            Output::Aggregate(a) => (Class::Aggregate, a.end, aggregate_json(&self.tags[a.tag.0 as usize], &a)),
            Output::Production(p) => (Class::Aggregate, p.end, production_json(&p)),
            Output::Event(e) => (Class::Event, e.time, event_json(&e)),
            Output::Oee(f) => (Class::Aggregate, f.time, oee_json(&f)),
        }
    }
}

/// The chain of `t`, the tag `id` of a device whose first tag is `first`.
fn chain(config: &Config, id: TagId, tag: &TagInfo, t: &Tag, first: usize) -> Chain {
    let e = &t.edge;
    // The machine the tag belongs to: its asset path without the tag, and its name.
    let device = tag.path.as_str().rsplit_once('/').map_or(tag.path.as_str(), |(d, _)| d);
    let machine = device.rsplit('/').next().unwrap_or(device);
    let condensed = e.deadband.is_some() || e.swinging_door.is_some() || e.heartbeat.is_some();
    let waveform = matches!(t.data_type, DataType::Waveform { .. });
    let deadband = (!waveform && (condensed || e.production.is_none()))
        .then(|| Deadband::new(e.deadband.unwrap_or(0.0), e.heartbeat.map(ms)));
    let alarms = e.alarms.as_ref().map(|a| {
        let c = AlarmConfig {
            high: a.high,
            low: a.low,
            hysteresis: a.hysteresis,
            on_delay_ms: ms(a.on_delay),
            off_delay_ms: ms(a.off_delay),
            rate_max: a.rate_max_per_s,
            stale_ms: a.stale.map(ms),
            unit: tag.unit.clone(),
        };
        Alarms::new(tag.path.clone(), c)
    });
    let counter = e.production.as_ref().map(|p| {
        Counter::new(CounterConfig {
            asset: airlock_model::AssetPath::parse(device).unwrap_or_else(|_| tag.path.clone()),
            name: machine.to_owned(),
            modulus: tag.counter_modulus,
            interval_ms: ms(config.edge.production_interval),
            shift_ms: ms(config.edge.shift),
            shift_offset_ms: ms(config.edge.shift_start),
            every_parts: p.every_parts,
        })
    });
    let vibration = e.vibration.as_ref().map(|v| {
        Vibration::new(VibrationConfig {
            asset: tag.path.clone(),
            name: machine.to_owned(),
            zones: iso_zones(v.group, v.rigid),
            advice_days: v.advice_days,
            trend_days: 7.0,
        })
    });
    let bearing = match (&e.bearing, t.data_type) {
        (Some(b), DataType::Waveform { rate_hz, .. }) => {
            let geometry = BearingGeometry {
                balls: b.balls,
                ball_diameter_mm: b.ball_diameter_mm,
                pitch_diameter_mm: b.pitch_diameter_mm,
                contact_angle_deg: b.contact_angle_deg,
            };
            Some(Bearing {
                watch: BearingWatch::new(
                    tag.path.clone(),
                    machine,
                    geometry,
                    BEARING_BASELINE_WAVEFORMS,
                    BEARING_GROWTH,
                ),
                sample_rate_hz: f64::from(rate_hz),
                shaft_speed: TagId((first + b.shaft_speed_tag) as u32),
            })
        }
        _ => None,
    };
    Chain {
        vibration,
        bearing,
        deadband,
        sdt: e.swinging_door.map(|(dev, max)| SwingingDoor::new(dev, ms(max))),
        series_class: if condensed { Class::Series } else { Class::Raw },
        window: e.window.map(|w| Window::new(id, ms(w))),
        alarms,
        counter,
    }
}

/// A config duration as the edge's milliseconds.
fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn oee_rule(config: &Config, d: &airlock_config::Device, o: &OeeSettings, first: usize, tags: &[TagInfo]) -> Oee {
    let tag = |i: usize| TagId((first + i) as u32);
    Oee::new(OeeConfig {
        asset: d.path.clone(),
        name: d.name.clone(),
        state_tag: tag(o.state_tag),
        running_value: o.running_value,
        parts_tag: tag(o.parts_tag),
        parts_modulus: tags[first + o.parts_tag].counter_modulus,
        rejects_tag: o.rejects_tag.map(tag),
        rejects_modulus: o.rejects_tag.and_then(|r| tags[first + r].counter_modulus),
        ideal_cycle_s: o.ideal_cycle_s,
        shift_ms: ms(config.edge.shift),
        shift_offset_ms: ms(config.edge.shift_start),
        interval_ms: ms(config.edge.production_interval),
        baseline_ms: ms(o.baseline),
        compare_ms: ms(o.compare),
        drop_percent: o.drop_percent,
    })
}

/// A machine's OEE so far in its shift, on `<machine path>/oee` (value: OEE as a fraction).
fn oee_json(f: &OeeFigures) -> Vec<u8> {
    let r = json!({
        "topic": format!("{}/oee", f.asset),
        "value": f.oee,
        "quality": "good",
        "availability": f.availability,
        "performance": f.performance,
        "quality_rate": f.quality,
        "parts": f.parts,
        "rejects": f.rejects,
        "running_s": f.running_s,
        "shift_start": f.shift_start.to_string(),
        "gateway_time": f.time.to_string(),
    });
    serde_json::to_vec(&r).unwrap_or_default()
}

/// `{"topic","value","quality","reason"?,"unit"?,"source_time"?,"gateway_time"}`
fn sample_json(tag: &TagInfo, s: &Sample) -> Vec<u8> {
    let mut r = Map::new();
    r.insert("topic".into(), json!(tag.path.as_str()));
    r.insert("value".into(), s.value.as_ref().map_or(Json::Null, value_json));
    r.insert("quality".into(), json!(s.quality.word()));
    if let Some(reason) = s.quality.reason() {
        r.insert("reason".into(), json!(reason.to_string()));
    }
    if let Some(unit) = &tag.unit {
        r.insert("unit".into(), json!(unit));
    }
    if let Some(t) = s.source_time {
        r.insert("source_time".into(), json!(t.to_string()));
    }
    r.insert("gateway_time".into(), json!(s.gateway_time.to_string()));
    serde_json::to_vec(&Json::Object(r)).unwrap_or_default()
}

/// A window's aggregates, on the topic `<tag path>.window`, with `value` the average; the
/// window ends at `gateway_time`.
fn aggregate_json(tag: &TagInfo, a: &Aggregate) -> Vec<u8> {
    let mut r = Map::new();
    r.insert("topic".into(), json!(format!("{}.window", tag.path)));
    r.insert("value".into(), json!(a.avg));
    r.insert("quality".into(), json!(if a.count > 0 { "good" } else { "bad" }));
    for (k, v) in [
        ("min", a.min),
        ("max", a.max),
        ("avg", a.avg),
        ("stddev", a.stddev),
        ("first", a.first),
        ("last", a.last),
        ("twa", a.twa),
    ] {
        r.insert(k.into(), json!(v));
    }
    r.insert("count".into(), json!(a.count));
    r.insert("start".into(), json!(a.start.to_string()));
    if let Some(unit) = &tag.unit {
        r.insert("unit".into(), json!(unit));
    }
    r.insert("gateway_time".into(), json!(a.end.to_string()));
    serde_json::to_vec(&Json::Object(r)).unwrap_or_default()
}

/// Parts in an interval, on the topic `<machine path>/parts.interval`.
fn production_json(p: &Production) -> Vec<u8> {
    let r = json!({
        "topic": format!("{}/parts.interval", p.asset),
        "value": p.parts,
        "quality": "good",
        "unit": "parts",
        "shift_parts": p.shift_parts,
        "start": p.start.to_string(),
        "end": p.end.to_string(),
        "gateway_time": p.end.to_string(),
    });
    serde_json::to_vec(&r).unwrap_or_default()
}

/// An event, on `_airlock/events/<kind>`, with its asset, severity, state and numbers.
fn event_json(e: &EdgeEvent) -> Vec<u8> {
    let mut r = Map::new();
    r.insert("topic".into(), json!(format!("_airlock/events/{}", e.kind)));
    r.insert("kind".into(), json!(e.kind));
    r.insert("asset".into(), json!(e.asset.as_str()));
    let severity = match e.severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Alarm => "alarm",
    };
    r.insert("severity".into(), json!(severity));
    let state = match e.transition {
        Transition::Once => "once",
        Transition::Raised => "raised",
        Transition::Cleared => "cleared",
    };
    r.insert("state".into(), json!(state));
    r.insert("message".into(), json!(e.message));
    for (k, v) in &e.body {
        r.insert((*k).into(), json!(v));
    }
    r.insert("gateway_time".into(), json!(e.time.to_string()));
    serde_json::to_vec(&Json::Object(r)).unwrap_or_default()
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::U64(u) => json!(u),
        Value::F64(f) => json!(f),
        Value::Text(t) => json!(t.as_ref()),
        // A waveform never goes upstream whole; what it shows does (bearing events).
        Value::Waveform(w) => json!({ "samples": w.len() }),
    }
}
