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

use airlock_config::{Config, DataType, OeeSettings, Tag};
use airlock_edge::alarm::{AlarmConfig, Alarms};
use airlock_edge::counter::{Counter, CounterConfig, CounterRange};
use airlock_edge::deadband::Deadband;
use airlock_edge::oee::{Oee, OeeConfig};
use airlock_edge::sdt::SwingingDoor;
use airlock_edge::spectrum::{BearingGeometry, BearingWatch};
use airlock_edge::vibration::{Vibration, VibrationConfig, iso_zones};
use airlock_edge::window::Window;
use airlock_edge::{Aggregate, EdgeEvent, Output, Transform};
use airlock_model::{Sample, TagId, Timestamp, Value};
use airlock_store::Class;
use airlock_upstream::{AggregateRecord, EventRecord, SampleRecord, Upstream};

use crate::tags::{TagInfo, TagTable};

/// One upstream record and the outbox class it goes in.
pub type Record = (Class, Upstream);

/// A tag's transforms.
struct Chain {
    /// Deadband (or, for a tag with no condensing, a change filter), then swinging door. `None`
    /// for a part counter with no condensing of its own: its production says it all.
    /// The other steps are boxed: most tags have none of them, and a chain of 10,000 tags
    /// should not hold room for each (unboxed, a chain took 1.5 KB).
    deadband: Option<Deadband>,
    sdt: Option<Box<SwingingDoor>>,
    series_class: Class,
    window: Option<Box<Window>>,
    alarms: Option<Box<Alarms>>,
    counter: Option<Box<Counter>>,
    vibration: Option<Box<Vibration>>,
    bearing: Option<Box<Bearing>>,
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
    /// Every tag id its state holds (its own, a bearing's shaft speed tag) mapped by `to`.
    fn move_tags(&mut self, to: &dyn Fn(TagId) -> TagId) {
        if let Some(w) = self.window.as_deref_mut() {
            w.move_tags(to);
        }
        if let Some(sdt) = self.sdt.as_deref_mut() {
            sdt.move_tags(to);
        }
        if let Some(b) = self.bearing.as_deref_mut() {
            b.shaft_speed = to(b.shaft_speed);
        }
    }

    /// The steps that see every sample and every tick (the series condensing aside).
    fn steps(&mut self) -> [Option<&mut dyn Transform>; 4] {
        [
            self.window.as_deref_mut().map(|w| w as &mut dyn Transform),
            self.alarms.as_deref_mut().map(|a| a as &mut dyn Transform),
            self.counter.as_deref_mut().map(|c| c as &mut dyn Transform),
            self.vibration.as_deref_mut().map(|v| v as &mut dyn Transform),
        ]
    }
}

/// Where a device unchanged by a reload had its tags and where it has them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub old_first: TagId,
    pub first: TagId,
    pub count: usize,
    pub old_device: usize,
    pub device: usize,
}

/// Every tag's chain and every machine's OEE rule, fed the samples; what comes out is typed
/// upstream records.
pub struct Condenser {
    /// Shared with the gateway (a copy was 1.3 MB at 10,000 tags).
    tags: std::sync::Arc<TagTable>,
    chains: Vec<Chain>,
    /// Per device (by index), its OEE rule, fed the device's samples.
    oee: Vec<Option<Oee>>,
    /// Per tag, the last good value of a tag that is a bearing's shaft speed (rpm); `None` for
    /// the others, which are not kept.
    shaft_rpm: Vec<Option<f64>>,
    is_shaft_speed: Vec<bool>,
    /// Per tag, whether its chain is a deadband (or change filter) and nothing else: no swinging
    /// door, window, alarm, counter, vibration or bearing, no OEE rule on its device, and no
    /// bearing reading it as its shaft speed. Most tags are; their samples take a short way.
    plain: Vec<bool>,
    scratch: Vec<Output>,
}

