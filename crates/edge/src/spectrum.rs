//! Spectra of vibration waveforms and the rolling-bearing defect frequencies in them: which
//! defect is growing.
//!
//! A waveform (acceleration samples at a known rate) becomes an amplitude spectrum (Hann window,
//! real FFT, amplitudes corrected for the window, so a sine of amplitude A shows as a peak of
//! height A). A bearing's geometry gives its defect frequencies as multiples of the shaft
//! frequency (with `r = d / D · cos(contact angle)`):
//! - BPFO, outer race: `n / 2 · (1 − r)`;
//! - BPFI, inner race: `n / 2 · (1 + r)`;
//! - BSF, rolling element: `D / (2 d) · (1 − r²)`;
//! - FTF, cage: `(1 − r) / 2`.
//!
//! [`BearingWatch`] sums each defect's peaks (fundamental and second harmonic, within a bin) per
//! waveform, learns a baseline from the first waveforms, and raises an event when a defect's
//! amplitude grows past `growth` times its baseline (clearing when it falls below half of that).
//! A baseline is held at least 8 times the spectrum's median amplitude, so that a defect with no
//! tone of its own (its baseline is noise) does not raise on noise.
//!
//! A waveform is compared only at a steady shaft speed near the baseline's (see
//! [`BearingWatch::on_waveform`]). The gateway feeds it a `waveform` tag with bearing keys
//! (see `docs/config.md`), at the speed last read from the tag named by `shaft_speed_tag`.

use std::sync::Arc;

use airlock_model::{AssetPath, Severity, Timestamp};
use realfft::RealFftPlanner;

use crate::{EdgeEvent, Output, Transition, num};

/// A rolling bearing's geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BearingGeometry {
    pub balls: u32,
    pub ball_diameter_mm: f64,
    pub pitch_diameter_mm: f64,
    pub contact_angle_deg: f64,
}

/// The four defects, in the order of [`BearingGeometry::orders`].
pub const DEFECTS: [(&str, &str); 4] =
    [("BPFO", "outer race"), ("BPFI", "inner race"), ("BSF", "rolling element"), ("FTF", "cage")];

impl BearingGeometry {
    /// BPFO, BPFI, BSF and FTF as multiples of the shaft frequency.
    pub fn orders(&self) -> [f64; 4] {
        let r = self.ball_diameter_mm / self.pitch_diameter_mm * self.contact_angle_deg.to_radians().cos();
        let n = f64::from(self.balls);
        [
            n / 2.0 * (1.0 - r),
            n / 2.0 * (1.0 + r),
            self.pitch_diameter_mm / (2.0 * self.ball_diameter_mm) * (1.0 - r * r),
            (1.0 - r) / 2.0,
        ]
    }
}

/// An amplitude spectrum: `amplitudes[k]` at `k × resolution_hz`.
#[derive(Debug, Clone)]
pub struct Spectrum {
    pub resolution_hz: f64,
    pub amplitudes: Vec<f64>,
}

/// Makes spectra: the FFT plans and the Hann window of the last length, kept between waveforms.
#[derive(Default)]
pub struct Analyzer {
    planner: RealFftPlanner<f64>,
    window: Vec<f64>,
    input: Vec<f64>,
}

impl Analyzer {
    /// The spectrum of `samples` taken at `sample_rate_hz`.
    pub fn spectrum(&mut self, samples: &[f32], sample_rate_hz: f64) -> Option<Spectrum> {
        let n = samples.len();
        if n < 8 || sample_rate_hz <= 0.0 {
            return None;
        }
        if self.window.len() != n {
            self.window = (0..n).map(|i| 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / n as f64).cos()).collect();
        }
        let fft: Arc<dyn realfft::RealToComplex<f64>> = self.planner.plan_fft_forward(n);
        self.input.clear();
        self.input.extend(samples.iter().zip(&self.window).map(|(s, w)| f64::from(*s) * w));
        let mut output = fft.make_output_vec();
        fft.process(&mut self.input, &mut output).ok()?;
        // One-sided amplitude, corrected for the Hann window's coherent gain of 1/2.
        let scale = 4.0 / n as f64;
        let amplitudes = output.iter().map(|c| c.norm() * scale).collect();
        Some(Spectrum { resolution_hz: sample_rate_hz / n as f64, amplitudes })
    }
}

