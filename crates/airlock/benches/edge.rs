//! Edge benchmark.
//!
//! 1. Throughput on one thread: 1000 tags, each through a realistic chain (deadband, swinging
//!    door, a 1-minute window, high/low/rate alarms), 10,000 noisy samples each.
//! 2. Reduction: a simulated 8-hour shift of the demo press line, polled at 1 Hz, read through its
//!    register map and decoder, through the demo config's edge (the same `Condenser` the gateway
//!    runs): bytes that would go upstream (JSON records with their message ids) against bytes
//!    read (16 bytes a sample: an 8-byte time and an 8-byte value), in all and per kind of output.
//! 3. The bearing watch: waveforms a second through `BearingWatch::on_waveform` (Hann window,
//!    FFT, defect peaks, noise floor) against a bare real FFT of the same length, same run.
//!
//! Run: `cargo bench -p airlock --bench edge`.

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use airlock_config::{Protocol, Space};
use airlock_edge::alarm::{AlarmConfig, Alarms};
use airlock_edge::deadband::Deadband;
use airlock_edge::sdt::SwingingDoor;
use airlock_edge::window::Window;
use airlock_edge::{Output, Transform};
use airlock_model::{AssetPath, Sample, TagId, Timestamp, Value};
use airlock_pipeline::{Condenser, TagTable};
use airlock_sim::plant::{Plant, press_line};
use airlock_sim::server::Banks;
use airlock_south_modbus::decode::{decode_bit, decode_registers};
use airlock_upstream::Upstream;

fn throughput() {
    let tags = 1000;
    let per_tag = 10_000i64;
    let mut rng = 0x1234_5678_u64;
    let samples: Vec<Sample> = (0..per_tag)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let noise = (rng % 1000) as f64 / 1000.0 - 0.5;
            let v = 50.0 + 20.0 * (i as f64 / 600.0).sin() + noise;
            Sample::good(TagId(0), Value::F64(v), Timestamp::from_millis(1_795_824_000_000 + i * 1000))
        })
        .collect();
    let asset = AssetPath::parse("bench/line/machine/tag").unwrap();
    let mut chains: Vec<(Deadband, SwingingDoor, Window, Alarms)> = (0..tags)
        .map(|t| {
            let alarms = AlarmConfig {
                high: Some(68.0),
                low: Some(32.0),
                hysteresis: 1.0,
                rate_max: Some(5.0),
                on_delay_ms: 5000,
                off_delay_ms: 5000,
                ..Default::default()
            };
            (
                Deadband::new(0.5, Some(60_000)),
                SwingingDoor::new(0.2, 600_000),
                Window::new(TagId(t), 60_000),
                Alarms::new(asset.clone(), alarms),
            )
        })
        .collect();
    let mut out = Vec::with_capacity(64);
    let mut kept = 0usize;
    let started = Instant::now();
    for (deadband, sdt, window, alarms) in &mut chains {
        for s in &samples {
            deadband.on_sample(s, &mut out);
            let passed = out.len();
            for i in 0..passed {
                if let Output::Sample(p) = &out[i] {
                    let p = p.clone();
                    sdt.on_sample(&p, &mut out);
                }
            }
            window.on_sample(s, &mut out);
            alarms.on_sample(s, &mut out);
            kept += out.len() - passed;
            out.clear();
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = (tags as i64 * per_tag) as f64;
    println!(
        "edge throughput: {tags} tags x {per_tag} samples through deadband + swinging door + 1-min window + alarms, one thread"
    );
    println!("  {:.1} M samples/s ({:.1} ns a sample), {kept} outputs", total / elapsed / 1e6, elapsed * 1e9 / total);
}

fn reduction() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sim = runtime.block_on(airlock_sim::start(&airlock_sim::SimOptions::default())).unwrap();
    let text = sim.config_toml(1000);
    sim.stop();
    drop(sim);
    let config = airlock_config::parse(&text, Path::new("demo.toml")).unwrap();
    let mut condenser = Condenser::new(&config, std::sync::Arc::new(TagTable::new(&config)));
    let mut plant = Plant::new(1, press_line());
    let start = Timestamp::parse_rfc3339("2026-11-30T06:00:00Z").unwrap().as_millis();
    let mut banks: Vec<Banks> = plant.machines.iter().map(|_| Banks::default()).collect();
    let (mut samples_read, mut records) = (0u64, Vec::new());
    let mut upstream: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let seconds = 8 * 3600i64;
    for sec in 0..seconds {
        plant.advance_to(sec as f64);
        let t = Timestamp::from_millis(start + sec * 1000);
        let mut batch = Vec::new();
        let mut id = 0u32;
        for (i, m) in plant.machines.iter().enumerate() {
            airlock_sim::write_registers(m, &mut banks[i]);
            let Protocol::ModbusTcp(device) = &config.devices[i].protocol else { continue };
            for tag in &device.tags {
                if matches!(tag.data_type, airlock_config::DataType::Waveform { .. }) {
                    // Waveforms are left out: the reduction is over scalar samples; the bearing
                    // watch sends only its events (see the demo test for those).
                    id += 1;
                    continue;
                }
                let a = usize::from(tag.address);
                let value = match tag.space {
                    Space::Coil => decode_bit(&banks[i].coils[a..]),
                    Space::DiscreteInput => decode_bit(&banks[i].discrete_inputs[a..]),
                    Space::InputRegister => decode_registers(tag, &banks[i].input_registers[a..]),
                    Space::HoldingRegister => decode_registers(tag, &banks[i].holding_registers[a..]),
                };
                batch.push(Sample::good(TagId(id), value.unwrap(), t));
                id += 1;
            }
        }
        samples_read += batch.len() as u64;
        condenser.on_samples(&batch, &mut records);
        if sec % 10 == 0 {
            condenser.on_tick(t, &mut records);
        }
        for (class, record) in records.drain(..) {
            let kind = match &record {
                Upstream::Aggregate(_) => "window aggregates".into(),
                Upstream::Production(_) => "production per interval".into(),
                Upstream::Oee(_) => "OEE".into(),
                r if r.event_kind().is_some() => format!("event {}", r.event_kind().unwrap_or("")),
                r => format!("{} {}", class.name(), r.topic().rsplit('/').next().unwrap_or("")),
            };
            // As the JSON sinks send it (the id is `demo-s123456`).
            let payload = airlock_upstream::json::to_vec("demo-s123456", &record);
            let e = upstream.entry(kind).or_default();
            e.0 += 1;
            e.1 += payload.len() as u64;
        }
    }
    let read_bytes = samples_read * 16;
    let up: u64 = upstream.values().map(|(_, b)| b).sum();
    let count: u64 = upstream.values().map(|(n, _)| n).sum();
    println!("\nreduction: a simulated 8-hour shift of the demo press line (4 machines, 48 tags at 1 Hz)");
    println!("  read: {samples_read} samples = {read_bytes} bytes at 16 bytes a sample");
    println!(
        "  upstream: {count} records, {up} bytes = {:.3} % of what was read ({:.0}x less)",
        up as f64 * 100.0 / read_bytes as f64,
        read_bytes as f64 / up as f64
    );
    println!("  {:<36} {:>8} {:>10} {:>9}", "what", "records", "bytes", "% of read");
    for (kind, (n, b)) in &upstream {
        println!("  {kind:<36} {n:>8} {b:>10} {:>8.3}%", *b as f64 * 100.0 / read_bytes as f64);
    }
}

