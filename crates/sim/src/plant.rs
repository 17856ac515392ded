//! The simulated press line: machines whose state is a deterministic function of the seed and
//! simulated time, advanced in fixed steps of [`STEP_S`] seconds.
//!
//! Each machine runs its cycle, makes parts (a few of them rejects), stops for random faults
//! and for a changeover at every shift change (when its shift counters reset), heats up under
//! load, draws power with speed, and vibrates more as its bearing wears. Ground truth (parts
//! made, running time) is kept in plain fields for tests to compare against.

/// Simulated seconds per step. Fixed, so that the same seed gives the same plant at any speed.
pub const STEP_S: f64 = 0.1;
/// A shift lasts eight hours.
pub const SHIFT_S: f64 = 8.0 * 3600.0;
/// Changeover at the start of each shift.
const CHANGEOVER_S: f64 = 600.0;

/// What a machine is doing, as its PLC reports it in holding register 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineState {
    Idle = 0,
    Running = 1,
    Fault = 2,
}

/// The fixed properties of one machine.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    pub name: &'static str,
    pub model: &'static str,
    pub ideal_cycle_s: f64,
    pub nominal_rpm: f64,
    pub rated_power_kw: f64,
    pub reject_ratio: f64,
    /// Vibration velocity RMS of a healthy machine, mm/s.
    pub vibration_base_mm_s: f64,
    /// Growth of vibration with bearing wear, mm/s per simulated day (grows quadratically).
    pub wear_mm_s_per_day: f64,
    pub fault_mean_interval_s: f64,
    pub fault_mean_duration_s: f64,
    /// From this simulated time on, the machine runs this fraction of its nominal speed (a
    /// worn drive, a wrong setting): its performance drops.
    pub slowdown: Option<(f64, f64)>,
}

/// The machines of the built-in press line.
pub fn press_line() -> Vec<MachineSpec> {
    let press = |name, wear| MachineSpec {
        name,
        model: "HP-400 hydraulic press",
        ideal_cycle_s: 2.0,
        nominal_rpm: 1480.0,
        rated_power_kw: 37.0,
        reject_ratio: 0.015,
        vibration_base_mm_s: 1.1,
        wear_mm_s_per_day: wear,
        fault_mean_interval_s: 2.5 * 3600.0,
        fault_mean_duration_s: 240.0,
        slowdown: None,
    };
    vec![
        press("press1", 0.05),
        MachineSpec { slowdown: Some((3.0 * 3600.0, 0.88)), ..press("press2", 0.45) },
        press("press3", 0.1),
        MachineSpec {
            name: "wrapper",
            model: "SW-60 stretch wrapper",
            ideal_cycle_s: 1.2,
            nominal_rpm: 960.0,
            rated_power_kw: 7.5,
            reject_ratio: 0.005,
            vibration_base_mm_s: 0.8,
            wear_mm_s_per_day: 0.05,
            fault_mean_interval_s: 4.0 * 3600.0,
            fault_mean_duration_s: 120.0,
            slowdown: None,
        },
    ]
}

/// One machine's live state and ground truth.
#[derive(Debug, Clone)]
pub struct Machine {
    pub spec: MachineSpec,
    pub state: MachineState,
    pub shift: u32,
    /// Ground truth: every part made since the start, never reset.
    pub parts_made: u64,
    pub rejects_made: u64,
    pub parts_shift: u32,
    pub rejects_shift: u32,
    pub running_s: f64,
    pub speed_rpm: f64,
    pub temperature_c: f64,
    /// What the temperature sensor reports: the true temperature plus noise.
    pub temperature_reading_c: f64,
    pub power_kw: f64,
    pub vibration_mm_s: f64,
    /// The bearing's wear as vibration it adds, mm/s (ground truth; grows with time).
    pub wear_mm_s: f64,
    /// How long the bearing had run when the simulation started (days).
    pub bearing_age_days: f64,
    cycle_progress: f64,
    state_until_s: f64,
    next_fault_s: f64,
    ambient_drift_c: f64,
    rng: Rng,
}

