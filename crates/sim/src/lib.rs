//! A simulated press line for demos, tests and benchmarks: three presses and a stretch wrapper,
//! each served as its own Modbus TCP server on loopback by a small server of our own
//! ([`server`]) that answers reads only, and the line's controller as an OPC UA server
//! ([`opcua`], async-opcua) with line-level values. The plant ([`plant`]) is deterministic from a seed and
//! its clock can run faster than real time. The register map of every machine is below and in
//! `docs/simulator.md`; [`RunningSim::config_toml`] writes an airlock config that reads it.
//!
//! | space | address | type | tag |
//! |---|---|---|---|
//! | holding | 0 | u32 | `parts_shift`: parts this shift, reset at shift change |
//! | holding | 2 | u16 | `parts_wrap`: parts since start, rolls over at 65536 |
//! | holding | 3 | u32 | `rejects_shift`: rejects this shift |
//! | holding | 5 | u16 | `state`: 0 idle, 1 running, 2 fault |
//! | holding | 6 | u16 | `shift`: shift number since start |
//! | holding | 10 | string(16) | `model` |
//! | holding | 1000 | waveform(512) | `bearing_accel`: bearing housing acceleration, milli-g, 512 Hz, refreshed every second |
//! | input | 0 | f32 | `speed_rpm` |
//! | input | 2 | f32 | `temperature_c` |
//! | input | 4 | f32 | `power_kw` |
//! | input | 6 | f32 | `vibration_mm_s` (velocity RMS) |
//! | input | 20 | i16 | `temperature_dc`: temperature in tenths of a degree |
//! | coil | 0 | bool | `running` |
//! | discrete | 0 | bool | `fault` |
//!
//! Addresses up to 4095 exist in every space; those not in the map hold a fixed pattern (for the
//! benchmark), and reads past 4095 get exception 02.

pub mod opcua;
pub mod plant;
pub mod server;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use plant::{Machine, Plant};
use server::{Banks, ServerHandle};

/// How to run the simulated plant.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub seed: u64,
    /// Simulated seconds per real second (1 = real time).
    pub speed: f64,
    pub bind: IpAddr,
    /// The first machine's port; the others follow, then the OPC UA server. 0 picks free ports.
    pub base_port: u16,
    /// Serve the line controller over OPC UA too.
    pub opcua: bool,
    /// How long every machine's bearing had run when the simulation starts (days): a worn one
    /// (press2's) is nearer its end.
    pub bearing_age_days: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            seed: 1,
            speed: 1.0,
            bind: IpAddr::from([127, 0, 0, 1]),
            base_port: 0,
            opcua: true,
            bearing_age_days: 0.0,
        }
    }
}

/// A running plant: its machines' servers and the task that moves the plant on.
#[derive(Debug)]
pub struct RunningSim {
    pub servers: Vec<(String, ServerHandle)>,
    /// The line controller's OPC UA server, when served.
    pub opcua: Option<Arc<opcua::OpcUaServer>>,
    pub plant: Arc<Mutex<Plant>>,
    /// Simulated seconds per real second.
    pub speed: f64,
    stepper: JoinHandle<()>,
}

/// Starts the press line: one server per machine, and a task that advances the plant every
/// 20 ms of real time and copies each machine into its registers.
pub async fn start(opts: &SimOptions) -> io::Result<RunningSim> {
    let mut plant = Plant::new(opts.seed, plant::press_line());
    for m in &mut plant.machines {
        m.bearing_age_days = opts.bearing_age_days;
    }
    let mut servers = Vec::new();
    for (i, m) in plant.machines.iter().enumerate() {
        let port = if opts.base_port == 0 { 0 } else { opts.base_port.saturating_add(i as u16) };
        let mut banks = Banks::default();
        fill_pattern(&mut banks);
        write_registers(m, &mut banks);
        write_waveform(m, &mut banks, 0);
        let handle = server::serve(SocketAddr::new(opts.bind, port), Arc::new(Mutex::new(banks))).await?;
        servers.push((m.spec.name.to_owned(), handle));
    }
    let opcua = match opts.opcua {
        true => {
            let port = if opts.base_port == 0 { 0 } else { opts.base_port.saturating_add(servers.len() as u16) };
            // A folder of its own (two plants in one process, as in tests, do not share one),
            // removed when the server stops.
            static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let pki = std::env::temp_dir().join(format!("airlock-sim-opcua-{}-{nth}", std::process::id()));
            Some(Arc::new(opcua::serve_line(opts.bind, port, &pki, &plant.machines).await?))
        }
        false => None,
    };
    let plant = Arc::new(Mutex::new(plant));
    let banks = servers.iter().map(|(_, s)| Arc::clone(&s.banks)).collect();
    let stepper = tokio::spawn(step_forever(Arc::clone(&plant), banks, opcua.clone(), opts.speed));
    Ok(RunningSim { servers, opcua, plant, speed: opts.speed, stepper })
}