/// A waveform like the simulator's: shaft tone, BPFO tone, noise.
fn bearing_waveform(n: usize, rate: f64, seed: u64) -> Vec<f32> {
    let mut rng = seed | 1;
    (0..n)
        .map(|i| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let t = i as f64 / rate;
            let w = std::f64::consts::TAU * 24.67 * t;
            (0.3 * w.sin() + 0.02 * (3.585 * w).sin() + ((rng % 1000) as f64 / 1000.0 - 0.5) * 0.05) as f32
        })
        .collect()
}

fn bearing() {
    use airlock_edge::spectrum::{BearingGeometry, BearingWatch};
    let b6205 = BearingGeometry { balls: 9, ball_diameter_mm: 7.94, pitch_diameter_mm: 39.04, contact_angle_deg: 0.0 };
    println!("\nbearing watch: waveforms through on_waveform vs a bare real FFT of the same length");
    for (n, rate) in [(512usize, 512.0), (4096, 4096.0)] {
        let waves: Vec<Vec<f32>> = (0..16).map(|i| bearing_waveform(n, rate, i + 1)).collect();
        let rounds = 4_000_000 / n;
        let mut watch = BearingWatch::new(AssetPath::parse("a/b/c").unwrap(), "m", b6205, 10, 2.0);
        let mut out = Vec::new();
        let started = Instant::now();
        for i in 0..rounds {
            watch.on_waveform(Timestamp::from_millis(i as i64), &waves[i % 16], rate, 1480.0, &mut out);
            out.clear();
        }
        let ours = started.elapsed().as_secs_f64() / rounds as f64;
        let mut planner = realfft::RealFftPlanner::<f64>::new();
        let fft = planner.plan_fft_forward(n);
        let mut output = fft.make_output_vec();
        let mut sink = 0.0;
        let started = Instant::now();
        for i in 0..rounds {
            let mut input: Vec<f64> = waves[i % 16].iter().map(|x| f64::from(*x)).collect();
            fft.process(&mut input, &mut output).unwrap();
            sink += output[1].re;
        }
        let bare = started.elapsed().as_secs_f64() / rounds as f64;
        println!(
            "  {n} samples: {:.1} us a waveform ({:.0} waveforms/s on one core); bare FFT {:.1} us: {:.2}x ({sink:.0})",
            ours * 1e6,
            1.0 / ours,
            bare * 1e6,
            ours / bare
        );
    }
}

fn main() {
    throughput();
    reduction();
    bearing();
}
