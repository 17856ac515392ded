//! A simulated 8-hour shift of the press line, in accelerated time, through the edge: the part
//! count is exact, OEE is within 0.5 percentage points of the simulator's own ground truth, the
//! slowed-down press raises a performance-drop event; and over days, the wearing bearing gets
//! maintenance advice before it reaches zone D.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use airlock_edge::counter::{Counter, CounterConfig, CounterRange};
use airlock_edge::oee::{Oee, OeeConfig};
use airlock_edge::vibration::{Vibration, VibrationConfig, iso_zones};
use airlock_edge::{EdgeEvent, Output, Transform, Transition};
use airlock_model::{AssetPath, Sample, TagId, Timestamp, Value};
use airlock_sim::plant::{MachineState, Plant, press_line};

const HOUR_MS: i64 = 3_600_000;

fn events(out: &[Output]) -> Vec<&EdgeEvent> {
    out.iter().filter_map(|o| if let Output::Event(e) = o { Some(e) } else { None }).collect()
}

#[test]
fn a_shift_of_the_press_line_through_the_edge() {
    // The simulation starts at a shift start (06:00 UTC): its shifts are the edge's shifts.
    let start = Timestamp::parse_rfc3339("2026-11-30T06:00:00Z").unwrap().as_millis();
    let mut plant = Plant::new(7, press_line());
    let n = plant.machines.len();
    let asset = |name: &str| AssetPath::parse(&format!("acme/dortmund/pressing/line3/cell1/{name}")).unwrap();
    let mut counters: Vec<Counter> = plant
        .machines
        .iter()
        .map(|m| {
            Counter::new(CounterConfig {
                asset: asset(m.spec.name),
                name: m.spec.name.into(),
                range: CounterRange { modulus: Some(65_536), parts_max_per_s: None },
                interval_ms: 60_000,
                shift_ms: 8 * HOUR_MS,
                shift_offset_ms: 6 * HOUR_MS,
                every_parts: Some(1000),
            })
        })
        .collect();
    let mut oees: Vec<Oee> = plant
        .machines
        .iter()
        .map(|m| {
            Oee::new(OeeConfig {
                asset: asset(m.spec.name),
                name: m.spec.name.into(),
                state_tag: TagId(0),
                running_value: 1.0,
                parts_tag: TagId(1),
                parts_range: CounterRange { modulus: Some(65_536), parts_max_per_s: None },
                rejects_tag: Some(TagId(2)),
                rejects_range: CounterRange { modulus: Some(1 << 32), parts_max_per_s: None },
                ideal_cycle_s: m.spec.ideal_cycle_s,
                shift_ms: 8 * HOUR_MS,
                shift_offset_ms: 6 * HOUR_MS,
                interval_ms: 600_000,
                baseline_ms: HOUR_MS,
                compare_ms: 15 * 60_000,
                drop_percent: 5.0,
            })
        })
        .collect();
    let mut outs: Vec<Vec<Output>> = vec![Vec::new(); n];
    let last_s = 8 * 3600 - 1;
    // Polled once a second, as the gateway would, for the whole shift.
    for sec in 0..=last_s {
        plant.advance_to(sec as f64);
        let t = Timestamp::from_millis(start + sec * 1000);
        for (i, m) in plant.machines.iter().enumerate() {
            let state = Sample::good(TagId(0), Value::U64(m.state as u64), t);
            let parts = Sample::good(TagId(1), Value::U64(m.parts_made & 0xffff), t);
            let rejects = Sample::good(TagId(2), Value::U64(u64::from(m.rejects_shift)), t);
            counters[i].on_sample(&parts, &mut outs[i]);
            for s in [&state, &parts, &rejects] {
                oees[i].on_sample(s, &mut outs[i]);
            }
        }
    }
    for (i, m) in plant.machines.iter().enumerate() {
        let name = m.spec.name;
        assert_eq!(counters[i].total, m.parts_made, "{name}: the part count is exact");
        let elapsed = last_s as f64;
        let truth_a = m.running_s / elapsed;
        let truth_p = m.spec.ideal_cycle_s * m.parts_made as f64 / m.running_s;
        let truth_q = (m.parts_made - m.rejects_made) as f64 / m.parts_made as f64;
        let truth = truth_a * truth_p * truth_q;
        let f = oees[i].figures(start + last_s * 1000);
        eprintln!("{name}: {} parts, OEE {:.4} (simulator {truth:.4})", counters[i].total, f.oee);
        assert!((f.oee - truth).abs() <= 0.005, "{name}: OEE {:.4} against the simulator's {truth:.4} ({f:?})", f.oee);
        assert!((f.availability - truth_a).abs() <= 0.005, "{name}: availability");
        assert!(truth > 0.5 && truth < 1.0, "{name}: a plausible OEE {truth}");
        let drops: Vec<&EdgeEvent> = events(&outs[i])
            .into_iter()
            .filter(|e| e.kind == "performance_drop" && e.transition == Transition::Raised)
            .collect();
        if name == "press2" {
            let first = drops.first().unwrap_or_else(|| panic!("press2 slows down after 3 h: {:#?}", events(&outs[i])));
            let at_h = (first.time.as_millis() - start) as f64 / HOUR_MS as f64;
            assert!((3.0..3.75).contains(&at_h), "press2's drop noticed at {at_h:.2} h");
            assert!(first.message.starts_with("press2 performance down"), "{}", first.message);
        } else {
            assert!(drops.is_empty(), "{name} did not slow down: {drops:#?}");
        }
        let thousands = events(&outs[i]).iter().filter(|e| e.kind == "parts_produced").count() as u64;
        assert_eq!(thousands, m.parts_made / 1000, "{name}: an event every 1000 parts");
    }
    assert!(plant.machines.iter().all(|m| m.state != MachineState::Fault || m.running_s > 0.0));
}

