//! Trend charts drawn on the server as SVG, from the historian's min/max/avg buckets: the band
//! between each bucket's minimum and maximum, and its average as a line. A few hundred buckets
//! whatever the range, so a 7-day trend of a 1 Hz tag is as light as a 15-minute one. Pure.

use std::fmt::Write as _;

use airlock_model::Timestamp;
use airlock_store::Bucket;

pub const WIDTH: f64 = 960.0;
pub const HEIGHT: f64 = 320.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Text fit for XML and HTML: `<`, `>`, `&` and quotes escaped, control characters dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The SVG of `buckets` over `[from_ms, to_ms)`, values in `unit`.
pub fn svg(buckets: &[Bucket], from_ms: i64, to_ms: i64, every_ms: i64, unit: &str) -> String {
    let span = (to_ms - from_ms).max(1) as f64;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |t: i64| LEFT + (t - from_ms) as f64 / span * plot_w;
    let values = buckets.iter().flat_map(|b| [b.min, b.max]).flatten().filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"11\"><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
    );
    if !lo.is_finite() {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#666\">no good values in this range</text></svg>",
            WIDTH / 2.0,
            HEIGHT / 2.0
        );
        return out;
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1.0) * 0.05 };
    let (lo, hi) = (lo - pad, hi + pad);
    let y = |v: f64| TOP + (hi - v) / (hi - lo) * plot_h;
    // Grid and labels: five values, six times.
    for i in 0..=4 {
        let v = lo + (hi - lo) * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            y(v) + 4.0,
            short(v),
            y = y(v)
        );
    }
    for i in 0..=5 {
        let t = from_ms + ((to_ms - from_ms) as f64 * f64::from(i) / 5.0) as i64;
        let label = Timestamp::from_millis(t).to_string();
        // `2026-11-29T10:15:00.000Z`: the day and the time to the minute.
        let label = label.get(5..16).unwrap_or(&label).replace('T', " ");
        let anchor = match i {
            0 => "start",
            5 => "end",
            _ => "middle",
        };
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\" fill=\"#555\">{label}</text>",
            x(t),
            HEIGHT - 8.0
        );
    }
    let _ = write!(out, "<text x=\"{LEFT}\" y=\"{}\" fill=\"#555\">{}</text>", TOP - 2.0 + 10.0, escape(unit));
    // The band (min to max) and the average, over the intervals that hold good values (an
    // interval's figures count good samples only). The line joins them as it joins any two
    // samples, and breaks where the next good value comes more than three times later than
    // they usually follow each other: an outage, or values that were bad, is not drawn over.
    let half = (every_ms as f64 / span * plot_w / 2.0).max(0.0);
    let read: Vec<Bucket> =
        buckets.iter().filter(|b| b.min.is_some() && b.max.is_some() && b.avg.is_some()).copied().collect();
    let mut gaps: Vec<i64> = read.windows(2).map(|w| w[1].start_ms - w[0].start_ms).collect();
    gaps.sort_unstable();
    let usual = gaps.get(gaps.len() / 2).copied().unwrap_or(every_ms).max(every_ms);
    let mut runs: Vec<&[Bucket]> = Vec::new();
    let mut start = 0;
    for i in 1..=read.len() {
        if i == read.len() || read[i].start_ms - read[i - 1].start_ms > usual.saturating_mul(3) {
            runs.push(&read[start..i]);
            start = i;
        }
    }
    for run in runs.into_iter().filter(|r| !r.is_empty()) {
        let mid = |b: &Bucket| x(b.start_ms) + half;
        let mut band = String::new();
        for b in run {
            let _ = write!(band, "{:.1},{:.1} ", mid(b), y(b.max.unwrap_or(hi)));
        }
        for b in run.iter().rev() {
            let _ = write!(band, "{:.1},{:.1} ", mid(b), y(b.min.unwrap_or(lo)));
        }
        let _ = write!(out, "<polygon points=\"{}\" fill=\"#9cc3e6\" stroke=\"#9cc3e6\"/>", band.trim_end());
        let mut line = String::new();
        for b in run {
            let _ = write!(line, "{:.1},{:.1} ", mid(b), y(b.avg.unwrap_or(lo)));
        }
        let _ = write!(
            out,
            "<polyline class=\"avg\" points=\"{}\" fill=\"none\" stroke=\"#1f5fa8\" stroke-width=\"1.5\"/>",
            line.trim_end()
        );
    }
    out.push_str("</svg>");
    out
}

/// A value in at most about six significant characters.
fn short(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-3) {
        format!("{v:.2e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(start_ms: i64, v: Option<f64>) -> Bucket {
        Bucket { start_ms, count: 1, min: v, max: v.map(|v| v + 1.0), avg: v, ..Bucket::default() }
    }

    #[test]
    fn a_long_gap_breaks_the_line_a_usual_one_does_not_and_text_is_escaped() {
        // A good value every 3 intervals (a slow tag), then none for 10 intervals: two lines.
        let b: Vec<Bucket> =
            (0..30).map(|i| bucket(i * 10, (i % 3 == 0 && !(12..22).contains(&i)).then_some(1.0 + i as f64))).collect();
        let svg = svg(&b, 0, 300, 10, "<script>");
        assert_eq!(svg.matches("class=\"avg\"").count(), 2, "{svg}");
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn no_values_says_so() {
        assert!(svg(&[bucket(0, None)], 0, 10, 10, "").contains("no good values"));
        assert_eq!(escape("a\u{1b}[2J\"'&"), "a[2J&quot;&#39;&amp;");
    }
}