impl RunningSim {
    pub fn stop(&self) {
        self.stepper.abort();
        for (_, s) in &self.servers {
            s.stop();
        }
        if let Some(o) = &self.opcua {
            o.stop();
        }
    }

    /// An airlock config that reads every tag of every machine. The edge sees the plant's
    /// accelerated time through a real clock, so the ideal cycle times are scaled by the speed,
    /// and OEE compares performance over minutes.
    pub fn config_toml(&self, poll_interval_ms: u64) -> String {
        self.config_toml_on(poll_interval_ms, None)
    }

    /// As [`RunningSim::config_toml`], with the gateway on the plant's clock: it shows
    /// `plant_start` when the gateway starts (the hour the plant's first shift began) and runs at
    /// the simulator's speed, so the edge's windows, shifts, OEE baselines and vibration hours
    /// pass as fast as the plant's do (what `airlock demo` runs).
    pub fn config_toml_on_plant_clock(&self, poll_interval_ms: u64, plant_start: airlock_model::Timestamp) -> String {
        self.config_toml_on(poll_interval_ms, Some(plant_start))
    }

    fn config_toml_on(&self, poll_interval_ms: u64, plant_clock: Option<airlock_model::Timestamp>) -> String {
        let mut out = String::from("# The built-in demo plant: a press line of airlock's simulator.\n");
        out.push_str("[gateway]\nname = \"demo\"\n");
        // On the plant's clock the machines' cycle times are the plant's; on the wall clock they
        // are as fast as the plant runs, and the OEE windows are demo-sized.
        let (cycle_divisor, oee_windows) = match plant_clock {
            Some(start) => {
                let hour = start.as_millis().div_euclid(3_600_000).rem_euclid(24);
                out.push_str(&format!(
                    "# The simulated plant runs {speed}x: so does the gateway's clock, from the hour the\n\
                     # plant's first shift began (a simulated plant only; never for a real one).\n\
                     clock_speed = {speed}\nclock_start = \"{start}\"\n\n[edge]\nproduction_interval_s = 1800\n\
                     shift_start_hour = {}\n",
                    hour % 8,
                    speed = self.speed,
                ));
                (1.0, "baseline_minutes = 30, compare_minutes = 10")
            }
            None => {
                out.push_str("\n[edge]\nproduction_interval_s = 1800\n");
                (self.speed, "baseline_minutes = 1, compare_minutes = 1")
            }
        };
        let plant = self
            .plant
            .lock()
            .map(|p| p.machines.iter().map(|m| m.spec.ideal_cycle_s).collect::<Vec<f64>>())
            .unwrap_or_default();
        for (i, (name, s)) in self.servers.iter().enumerate() {
            let cycle = plant.get(i).copied().unwrap_or(2.0) / cycle_divisor;
            out.push_str(&format!(
                "\n[[device]]\nname = \"{name}\"\nasset_path = \"acme/dortmund/pressing/line3/cell1\"\n\
                 protocol = \"modbus_tcp\"\naddress = \"{}\"\nunit_id = 1\npoll_interval_ms = {poll_interval_ms}\n\
                 timeout_ms = 500\nrate_max_per_s = 50\nmax_gap_registers = 8\n\
                 oee = {{ state_tag = \"state\", running_value = 1, parts_tag = \"parts_wrap\", rejects_tag = \"rejects_shift\", \
                 ideal_cycle_s = {cycle}, performance_drop_percent = 5, {oee_windows} }}\n",
                s.addr
            ));
            // The counter's pace: ten times the machine's ideal rate, on the clock the gateway keeps.
            let tags = TAGS_TOML.replace("= PACE\n", &format!("= {:?}\n", 10.0 / cycle));
            match plant_clock {
                // Ten plant minutes: a poll comes every few plant minutes at demo speeds.
                Some(_) => out.push_str(&tags.replace("stale_s = 10\n", "stale_s = 600\n")),
                None => out.push_str(&tags),
            }
        }
        if let Some(o) = &self.opcua {
            out.push_str(&format!(
                "\n# The line controller, over OPC UA (a subscription).\n[[device]]\nname = \"line3\"\n\
                 asset_path = \"acme/dortmund/pressing\"\nprotocol = \"opcua\"\naddress = \"{}\"\n\
                 publishing_interval_ms = {poll_interval_ms}\n",
                o.endpoint
            ));
            out.push_str(LINE_TAGS_TOML);
            for (name, _) in &self.servers {
                out.push_str(&format!(
                    "[[device.tag]]\nname = \"{name}_speed\"\nnode_id = \"ns=2;s=Line3.{name}.Speed\"\nunit = \"rpm\"\ndeadband = 100.0\n"
                ));
            }
        }
        out
    }
}