impl Spectrum {
    /// The highest amplitude within `bins` bins of `hz`.
    /// Nothing (0) for a frequency beyond the spectrum or none at all (a garbage shaft speed).
    pub fn peak_near(&self, hz: f64, bins: usize) -> f64 {
        let k = (hz / self.resolution_hz).round();
        if !(0.0..=(self.amplitudes.len() + bins) as f64).contains(&k) {
            return 0.0;
        }
        let k = k as usize;
        let lo = k.saturating_sub(bins);
        let hi = k.saturating_add(bins).min(self.amplitudes.len().saturating_sub(1));
        if lo > hi {
            return 0.0;
        }
        self.amplitudes[lo..=hi].iter().copied().fold(0.0, f64::max)
    }

    /// The median amplitude: the noise floor of a spectrum made of a few tones and noise.
    pub fn median(&self) -> f64 {
        let mut a = self.amplitudes.clone();
        let middle = a.len() / 2;
        if a.is_empty() {
            return 0.0;
        }
        *a.select_nth_unstable_by(middle, f64::total_cmp).1
    }

    /// The energy (sum of squared amplitudes) between `lo_hz` and `hi_hz`.
    pub fn band_energy(&self, lo_hz: f64, hi_hz: f64) -> f64 {
        let lo = (lo_hz / self.resolution_hz).ceil().max(0.0) as usize;
        let hi = ((hi_hz / self.resolution_hz).floor() as usize).min(self.amplitudes.len().saturating_sub(1));
        self.amplitudes.get(lo..=hi).map_or(0.0, |a| a.iter().map(|x| x * x).sum())
    }

    /// Each defect's amplitude: the peaks at its frequency and its second harmonic (within a bin),
    /// summed. (Higher harmonics of one defect fall near those of another too easily.)
    pub fn defect_amplitudes(&self, shaft_hz: f64, orders: [f64; 4]) -> [f64; 4] {
        orders.map(|o| (1..=2).map(|h| self.peak_near(o * shaft_hz * f64::from(h), 1)).sum())
    }
}

/// A waveform is compared only at a steady shaft speed (within 2 % of the previous waveform's)
/// and at the baseline's operating point (within 15 % of its mean speed): amplitudes change
/// with speed and load, and a run-up smears the tones across bins.
const STEADY_SPEED: f64 = 0.02;
const SAME_SPEED: f64 = 0.15;

/// How far above the spectrum's median amplitude (its noise floor) a defect's baseline is held:
/// a defect amplitude sums two peaks, each the largest of three bins.
const NOISE_MARGIN: f64 = 8.0;

/// Watches a bearing's defect frequencies in a machine's waveforms.
pub struct BearingWatch {
    asset: AssetPath,
    name: String,
    orders: [f64; 4],
    /// Waveforms averaged into the baseline.
    baseline_count: usize,
    growth: f64,
    learned: Vec<[f64; 4]>,
    /// The shaft speeds of the learned waveforms, and their mean once learned.
    learned_rpm: Vec<f64>,
    baseline_rpm: f64,
    /// The shaft speed at the previous waveform: a waveform taken while the speed changes is
    /// not compared.
    last_rpm: f64,
    baseline: Option<[f64; 4]>,
    raised: [bool; 4],
    analyzer: Analyzer,
}

impl BearingWatch {
    pub fn new(asset: AssetPath, name: &str, bearing: BearingGeometry, baseline_count: usize, growth: f64) -> Self {
        Self {
            asset,
            name: name.to_owned(),
            orders: bearing.orders(),
            baseline_count: baseline_count.max(1),
            growth,
            learned: Vec::new(),
            learned_rpm: Vec::new(),
            baseline_rpm: 0.0,
            last_rpm: 0.0,
            baseline: None,
            raised: [false; 4],
            analyzer: Analyzer::default(),
        }
    }