#[test]
fn a_wearing_bearing_gets_maintenance_advice_before_zone_d() {
    let spec = press_line().into_iter().find(|m| m.name == "press2").unwrap();
    let mut plant = Plant::new(11, vec![spec]);
    let mut v = Vibration::new(VibrationConfig {
        asset: AssetPath::parse("acme/dortmund/pressing/line3/cell1/press2/vibration").unwrap(),
        name: "press2".into(),
        zones: iso_zones(2, true),
        advice_days: 14.0,
        trend_days: 7.0,
    });
    let mut out = Vec::new();
    let mut zone_d_at = None;
    for minute in 0..6 * 24 * 60 {
        plant.advance_to(minute as f64 * 60.0);
        let m = &plant.machines[0];
        let t = Timestamp::from_millis(minute * 60_000);
        if m.vibration_mm_s >= 4.5 && zone_d_at.is_none() {
            zone_d_at = Some(t);
        }
        v.on_sample(&Sample::good(TagId(0), Value::F64(m.vibration_mm_s), t), &mut out);
    }
    let zone_d_at = zone_d_at.expect("the bearing wears into zone D within 6 days");
    let advice = events(&out).into_iter().find(|e| e.kind == "maintenance_advice").expect("maintenance advice");
    eprintln!("advice at {}: {}; zone D at {zone_d_at}", advice.time, advice.message);
    assert!(advice.time < zone_d_at, "advice at {} after zone D at {zone_d_at}", advice.time);
    assert!(advice.message.contains("order a bearing within"), "{}", advice.message);
    // The advice is given again as the time left shrinks: the last one before zone D is honest.
    let advices: Vec<&EdgeEvent> =
        events(&out).into_iter().filter(|e| e.kind == "maintenance_advice" && e.time < zone_d_at).collect();
    let last = advices.last().unwrap();
    eprintln!("last advice at {}: {}", last.time, last.message);
    let predicted = last.body.iter().find(|(k, _)| *k == "days_to_zone_d").unwrap().1;
    let actual = (zone_d_at.as_millis() - last.time.as_millis()) as f64 / 86_400_000.0;
    assert!(predicted <= 2.0 * actual + 0.5, "the last advice said {predicted:.1} days; zone D came in {actual:.1}");
    let zone_c = events(&out).into_iter().find(|e| e.kind == "vibration_zone").expect("zone C first");
    assert!(zone_c.message.contains("zone C"), "{}", zone_c.message);
}