/// The whole line.
#[derive(Debug, Clone)]
pub struct Plant {
    pub machines: Vec<Machine>,
    /// Simulated seconds since the start.
    pub time_s: f64,
}

impl Plant {
    pub fn new(seed: u64, specs: Vec<MachineSpec>) -> Self {
        let machines = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Machine::new(spec, seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect();
        Self { machines, time_s: 0.0 }
    }

    /// Steps the plant up to simulated time `t_s` (never backwards).
    pub fn advance_to(&mut self, t_s: f64) {
        while self.time_s + STEP_S <= t_s {
            self.time_s += STEP_S;
            for m in &mut self.machines {
                m.step(self.time_s);
            }
        }
    }
}

impl Machine {
    fn new(spec: MachineSpec, seed: u64) -> Self {
        let mut rng = Rng(seed | 1);
        let next_fault_s = rng.exponential(spec.fault_mean_interval_s);
        Self {
            spec,
            state: MachineState::Idle,
            shift: 0,
            parts_made: 0,
            rejects_made: 0,
            parts_shift: 0,
            rejects_shift: 0,
            running_s: 0.0,
            speed_rpm: 0.0,
            temperature_c: 24.0,
            temperature_reading_c: 24.0,
            power_kw: 0.0,
            vibration_mm_s: 0.0,
            wear_mm_s: 0.0,
            bearing_age_days: 0.0,
            cycle_progress: 0.0,
            state_until_s: CHANGEOVER_S.min(60.0),
            next_fault_s,
            ambient_drift_c: 0.0,
            rng,
        }
    }

    fn step(&mut self, t: f64) {
        self.change_shift(t);
        self.change_state(t);
        if self.state == MachineState::Running {
            self.running_s += STEP_S;
            self.make_parts();
        }
        self.physics(t);
    }

    fn change_shift(&mut self, t: f64) {
        let shift = (t / SHIFT_S) as u32;
        if shift != self.shift {
            self.shift = shift;
            self.parts_shift = 0;
            self.rejects_shift = 0;
            if self.state == MachineState::Running {
                self.state = MachineState::Idle;
                self.state_until_s = t + CHANGEOVER_S;
            }
        }
    }

    fn change_state(&mut self, t: f64) {
        match self.state {
            MachineState::Running if t >= self.next_fault_s => {
                self.state = MachineState::Fault;
                self.state_until_s = t + self.rng.exponential(self.spec.fault_mean_duration_s);
            }
            MachineState::Idle | MachineState::Fault if t >= self.state_until_s => {
                self.state = MachineState::Running;
                if self.next_fault_s <= t {
                    self.next_fault_s = t + self.rng.exponential(self.spec.fault_mean_interval_s);
                }
            }
            _ => {}
        }
    }

    fn make_parts(&mut self) {
        self.cycle_progress += STEP_S * (self.speed_rpm / self.spec.nominal_rpm) / self.spec.ideal_cycle_s;
        while self.cycle_progress >= 1.0 {
            self.cycle_progress -= 1.0;
            self.parts_made += 1;
            self.parts_shift = self.parts_shift.wrapping_add(1);
            if self.rng.unit() < self.spec.reject_ratio {
                self.rejects_made += 1;
                self.rejects_shift = self.rejects_shift.wrapping_add(1);
            }
        }
    }

