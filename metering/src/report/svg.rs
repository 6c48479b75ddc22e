//! Inline SVG charts for the HTML reports: daily bars and daily lines over a
//! month. Coordinates are floats because they are pixels; every figure a reader
//! sees (titles, axis labels, tables) is written from the exact decimals.

use std::fmt::Write;

use time::Date;

const W: f64 = 720.0;
const H: f64 = 180.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// Escapes text for HTML and SVG.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `v` (1 for 0).
pub(crate) fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let base = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * base).find(|c| *c >= v * (1.0 - 1e-12)).unwrap_or(10.0 * base)
}

/// `1234567` as `1.23M`, for axis labels only.
fn compact(v: f64) -> String {
    let (d, suffix) = match v.abs() {
        a if a >= 1e12 => (1e12, "T"),
        a if a >= 1e9 => (1e9, "G"),
        a if a >= 1e6 => (1e6, "M"),
        a if a >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    };
    let s = format!("{:.2}", v / d);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{suffix}")
}

struct Frame {
    days: usize,
    lo: f64,
    hi: f64,
}

impl Frame {
    fn slot(&self) -> f64 {
        (W - LEFT - RIGHT) / self.days.max(1) as f64
    }
    fn x(&self, i: usize) -> f64 {
        LEFT + self.slot() * (i as f64 + 0.5)
    }
    fn y(&self, v: f64) -> f64 {
        let span = (self.hi - self.lo).max(f64::MIN_POSITIVE);
        TOP + (H - TOP - BOTTOM) * (1.0 - ((v - self.lo) / span).clamp(0.0, 1.0))
    }

    /// The frame, grid lines with labels at `ticks`, and day numbers below.
    fn axes(&self, out: &mut String, days: &[Date], ticks: &[(f64, String)], label: &str) {
        let _ = write!(
            out,
            r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
            esc(label)
        );
        for (v, text) in ticks {
            let y = self.y(*v);
            let _ = write!(
                out,
                r#"<line class="grid" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                esc(text)
            );
        }
        for (i, d) in days.iter().enumerate() {
            if d.day() == 1 || d.day() % 5 == 0 {
                let _ = write!(
                    out,
                    r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    self.x(i),
                    H - 8.0,
                    d.day()
                );
            }
        }
    }
}

/// Daily bars: one `rect.bar` per day (zero-height on a day without usage), each
/// with a title holding the exact value.
pub(crate) fn bars(label: &str, days: &[(Date, f64, String)]) -> String {
    let max = days.iter().map(|d| d.1).fold(0.0, f64::max);
    let frame = Frame { days: days.len(), lo: 0.0, hi: nice_ceiling(max) };
    let mut out = String::new();
    let ticks: Vec<(f64, String)> = [0.0, 0.5, 1.0].iter().map(|f| (frame.hi * f, compact(frame.hi * f))).collect();
    frame.axes(&mut out, &days.iter().map(|d| d.0).collect::<Vec<_>>(), &ticks, label);
    let width = frame.slot() * 0.72;
    for (i, (day, v, text)) in days.iter().enumerate() {
        let y = frame.y(*v);
        let _ = write!(
            out,
            r#"<rect class="bar" x="{:.1}" y="{y:.1}" width="{width:.1}" height="{:.1}"><title>{}: {}</title></rect>"#,
            frame.x(i) - width / 2.0,
            frame.y(0.0) - y,
            crate::pricing::ymd(*day),
            esc(text)
        );
    }
    out.push_str("</svg>");
    out
}

/// One line of a [`lines`] chart: a value per day or none.
pub(crate) struct Series<'a> {
    /// Shown in the legend; also the CSS class `s-<name>`.
    pub name: &'a str,
    /// Per day: (value to draw, exact text).
    pub values: Vec<Option<(f64, String)>>,
}

/// Daily lines: per series a `polyline.series` per run of consecutive days with a
/// value, a dot with the exact value per day, and an optional dashed `line.target`.
pub(crate) fn lines(
    label: &str,
    days: &[Date],
    series: &[Series<'_>],
    range: (f64, f64),
    target: Option<(f64, String)>,
    ticks: &[(f64, String)],
) -> String {
    let frame = Frame { days: days.len(), lo: range.0, hi: range.1 };
    let mut out = String::new();
    frame.axes(&mut out, days, ticks, label);
    if let Some((v, text)) = &target {
        let y = frame.y(*v);
        let _ = write!(
            out,
            r#"<line class="target" x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}"><title>{}</title></line>"#,
            W - RIGHT,
            esc(text)
        );
    }
    for s in series {
        // One polyline per run of consecutive days with a value: a day without
        // requests breaks the line rather than being bridged as if it were measured.
        let mut run: Vec<String> = Vec::new();
        for (i, v) in s.values.iter().enumerate().chain(std::iter::once((days.len(), &None))) {
            match v {
                Some((v, _)) => run.push(format!("{:.1},{:.1}", frame.x(i), frame.y(*v))),
                None if !run.is_empty() => {
                    let _ = write!(out, r#"<polyline class="series s-{}" points="{}"/>"#, esc(s.name), run.join(" "));
                    run.clear();
                }
                None => {}
            }
        }
        for (i, v) in s.values.iter().enumerate() {
            if let Some((v, text)) = v {
                let _ = write!(
                    out,
                    r#"<circle class="dot s-{}" cx="{:.1}" cy="{:.1}" r="2.5"><title>{} {}: {}</title></circle>"#,
                    esc(s.name),
                    frame.x(i),
                    frame.y(*v),
                    crate::pricing::ymd(days[i]),
                    esc(s.name),
                    esc(text)
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// A nice upper bound for values up to `max`, and ticks at 0, half and it.
pub(crate) fn zero_based(max: f64, fmt: impl Fn(f64) -> String) -> ((f64, f64), Vec<(f64, String)>) {
    let hi = nice_ceiling(max);
    ((0.0, hi), [0.0, 0.5, 1.0].iter().map(|f| (hi * f, fmt(hi * f))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_bounds_and_labels() {
        assert_eq!(
            [nice_ceiling(0.0), nice_ceiling(7.0), nice_ceiling(10.0), nice_ceiling(1234.0), nice_ceiling(0.03)],
            [1.0, 10.0, 10.0, 2000.0, 0.05]
        );
        assert_eq!(
            [compact(1_234_567.0), compact(500.0), compact(2_500.0), compact(0.0)],
            ["1.23M", "500", "2.5k", "0"]
        );
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