impl Condenser {
    pub fn new(config: &Config, tags: std::sync::Arc<TagTable>) -> Self {
        // Exactly one chain a tag (pushed one at a time, the vector would double past them).
        let mut chains = Vec::with_capacity(config.devices.iter().map(|d| d.tags.len()).sum());
        let mut oee = Vec::new();
        let all = tags.as_slice();
        for d in &config.devices {
            let first = chains.len();
            for t in &d.tags {
                let id = TagId(chains.len() as u32);
                chains.push(chain(config, id, &all[id.0 as usize], t, first));
            }
            oee.push(d.oee.as_ref().map(|o| oee_rule(config, d, o, first, all)));
        }
        let mut is_shaft_speed = vec![false; chains.len()];
        for b in chains.iter().filter_map(|c| c.bearing.as_ref()) {
            is_shaft_speed[b.shaft_speed.0 as usize] = true;
        }
        let shaft_rpm = vec![None; chains.len()];
        let plain = chains
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let device = tags.get(TagId(i as u32)).map_or(usize::MAX, |t| t.device);
                c.deadband.is_some()
                    && c.sdt.is_none()
                    && c.window.is_none()
                    && c.alarms.is_none()
                    && c.counter.is_none()
                    && c.vibration.is_none()
                    && c.bearing.is_none()
                    && !is_shaft_speed[i]
                    && oee.get(device).is_none_or(Option::is_none)
            })
            .collect();
        Self { tags, chains, oee, shaft_rpm, is_shaft_speed, plain, scratch: Vec::new() }
    }

    /// Takes over `old`'s edge state (deadbands, windows, alarms, counters, vibration and
    /// bearing watches, the OEE rule) of a device unchanged by a reload: its `count` tags, from
    /// `old_first` in `old` and `first` here, device `old_device` there and `device` here. The
    /// tag ids the state holds move with it (a tag added to a device before this one moves
    /// every id after it: started afresh, an alarm raised before was never cleared, and a
    /// shift's counts began again). Returns false, keeping this condenser's fresh state, only
    /// for ranges that do not fit (a bug).
    pub fn adopt(&mut self, old: &mut Condenser, moved: &Moved) -> bool {
        let (from, to, n) = (moved.old_first.0 as usize, moved.first.0 as usize, moved.count);
        if from + n > old.chains.len() || to + n > self.chains.len() {
            return false;
        }
        let shift = |t: TagId| {
            let within = (t.0 as usize).checked_sub(from).filter(|i| *i < n);
            within.map_or(t, |i| TagId((to + i) as u32))
        };
        for i in 0..n {
            std::mem::swap(&mut self.chains[to + i], &mut old.chains[from + i]);
            self.chains[to + i].move_tags(&shift);
            self.shaft_rpm[to + i] = old.shaft_rpm[from + i];
        }
        if let (Some(slot), Some(rule)) = (self.oee.get_mut(moved.device), old.oee.get_mut(moved.old_device)) {
            *slot = rule.take();
            if let Some(rule) = slot.as_mut() {
                rule.move_tags(&shift);
            }
        }
        true
    }

    pub fn on_samples(&mut self, samples: &[Sample], out: &mut Vec<Record>) {
        for s in samples {
            let Some(chain) = self.chains.get_mut(s.tag.0 as usize) else { continue };
            if self.plain[s.tag.0 as usize] {
                if let Some(deadband) = chain.deadband.as_mut()
                    && deadband.admit(s)
                    && let Some(r) = record(&self.tags, Output::Sample(s.clone()), chain.series_class)
                {
                    out.push(r);
                }
                continue;
            }
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
            let device = self.tags.get(s.tag).map_or(usize::MAX, |t| t.device);
            if let Some(Some(rule)) = self.oee.get_mut(device) {
                rule.on_sample(s, &mut outputs);
            }
            let class = chain.series_class;
            out.extend(outputs.drain(..).filter_map(|o| self.record(o, class)));
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
            let tags = &self.tags;
            out.extend(outputs.drain(..).filter_map(|o| record(tags, o, class)));
        }
        self.scratch = outputs;
    }

    fn record(&self, o: Output, series_class: Class) -> Option<Record> {
        record(&self.tags, o, series_class)
    }
}