const LINE_TAGS_TOML: &str = r#"[[device.tag]]
name = "output"
type = "u32"
node_id = "ns=2;s=Line3.Output"
unit = "parts"
deadband = 100.0
[[device.tag]]
name = "power"
node_id = "ns=2;s=Line3.Power"
unit = "kW"
deadband = 5.0
window_s = 1800
[[device.tag]]
name = "all_running"
type = "bool"
node_id = "ns=2;s=Line3.AllRunning"
"#;

const TAGS_TOML: &str = r#"
[[device.tag]]
name = "parts_shift"
space = "holding_register"
address = 0
type = "u32"
unit = "parts"
deadband = 5000.0
[[device.tag]]
name = "parts_wrap"
space = "holding_register"
address = 2
type = "u16"
unit = "parts"
production = true
production_every_parts = 1000
production_parts_max_per_s = PACE
[[device.tag]]
name = "rejects_shift"
space = "holding_register"
address = 3
type = "u32"
unit = "parts"
deadband = 50.0
[[device.tag]]
name = "state"
space = "holding_register"
address = 5
type = "u16"
[[device.tag]]
name = "shift"
space = "holding_register"
address = 6
type = "u16"
[[device.tag]]
name = "model"
space = "holding_register"
address = 10
type = "string"
length_chars = 16
[[device.tag]]
name = "speed"
space = "input_register"
address = 0
type = "f32"
unit = "rpm"
deadband = 100.0
heartbeat_s = 1800
[[device.tag]]
name = "temperature"
space = "input_register"
address = 20
type = "i16"
scale = 0.1
unit = "degC"
swinging_door_dev = 1.0
swinging_door_max_s = 3600
window_s = 1800
alarm_high = 45.0
alarm_hysteresis = 1.0
alarm_on_delay_ms = 10000
alarm_off_delay_ms = 10000
[[device.tag]]
name = "power"
space = "input_register"
address = 4
type = "f32"
unit = "kW"
historian_resolution = 0.01
deadband_percent = 25.0
span_min = 0.0
span_max = 40.0
heartbeat_s = 1800
window_s = 1800
[[device.tag]]
name = "vibration"
space = "input_register"
address = 6
type = "f32"
unit = "mm/s"
historian_resolution = 0.01
vibration_group = 2
vibration_foundation = "rigid"
swinging_door_dev = 0.5
swinging_door_max_s = 3600
window_s = 1800
alarm_high = 2.8
alarm_hysteresis = 0.2
alarm_on_delay_ms = 30000
alarm_rate_max_per_s = 5.0
[[device.tag]]
name = "bearing_accel"
space = "holding_register"
address = 1000
type = "waveform"
waveform_samples = 512
sample_rate_hz = 512
scale = 0.001
unit = "g"
bearing_balls = 9
bearing_ball_diameter_mm = 7.94
bearing_pitch_diameter_mm = 39.04
shaft_speed_tag = "speed"
[[device.tag]]
name = "running"
space = "coil"
address = 0
type = "bool"
stale_s = 10
[[device.tag]]
name = "fault"
space = "discrete_input"
address = 0
type = "bool"
"#;