    /// One waveform, with the shaft speed when it was taken.
    pub fn on_waveform(
        &mut self,
        time: Timestamp,
        samples: &[f32],
        sample_rate_hz: f64,
        shaft_rpm: f64,
        out: &mut Vec<Output>,
    ) {
        let shaft_hz = shaft_rpm / 60.0;
        let highest = self.orders.iter().copied().fold(0.0, f64::max) * shaft_hz;
        if !highest.is_finite() || highest > sample_rate_hz / 2.0 {
            // No speed this waveform can show the defects at (a garbage register, or a sample
            // rate too low for it): not learned, not compared, and the steady run is broken.
            self.last_rpm = 0.0;
            return;
        }
        let steady = (shaft_rpm - self.last_rpm).abs() <= STEADY_SPEED * self.last_rpm;
        self.last_rpm = shaft_rpm;
        if shaft_hz <= 0.0 || !steady {
            return; // standing still or changing speed: nothing to compare
        }
        if self.baseline.is_some() && (shaft_rpm - self.baseline_rpm).abs() > SAME_SPEED * self.baseline_rpm {
            return; // another operating point than the baseline's: amplitudes differ anyway
        }
        let Some(spectrum) = self.analyzer.spectrum(samples, sample_rate_hz) else { return };
        let now = spectrum.defect_amplitudes(shaft_hz, self.orders);
        let Some(baseline) = self.baseline else {
            self.learned.push(now);
            self.learned_rpm.push(shaft_rpm);
            if self.learned.len() >= self.baseline_count {
                let n = self.learned.len() as f64;
                self.baseline_rpm = self.learned_rpm.iter().sum::<f64>() / n;
                self.baseline = Some([0, 1, 2, 3].map(|i| self.learned.iter().map(|a| a[i]).sum::<f64>() / n));
            }
            return;
        };
        // A defect with no tone of its own has noise for a baseline, and noise alone may double
        // from one waveform to the next: compare against at least a margin over the noise floor.
        let floor = NOISE_MARGIN * spectrum.median();
        for (i, ((code, part), order)) in DEFECTS.iter().zip(self.orders).enumerate() {
            let reference = baseline[i].max(floor);
            let ratio = now[i] / reference.max(1e-9);
            let up = if self.raised[i] { ratio >= self.growth / 2.0 } else { ratio >= self.growth };
            if up == self.raised[i] {
                continue;
            }
            self.raised[i] = up;
            let hz = order * shaft_hz;
            let message = if up {
                format!(
                    "{} bearing {part} defect ({code} {} Hz) growing: {}x its baseline amplitude",
                    self.name,
                    num(hz),
                    num(ratio)
                )
            } else {
                format!(
                    "{} bearing {part} ({code} {} Hz) back to {}x its baseline amplitude",
                    self.name,
                    num(hz),
                    num(ratio)
                )
            };
            out.push(Output::Event(EdgeEvent {
                time,
                asset: self.asset.clone(),
                kind: "bearing_defect",
                severity: Severity::Warning,
                transition: if up { Transition::Raised } else { Transition::Cleared },
                message,
                body: vec![("frequency_hz", hz), ("amplitude", now[i]), ("baseline", reference), ("defect", i as f64)],
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6205 deep-groove ball bearing.
    const B6205: BearingGeometry =
        BearingGeometry { balls: 9, ball_diameter_mm: 7.94, pitch_diameter_mm: 39.04, contact_angle_deg: 0.0 };

    fn check_orders(b: BearingGeometry, expected: [f64; 4]) {
        for (got, want) in b.orders().iter().zip(expected) {
            assert!((got - want).abs() < 0.005, "{:?} against {expected:?}", b.orders());
        }
    }

    #[test]
    fn defect_orders_of_a_6205() {
        // The 6205's published defect frequencies (multiples of shaft speed).
        check_orders(B6205, [3.585, 5.415, 2.357, 0.398]);
    }

    /// `amplitude × sin(2π f t)` terms plus a little noise, `n` samples at `rate`.
    fn waveform(n: usize, rate: f64, tones: &[(f64, f64)], seed: u64) -> Vec<f32> {
        let mut rng = seed | 1;
        (0..n)
            .map(|i| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let t = i as f64 / rate;
                let noise = ((rng % 1000) as f64 / 1000.0 - 0.5) * 0.05;
                (tones.iter().map(|(f, a)| a * (std::f64::consts::TAU * f * t).sin()).sum::<f64>() + noise) as f32
            })
            .collect()
    }

    #[test]
    fn a_sine_shows_at_its_frequency_with_its_amplitude() {
        let mut analyzer = Analyzer::default();
        let s = analyzer.spectrum(&waveform(4096, 4096.0, &[(100.0, 2.0), (300.0, 0.5)], 1), 4096.0).unwrap();
        assert_eq!(s.resolution_hz, 1.0);
        assert!((s.peak_near(100.0, 1) - 2.0).abs() < 0.05, "{}", s.peak_near(100.0, 1));
        assert!((s.peak_near(300.0, 1) - 0.5).abs() < 0.05);
        assert!(s.peak_near(200.0, 1) < 0.05);
        let energy = s.band_energy(90.0, 110.0);
        assert!(energy > 3.0 && energy < 6.0, "{energy}");
        assert!(analyzer.spectrum(&[0.0; 4], 100.0).is_none());
        // Another length: the window is made anew for it.
        let s = analyzer.spectrum(&waveform(1024, 1024.0, &[(100.0, 2.0)], 2), 1024.0).unwrap();
        assert!((s.peak_near(100.0, 1) - 2.0).abs() < 0.05, "{}", s.peak_near(100.0, 1));
    }

    #[test]
    fn noise_alone_never_raises() {
        // A healthy bearing: the shaft tone and noise, 500 waveforms of 512 samples.
        let rpm = 1480.0;
        let mut watch =
            BearingWatch::new(AssetPath::parse("acme/line3/press1/motor").unwrap(), "press1", B6205, 10, 2.0);
        let mut out = Vec::new();
        for i in 0..500u64 {
            let w = waveform(512, 512.0, &[(rpm / 60.0, 0.3)], i + 1);
            watch.on_waveform(Timestamp::from_millis(i as i64 * 1000), &w, 512.0, rpm, &mut out);
        }
        assert!(out.is_empty(), "{out:#?}");
    }

    /// A press motor at 1480 rpm whose outer race defect grows 15 % a day for 30 days, one
    /// waveform a day, into `watch`.
    fn a_month_of_a_growing_outer_race_defect(watch: &mut BearingWatch, out: &mut Vec<Output>) {
        let rpm = 1480.0;
        let fr = rpm / 60.0;
        let [bpfo, bpfi, ..] = B6205.orders().map(|o| o * fr);
        for day in 0..30u64 {
            let defect = 0.02 * 1.15f64.powi(day as i32);
            let tones = [(fr, 0.5), (bpfo, defect), (bpfi, 0.02), (2.0 * bpfo, defect / 2.0)];
            let w = waveform(8192, 8192.0, &tones, day + 7);
            watch.on_waveform(Timestamp::from_millis(day as i64 * 86_400_000), &w, 8192.0, rpm, out);
        }
    }

    fn press2_watch() -> BearingWatch {
        BearingWatch::new(AssetPath::parse("acme/line3/press2/motor").unwrap(), "press2", B6205, 5, 3.0)
    }

    #[test]
    fn a_growing_outer_race_defect_is_named() {
        let mut watch = press2_watch();
        let mut out = Vec::new();
        a_month_of_a_growing_outer_race_defect(&mut watch, &mut out);
        let events: Vec<&EdgeEvent> =
            out.iter().filter_map(|o| if let Output::Event(e) = o { Some(e) } else { None }).collect();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert!(events[0].message.starts_with("press2 bearing outer race defect (BPFO 88.4"), "{}", events[0].message);
        let day = events[0].time.as_millis() / 86_400_000;
        assert!((10..=16).contains(&day), "raised on day {day}");
    }

    #[test]
    fn a_shaft_speed_or_frequency_outside_the_spectrum_is_no_panic() {
        // A garbage speed register (an f32 of 1.7e38 rpm, say), read steady twice, and a
        // frequency that is not one: nothing is found there, and nothing panics.
        let mut analyzer = Analyzer::default();
        let s = analyzer.spectrum(&waveform(512, 512.0, &[(25.0, 0.3)], 1), 512.0).unwrap();
        for hz in [1e30, f64::INFINITY, f64::NAN, -50.0, f64::MAX, 1e6] {
            assert_eq!(s.peak_near(hz, 1), 0.0, "{hz}");
        }
        assert_eq!(s.band_energy(1e30, f64::INFINITY), 0.0);
        let mut watch =
            BearingWatch::new(AssetPath::parse("acme/line3/press1/motor").unwrap(), "press1", B6205, 2, 2.0);
        let mut out = Vec::new();
        for (i, rpm) in
            [1.7e38, 1.7e38, 1.7e38, f64::NAN, f64::INFINITY, f64::INFINITY, -1480.0, -1480.0].iter().enumerate()
        {
            let w = waveform(512, 512.0, &[(25.0, 0.3)], i as u64 + 1);
            watch.on_waveform(Timestamp::from_millis(i as i64 * 1000), &w, 512.0, *rpm, &mut out);
        }
        assert!(out.is_empty(), "{out:#?}");
    }

    #[test]
    fn a_garbage_shaft_speed_while_learning_does_not_spoil_the_baseline() {
        // Three waveforms at a garbage speed read steady (an f32 register of 1.7e38 rpm), then
        // the machine as in `a_growing_outer_race_defect_is_named`: the defect is still named.
        // (The garbage went into the baseline's speed, and no real speed was ever near it.)
        let mut watch = press2_watch();
        let mut out = Vec::new();
        for i in 0..3u64 {
            let w = waveform(8192, 8192.0, &[(1480.0 / 60.0, 0.5)], 100 + i);
            watch.on_waveform(Timestamp::from_millis(i as i64), &w, 8192.0, 1.7e38, &mut out);
        }
        a_month_of_a_growing_outer_race_defect(&mut watch, &mut out);
        assert_eq!(out.len(), 1, "{out:#?}");
    }
}