    fn physics(&mut self, t: f64) {
        let running = self.state == MachineState::Running;
        let sag = self.spec.slowdown.filter(|(from, _)| t >= *from).map_or(1.0, |(_, f)| f);
        let target_rpm = if running { self.spec.nominal_rpm * sag } else { 0.0 };
        // Motors ramp up and coast down within a few seconds.
        self.speed_rpm += (target_rpm - self.speed_rpm) * (STEP_S / 2.0).min(1.0);
        let load = self.speed_rpm / self.spec.nominal_rpm;
        self.ambient_drift_c = (self.ambient_drift_c + self.rng.normal() * 0.002).clamp(-3.0, 3.0);
        let target_c = 24.0 + self.ambient_drift_c + 22.0 * load;
        self.temperature_c += (target_c - self.temperature_c) * STEP_S / 1200.0;
        self.temperature_reading_c = self.temperature_c + 0.08 * self.rng.normal();
        let idle_kw = 0.04 * self.spec.rated_power_kw;
        self.power_kw = idle_kw + 0.7 * self.spec.rated_power_kw * load * (1.0 + 0.02 * self.rng.normal());
        let days = self.bearing_age_days + t / 86_400.0;
        let wear = self.spec.wear_mm_s_per_day * days * (1.0 + days) / 2.0;
        self.wear_mm_s = wear;
        let vibration = (self.spec.vibration_base_mm_s + wear) * load.max(0.05);
        self.vibration_mm_s = vibration * (1.0 + 0.03 * self.rng.normal());
    }
}

/// The bearing's outer race: a 6205 deep-groove ball bearing (9 balls of 7.94 mm on a 39.04 mm
/// pitch circle), whose outer-race defect tone (BPFO) is 3.585 times the shaft frequency.
pub const BEARING_BPFO_ORDER: f64 = 3.585;

impl Machine {
    /// What an accelerometer on the bearing housing would record now, in g, at `rate_hz`: the
    /// shaft's once-per-turn tone, the outer-race defect tone growing with wear, and noise.
    /// `seed` varies the noise from one waveform to the next; the tones keep their phase, so a
    /// waveform read in parts across a refresh still holds whole tones.
    pub fn waveform(&self, samples: &mut [f32], rate_hz: f64, seed: u64) {
        let shaft_hz = self.speed_rpm / 60.0;
        let load = (self.speed_rpm / self.spec.nominal_rpm).max(0.0);
        let shaft_g = 0.3 * load;
        let defect_g = (0.01 + 0.5 * self.wear_mm_s) * load;
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for (i, x) in samples.iter_mut().enumerate() {
            let t = i as f64 / rate_hz;
            let w = std::f64::consts::TAU * shaft_hz * t;
            *x = (shaft_g * w.sin() + defect_g * (BEARING_BPFO_ORDER * w).sin() + 0.02 * rng.normal()) as f32;
        }
    }
}

/// xorshift64* with a Box-Muller normal: deterministic and dependency-free.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_plant() {
        let mut a = Plant::new(7, press_line());
        let mut b = Plant::new(7, press_line());
        a.advance_to(3600.0);
        b.advance_to(1800.0);
        b.advance_to(3600.0);
        for (x, y) in a.machines.iter().zip(&b.machines) {
            assert_eq!(x.parts_made, y.parts_made);
            assert_eq!(x.vibration_mm_s.to_bits(), y.vibration_mm_s.to_bits());
        }
        let mut c = Plant::new(8, press_line());
        c.advance_to(3600.0);
        assert_ne!(a.machines[0].temperature_c.to_bits(), c.machines[0].temperature_c.to_bits());
    }

    #[test]
    fn a_shift_makes_parts_at_about_the_ideal_rate_and_resets_counters() {
        let mut p = Plant::new(1, press_line());
        p.advance_to(SHIFT_S - 1.0);
        let m = &p.machines[0];
        let ideal = m.running_s / m.spec.ideal_cycle_s;
        assert!(
            m.parts_made as f64 > 0.95 * ideal && m.parts_made as f64 <= ideal + 1.0,
            "{} vs {ideal}",
            m.parts_made
        );
        assert_eq!(u64::from(m.parts_shift), m.parts_made);
        assert!(m.running_s > 0.8 * SHIFT_S);
        p.advance_to(SHIFT_S + 1.0);
        assert_eq!(p.machines[0].parts_shift, 0);
        assert_eq!(p.machines[0].shift, 1);
    }

    #[test]
    fn the_worn_bearing_vibrates_more_as_days_pass() {
        let mut p = Plant::new(3, press_line());
        let mut at = |t: f64| {
            p.advance_to(t);
            p.machines[1].vibration_mm_s / (p.machines[1].speed_rpm / p.machines[1].spec.nominal_rpm).max(0.05)
        };
        let day0 = at(3600.0);
        let day3 = at(3.0 * 86_400.0 + 3600.0);
        assert!(day3 > day0 + 2.0, "{day0} -> {day3}");
    }
}