impl Drop for RunningSim {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn step_forever(
    plant: Arc<Mutex<Plant>>,
    banks: Vec<Arc<Mutex<Banks>>>,
    opcua: Option<Arc<opcua::OpcUaServer>>,
    speed: f64,
) {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    let mut tick = 0u64;
    loop {
        ticker.tick().await;
        tick += 1;
        let t = started.elapsed().as_secs_f64() * speed;
        let Ok(mut plant) = plant.lock() else { return };
        plant.advance_to(t);
        for (i, (m, b)) in plant.machines.iter().zip(&banks).enumerate() {
            if let Ok(mut b) = b.lock() {
                write_registers(m, &mut b);
                // A new waveform once a second, as a vibration sensor would record it; each
                // machine's noise its own.
                if tick.is_multiple_of(50) {
                    write_waveform(m, &mut b, tick * 16 + i as u64);
                }
            }
        }
        // The line controller publishes every 100 ms.
        if let Some(o) = &opcua
            && tick.is_multiple_of(5)
        {
            o.write_line(&plant.machines);
        }
    }
}

/// Copies one machine's state into its registers (see the map at the top of this file).
pub fn write_registers(m: &Machine, b: &mut Banks) {
    let hr = &mut b.holding_registers;
    put_u32(hr, 0, m.parts_shift);
    hr[2] = (m.parts_made & 0xffff) as u16;
    put_u32(hr, 3, m.rejects_shift);
    hr[5] = m.state as u16;
    hr[6] = m.shift as u16;
    for (i, pair) in format!("{:<16}", m.spec.name.to_uppercase()).as_bytes().chunks(2).take(8).enumerate() {
        hr[10 + i] = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(b' ')]);
    }
    let ir = &mut b.input_registers;
    put_f32(ir, 0, m.speed_rpm as f32);
    put_f32(ir, 2, m.temperature_reading_c as f32);
    put_f32(ir, 4, m.power_kw as f32);
    put_f32(ir, 6, m.vibration_mm_s as f32);
    ir[20] = ((m.temperature_reading_c * 10.0).round() as i16) as u16;
    b.coils[0] = m.state == plant::MachineState::Running;
    b.discrete_inputs[0] = m.state == plant::MachineState::Fault;
}

/// Where the waveform starts, how many samples it has and their rate.
pub const WAVEFORM_ADDRESS: usize = 1000;
pub const WAVEFORM_SAMPLES: usize = 512;
pub const WAVEFORM_RATE_HZ: u32 = 512;

/// Records a new waveform of the machine's bearing into its registers, in milli-g.
pub fn write_waveform(m: &Machine, b: &mut Banks, seed: u64) {
    let mut wave = [0f32; WAVEFORM_SAMPLES];
    m.waveform(&mut wave, f64::from(WAVEFORM_RATE_HZ), seed);
    let registers = &mut b.holding_registers[WAVEFORM_ADDRESS..WAVEFORM_ADDRESS + WAVEFORM_SAMPLES];
    for (r, g) in registers.iter_mut().zip(wave) {
        *r = ((g * 1000.0).round().clamp(-32768.0, 32767.0) as i16) as u16;
    }
}

/// Addresses outside the map hold a fixed pattern, so the benchmark reads real, varied data.
fn fill_pattern(b: &mut Banks) {
    for (i, w) in b.holding_registers.iter_mut().chain(b.input_registers.iter_mut()).enumerate() {
        *w = (i as u16).wrapping_mul(40_503);
    }
    for (i, bit) in b.coils.iter_mut().chain(b.discrete_inputs.iter_mut()).enumerate() {
        *bit = i % 3 == 0;
    }
}

fn put_u32(r: &mut [u16], at: usize, v: u32) {
    r[at] = (v >> 16) as u16;
    r[at + 1] = v as u16;
}

fn put_f32(r: &mut [u16], at: usize, v: f32) {
    put_u32(r, at, v.to_bits());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plant serves its line controller over OPC UA with a PKI folder of its own, and a
    /// stopped plant leaves none behind (`airlock demo` once left one in the temp folder per run).
    #[tokio::test]
    async fn a_stopped_plant_leaves_no_files_behind() {
        let (a, b) = (start(&SimOptions::default()).await.unwrap(), start(&SimOptions::default()).await.unwrap());
        let folders = [&a, &b].map(|s| s.opcua.as_ref().unwrap().pki_dir().to_owned());
        assert_ne!(folders[0], folders[1], "two plants of one process share a PKI folder");
        assert!(folders.iter().all(|f| f.exists()), "{folders:?}");
        a.stop();
        assert!(!folders[0].exists(), "{} is left behind", folders[0].display());
        assert!(folders[1].exists(), "stopping one plant removed the other's PKI folder");
        drop(b);
        assert!(!folders[1].exists(), "{} is left behind by a dropped plant", folders[1].display());
    }

    /// A plant whose port is taken says which port (it said only "Address already in use").
    #[tokio::test]
    async fn a_taken_port_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let opts = SimOptions { base_port: port, opcua: false, ..SimOptions::default() };
        let e = start(&opts).await.err().unwrap();
        assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    }
}
