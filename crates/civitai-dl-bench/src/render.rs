//! The table on stderr and the SVG chart of the speed-ups.
//!
//! The chart is one bar per scenario with its target line: [`render_svg`] draws it in under fifty
//! lines of plain SVG text, which is less code to read than `plotters` with its SVG backend would
//! take to set up, and adds no dependency to the bench. A chart with axes, scales or several series
//! is where `plotters` would earn its place.

use super::*;

pub(crate) fn rss_label(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.0}M", b as f64 / MIB as f64))
        .unwrap_or_else(|| "n/a".into())
}

/// The results as a text table.
pub fn render_table(results: &[ScenarioResult]) -> String {
    let mut out = format!(
        "{:<19} {:>15} {:>15} {:>11} {:>9} {:>11} {:>22} {:>6}  {}\n",
        "scenario",
        "time seq/exp s",
        "MB/s seq/exp",
        "requests",
        "retries",
        "peak RSS",
        "speed-up (min-max)",
        "target",
        "verdict"
    );
    for r in results {
        let target = match (r.target_ratio, r.request_cap) {
            (Some(t), _) => format!(">={t}x"),
            (None, Some(cap)) => format!("<={cap}/s"),
            (None, None) => "-".into(),
        };
        let mut verdict = r.verdict.label().to_string();
        if let (Some(seen), Some(_)) = (r.max_requests_per_sec, r.request_cap) {
            let _ = write!(verdict, " (max {seen} req/s)");
        }
        let _ = writeln!(
            out,
            "{:<19} {:>15} {:>15} {:>11} {:>9} {:>11} {:>22} {:>6}  {}",
            r.name,
            format!(
                "{:.2}/{:.2}",
                r.sequential.median_wall_secs, r.experimental.median_wall_secs
            ),
            format!(
                "{:.1}/{:.1}",
                r.sequential.mb_per_sec, r.experimental.mb_per_sec
            ),
            format!("{}/{}", r.sequential.requests, r.experimental.requests),
            format!("{}/{}", r.sequential.retries, r.experimental.retries),
            format!(
                "{}/{}",
                rss_label(r.sequential.peak_rss_bytes),
                rss_label(r.experimental.peak_rss_bytes)
            ),
            format!(
                "{:.2}x ({:.2}-{:.2})",
                r.speedup_ratio, r.speedup_ratio_min, r.speedup_ratio_max
            ),
            target,
            verdict
        );
        for failure in &r.failures {
            let _ = writeln!(out, "    {failure}");
        }
    }
    out
}

/// Layout of the chart, in SVG user units.
pub(crate) const SVG_SLOT: f64 = 120.0;
pub(crate) const SVG_LEFT: f64 = 60.0;
pub(crate) const SVG_TOP: f64 = 40.0;
pub(crate) const SVG_PLOT_HEIGHT: f64 = 260.0;
pub(crate) const SVG_BOTTOM: f64 = 110.0;

/// A bar chart of the speed-up per scenario, with min–max whiskers, the target as a tick and a
/// dashed line at 1.0 (no speed-up).
pub fn render_svg(results: &[ScenarioResult]) -> String {
    let width = SVG_LEFT + SVG_SLOT * results.len().max(1) as f64 + 20.0;
    let height = SVG_TOP + SVG_PLOT_HEIGHT + SVG_BOTTOM;
    let top_value = results
        .iter()
        .flat_map(|r| [r.speedup_ratio_max, r.target_ratio.unwrap_or(0.0)])
        .fold(1.5_f64, f64::max)
        * 1.1;
    let y = |value: f64| SVG_TOP + SVG_PLOT_HEIGHT * (1.0 - value / top_value);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{:.0}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">civitai-dl bench: \
         speed-up, experimental vs sequential (median, min-max)</text>\n",
        width / 2.0
    );
    let axis_bottom = y(0.0);
    let _ = writeln!(
        svg,
        "<line x1=\"{SVG_LEFT}\" y1=\"{SVG_TOP}\" x2=\"{SVG_LEFT}\" y2=\"{axis_bottom:.1}\" \
         stroke=\"black\"/>"
    );
    for tick in axis_ticks(top_value) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{tick}x</text>",
            SVG_LEFT - 6.0,
            y(tick) + 4.0
        );
    }
    for (index, r) in results.iter().enumerate() {
        svg.push_str(&bar(index, r, &y, axis_bottom));
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{SVG_LEFT}\" y1=\"{one:.1}\" x2=\"{:.0}\" y2=\"{one:.1}\" stroke=\"#c0392b\" \
         stroke-dasharray=\"6 4\"/>\n<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\" \
         fill=\"#c0392b\">1.0 = no speed-up</text>",
        width - 10.0,
        width - 12.0,
        y(1.0) - 4.0,
        one = y(1.0)
    );
    svg.push_str("</svg>\n");
    svg
}

pub(crate) fn axis_ticks(top: f64) -> Vec<f64> {
    let step = if top > 8.0 { 2.0 } else { 1.0 };
    (0..)
        .map(|i| f64::from(i) * step)
        .take_while(|t| *t <= top)
        .collect()
}

pub(crate) fn bar(
    index: usize,
    r: &ScenarioResult,
    y: &dyn Fn(f64) -> f64,
    axis_bottom: f64,
) -> String {
    let center = SVG_LEFT + SVG_SLOT * (index as f64 + 0.5);
    let half = SVG_SLOT * 0.3;
    let fill = match r.verdict {
        Verdict::Pass => "#2e86c1",
        Verdict::Fail => "#e67e22",
    };
    let top = y(r.speedup_ratio);
    let mut out = format!(
        "<g class=\"scenario\"><rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" \
         fill=\"{fill}\"><title>{}: {:.2}x</title></rect>\n",
        center - half,
        half * 2.0,
        (axis_bottom - top).max(0.0),
        r.name,
        r.speedup_ratio
    );
    let (low, high) = (y(r.speedup_ratio_min), y(r.speedup_ratio_max));
    let _ = writeln!(
        out,
        "<line x1=\"{center:.1}\" y1=\"{low:.1}\" x2=\"{center:.1}\" y2=\"{high:.1}\" \
         stroke=\"black\"/><line x1=\"{:.1}\" y1=\"{low:.1}\" x2=\"{:.1}\" y2=\"{low:.1}\" \
         stroke=\"black\"/><line x1=\"{:.1}\" y1=\"{high:.1}\" x2=\"{:.1}\" y2=\"{high:.1}\" \
         stroke=\"black\"/>",
        center - 8.0,
        center + 8.0,
        center - 8.0,
        center + 8.0
    );
    if let Some(target) = r.target_ratio {
        let _ = writeln!(
            out,
            "<line x1=\"{:.1}\" y1=\"{t:.1}\" x2=\"{:.1}\" y2=\"{t:.1}\" stroke=\"#27ae60\" \
             stroke-width=\"3\"><title>target {target}x</title></line>",
            center - half - 4.0,
            center + half + 4.0,
            t = y(target)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{center:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.2}x</text>\n\
         <text x=\"{center:.1}\" y=\"{:.1}\" text-anchor=\"end\" \
         transform=\"rotate(-30 {center:.1} {:.1})\">{} ({})</text></g>",
        high.min(top) - 6.0,
        r.speedup_ratio,
        axis_bottom + 16.0,
        axis_bottom + 16.0,
        r.name,
        r.verdict.label()
    );
    out
}