/// An edge output as an upstream record in its class (`None` for a tag not in the table).
fn record(tags: &TagTable, o: Output, series_class: Class) -> Option<Record> {
    Some(match o {
        Output::Sample(s) => {
            let tag = tags.get(s.tag)?;
            let record = SampleRecord {
                path: tag.path.clone(),
                value_type: tag.value_type,
                unit: tag.unit.clone(),
                value: s.value,
                quality: s.quality,
                source_time: s.source_time,
                gateway_time: s.gateway_time,
            };
            (series_class, Upstream::Sample(record))
        }
        Output::Aggregate(a) => (Class::Aggregate, Upstream::Aggregate(aggregate(tags.get(a.tag)?, &a))),
        Output::Production(p) => (Class::Aggregate, Upstream::Production(p)),
        Output::Event(e) => (Class::Event, Upstream::Event(event(e))),
        Output::Oee(f) => (Class::Aggregate, Upstream::Oee(f)),
    })
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
            unit: tag.unit.as_deref().map(str::to_owned),
        };
        Alarms::new(tag.path.clone(), c)
    });
    let counter = e.production.as_ref().map(|p| {
        Counter::new(CounterConfig {
            asset: airlock_model::AssetPath::parse(device).unwrap_or_else(|_| tag.path.clone()),
            name: machine.to_owned(),
            range: counter_range(tag, t),
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
        vibration: vibration.map(Box::new),
        bearing: bearing.map(Box::new),
        deadband,
        sdt: e.swinging_door.map(|(dev, max)| Box::new(SwingingDoor::new(dev, ms(max)))),
        series_class: if condensed { Class::Series } else { Class::Raw },
        window: e.window.map(|w| Box::new(Window::new(id, ms(w)))),
        alarms: alarms.map(Box::new),
        counter: counter.map(Box::new),
    }
}

/// A config duration as the edge's milliseconds.
fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A tag as a part counter: its type's range, and its pace when it is a production tag that
/// has one.
fn counter_range(tag: &TagInfo, t: &Tag) -> CounterRange {
    let parts_max_per_s = t.edge.production.as_ref().and_then(|p| p.parts_max_per_s);
    CounterRange { modulus: tag.counter_modulus, parts_max_per_s }
}

fn oee_rule(config: &Config, d: &airlock_config::Device, o: &OeeSettings, first: usize, tags: &[TagInfo]) -> Oee {
    let tag = |i: usize| TagId((first + i) as u32);
    let range = |i: usize| counter_range(&tags[first + i], &d.tags[i]);
    Oee::new(OeeConfig {
        asset: d.path.clone(),
        name: d.name.clone(),
        state_tag: tag(o.state_tag),
        running_value: o.running_value,
        parts_tag: tag(o.parts_tag),
        parts_range: range(o.parts_tag),
        rejects_tag: o.rejects_tag.map(tag),
        rejects_range: o.rejects_tag.map(range).unwrap_or_default(),
        ideal_cycle_s: o.ideal_cycle_s,
        shift_ms: ms(config.edge.shift),
        shift_offset_ms: ms(config.edge.shift_start),
        interval_ms: ms(config.edge.production_interval),
        baseline_ms: ms(o.baseline),
        compare_ms: ms(o.compare),
        drop_percent: o.drop_percent,
    })
}

fn aggregate(tag: &TagInfo, a: &Aggregate) -> AggregateRecord {
    AggregateRecord {
        path: tag.path.clone(),
        unit: tag.unit.clone(),
        start: a.start,
        end: a.end,
        count: a.count,
        min: a.min,
        max: a.max,
        avg: a.avg,
        stddev: a.stddev,
        first: a.first,
        last: a.last,
        twa: a.twa,
    }
}

fn event(e: EdgeEvent) -> EventRecord {
    EventRecord {
        time: e.time,
        asset: e.asset,
        kind: e.kind.into(),
        severity: e.severity,
        state: e.transition,
        message: e.message.into(),
        body: e.body.into_iter().map(|(k, v)| (k.into(), v)).collect(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use airlock_model::{Timestamp, Transition, Value};

    fn condenser(a_tags: usize) -> Condenser {
        let tag = |name: &str, address: usize, extra: &str| {
            format!(
                "[[device.tag]]\nname = \"{name}\"\nspace = \"holding_register\"\naddress = {address}\ntype = \"u16\"\n{extra}"
            )
        };
        let mut text = "[[device]]\nname = \"a\"\nasset_path = \"acme/line\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:502\"\n".to_owned();
        for i in 0..a_tags {
            text += &tag(&format!("x{i}"), i, "");
        }
        text += "[[device]]\nname = \"b\"\nasset_path = \"acme/line\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:503\"\n";
        text += &tag("temp", 0, "alarm_high = 80\nalarm_hysteresis = 2\nwindow_s = 60\n");
        let config = airlock_config::parse(&text, std::path::Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        Condenser::new(&config, std::sync::Arc::new(TagTable::new(&config)))
    }

    fn alarms(records: &[Record]) -> Vec<Transition> {
        records
            .iter()
            .filter_map(|(_, r)| match r {
                Upstream::Event(e) if e.kind.contains("alarm") => Some(e.state),
                _ => None,
            })
            .collect()
    }

    /// A part counter's pace from the config reaches its counter: a garbage reading of a
    /// 64-bit counter (2^50) makes no parts, so no "produced a quadrillion parts" goes up.
    #[test]
    fn a_counters_pace_from_the_config_refuses_a_garbage_reading() {
        let text = "[[device]]\nname = \"a\"\nasset_path = \"acme/line\"\nprotocol = \"modbus_tcp\"\n\
                    address = \"127.0.0.1:502\"\n[[device.tag]]\nname = \"parts\"\nspace = \"holding_register\"\n\
                    address = 0\ntype = \"u64\"\nproduction = true\nproduction_every_parts = 1\n\
                    production_parts_max_per_s = 1.0\n";
        let config = airlock_config::parse(text, std::path::Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        let mut c = Condenser::new(&config, std::sync::Arc::new(TagTable::new(&config)));
        let mut out = Vec::new();
        for (i, v) in [10u64, 11, 1 << 50, 12, 13].into_iter().enumerate() {
            let at = Timestamp::from_millis(6 * 3_600_000 + i as i64 * 1000);
            c.on_samples(&[Sample::good(TagId(0), Value::U64(v), at)], &mut out);
        }
        let produced: Vec<String> = out
            .iter()
            .filter_map(|(_, r)| match r {
                Upstream::Event(e) if &*e.kind == "parts_produced" => Some(e.message.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            produced,
            ["a produced 1 parts this shift", "a produced 2 parts this shift", "a produced 3 parts this shift"]
        );
    }

    /// A reload that adds a tag to the first device moves every later device's tag ids: their
    /// edge state is carried over all the same (tags moved with it), so an alarm raised before
    /// is cleared after. Started afresh, the alarm stayed raised upstream for good.
    #[test]
    fn a_reload_that_moves_a_devices_tag_ids_keeps_its_edge_state() {
        let mut old = condenser(1);
        let mut out = Vec::new();
        old.on_samples(&[Sample::good(TagId(1), Value::U64(95), Timestamp::from_millis(1_000))], &mut out);
        assert_eq!(alarms(&out), [Transition::Raised]);
        let mut new = condenser(2);
        let moved = Moved { old_first: TagId(1), first: TagId(2), count: 1, old_device: 1, device: 1 };
        assert!(new.adopt(&mut old, &moved));
        let mut out = Vec::new();
        new.on_samples(&[Sample::good(TagId(2), Value::U64(20), Timestamp::from_millis(2_000))], &mut out);
        assert_eq!(alarms(&out), [Transition::Cleared], "{out:#?}");
        // The window held by the old chain goes on under the new tag id (its path).
        let mut out = Vec::new();
        new.on_samples(&[Sample::good(TagId(2), Value::U64(21), Timestamp::from_millis(70_000))], &mut out);
        let windows: Vec<&Upstream> =
            out.iter().map(|(_, r)| r).filter(|r| matches!(r, Upstream::Aggregate(_))).collect();
        assert!(!windows.is_empty(), "{out:#?}");
        assert!(
            windows.iter().all(|r| matches!(r, Upstream::Aggregate(a) if a.path.as_str().ends_with("/b/temp"))),
            "{windows:#?}"
        );
    }
}
