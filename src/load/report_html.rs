//! The HTML report: one self-contained page (inline CSS and SVG, no script, nothing fetched)
//! with latency-over-time and rate-over-time charts, the tables of the summary, and the JSON
//! report embedded for tools.

use super::format::format_ms;
use super::report::{Report, StageReport};
use super::split::EstimateMs;
use std::fmt::Write;

const CHART_WIDTH: f64 = 900.0;
const CHART_HEIGHT: f64 = 280.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 28.0;
const MARGIN_BOTTOM: f64 = 32.0;
const Y_TICKS: f64 = 5.0;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}\
td:first-child,th:first-child{text-align:left}.pass{color:#176f2c}.fail{color:#b3261e;font-weight:bold}\
.warn{background:#fff4d6;padding:.5em 1em}svg text{font:11px system-ui,sans-serif}code{font-size:13px}";

/// A line on a chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// The whole page.
pub fn page(report: &Report) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>parapet load: {}</title><style>{STYLE}</style></head><body>",
        escape(&report.plan.url)
    );
    heading(&mut html, report);
    html.push_str(&latency_chart(report));
    html.push_str(&rate_chart(report));
    stages_table(&mut html, report);
    thresholds(&mut html, report);
    errors_and_generator(&mut html, report);
    split_tables(&mut html, report);
    let json = serde_json::to_string(report).unwrap_or_default();
    let _ = write!(
        html,
        "<script type=\"application/json\" id=\"report\">{}</script></body></html>",
        json.replace("</", "<\\/")
    );
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn optional_ms(value: Option<f64>) -> String {
    value.map_or("-".to_string(), format_ms)
}

fn heading(html: &mut String, report: &Report) {
    let plan = &report.plan;
    let verdict = match (
        report.interrupted_after_secs,
        report.thresholds.is_empty(),
        report.passed,
    ) {
        (Some(_), _, _) => "<span class=\"fail\">interrupted by Ctrl-C</span>",
        (None, _, false) if report.all_failed => "<span class=\"fail\">every request failed</span>",
        (None, true, _) => "<span>no thresholds</span>",
        (None, false, true) => "<span class=\"pass\">all thresholds hold</span>",
        (None, false, false) => "<span class=\"fail\">a threshold failed</span>",
    };
    let _ = write!(
        html,
        "<h1>parapet load</h1><p><code>{} {}</code> over {}, up to {} connections; {} requests in {}; plan: {}. {verdict}</p>",
        escape(&plan.method),
        escape(&plan.url),
        plan.protocol,
        plan.connections,
        plan.requests,
        super::format::format_duration(plan.duration_secs),
        escape(&plan.source)
    );
}

fn latency_chart(report: &Report) -> String {
    let line = |pick: fn(&super::report::SecondReport) -> Option<f64>| -> Vec<(f64, f64)> {
        report
            .timeline
            .iter()
            .filter_map(|s| Some((s.t as f64 + 0.5, pick(s)?)))
            .collect()
    };
    let mut series = vec![
        Series {
            name: "client p50",
            color: "#1f77b4",
            points: line(|s| s.p50_ms),
        },
        Series {
            name: "client p95",
            color: "#ff7f0e",
            points: line(|s| s.p95_ms),
        },
        Series {
            name: "client p99",
            color: "#d62728",
            points: line(|s| s.p99_ms),
        },
    ];
    if report.split.is_some() {
        series.push(Series {
            name: "parapet upstream p95",
            color: "#2ca02c",
            points: line(|s| s.parapet.as_ref()?.upstream_p95_ms),
        });
        series.push(Series {
            name: "parapet proxy p95",
            color: "#9467bd",
            points: line(|s| s.parapet.as_ref()?.proxy_p95_ms),
        });
    }
    chart(
        "Latency over time (ms, by the second requests were due)",
        &series,
    )
}

fn rate_chart(report: &Report) -> String {
    let line = |pick: fn(&super::report::SecondReport) -> f64| -> Vec<(f64, f64)> {
        report
            .timeline
            .iter()
            .map(|s| (s.t as f64 + 0.5, pick(s)))
            .collect()
    };
    let series = [
        Series {
            name: "asked/s",
            color: "#7f7f7f",
            points: line(|s| s.asked),
        },
        Series {
            name: "sent/s",
            color: "#1f77b4",
            points: line(|s| s.sent as f64),
        },
        Series {
            name: "finished/s",
            color: "#2ca02c",
            points: line(|s| s.finished as f64),
        },
        Series {
            name: "failed/s",
            color: "#d62728",
            points: line(|s| s.failed as f64),
        },
    ];
    chart("Rate over time (requests per second)", &series)
}

/// A round step for about `Y_TICKS` ticks up to `max`: 1, 2 or 5 times a power of ten.
fn tick_step(max: f64) -> f64 {
    let rough = (max / Y_TICKS).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power)
}

fn chart(title: &str, series: &[Series]) -> String {
    let max_x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let max_y = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let y_step = tick_step(max_y.max(1e-3));
    let top_y = (max_y / y_step).ceil().max(1.0) * y_step;
    let plot_w = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x = |v: f64| MARGIN_LEFT + v / max_x * plot_w;
    let y = |v: f64| MARGIN_TOP + plot_h - v / top_y * plot_h;
    let mut svg = format!(
        "<h2>{}</h2><svg viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" width=\"100%\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    let mut tick = 0.0;
    while tick <= top_y + y_step / 2.0 {
        let _ = write!(
            svg,
            "<line x1=\"{MARGIN_LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e5e5e5\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            MARGIN_LEFT + plot_w,
            y(tick),
            y(tick),
            MARGIN_LEFT - 6.0,
            y(tick) + 4.0,
            trim_number(tick)
        );
        tick += y_step;
    }
    let x_step = tick_step(max_x);
    let mut tick = 0.0;
    while tick <= max_x {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}s</text>",
            x(tick),
            CHART_HEIGHT - 10.0,
            trim_number(tick)
        );
        tick += x_step;
    }
    for (index, line) in series.iter().enumerate() {
        let points: Vec<String> = line
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" points=\"{}\"/><rect x=\"{:.1}\" y=\"6\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"15\">{}</text>",
            line.color,
            points.join(" "),
            MARGIN_LEFT + index as f64 * 150.0,
            line.color,
            MARGIN_LEFT + index as f64 * 150.0 + 14.0,
            escape(line.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn trim_number(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn stage_row(html: &mut String, stage: &StageReport) {
    let latency = &stage.latency_ms;
    let _ = write!(
        html,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{} ({:.2}%)</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&stage.name),
        match stage.name.as_str() {
            "total" => String::new(),
            _ => stage.shape(),
        },
        stage.asked,
        stage.sent,
        stage.asked_rps,
        stage.achieved_rps,
        stage.errors,
        stage.error_percent.unwrap_or(0.0),
        optional_ms(latency.p50),
        optional_ms(latency.p95),
        optional_ms(latency.p99),
        optional_ms(latency.max)
    );
}

fn stages_table(html: &mut String, report: &Report) {
    html.push_str("<h2>Stages</h2><table><tr><th>stage</th><th>shape</th><th>asked</th><th>sent</th><th>asked/s</th><th>achieved/s</th><th>errors</th><th>p50</th><th>p95</th><th>p99</th><th>max</th></tr>");
    for stage in &report.stages {
        stage_row(html, stage);
    }
    stage_row(html, &report.total);
    html.push_str("</table><p>Latency counts from when each request was due (coordinated omission corrected).</p>");
}

fn thresholds(html: &mut String, report: &Report) {
    if report.thresholds.is_empty() {
        return;
    }
    html.push_str(
        "<h2>Thresholds</h2><table><tr><th>threshold</th><th>measured</th><th>result</th></tr>",
    );
    for verdict in &report.thresholds {
        let (class, word) = match verdict.passed {
            true => ("pass", "pass"),
            false => ("fail", "FAIL"),
        };
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"{class}\">{word}</td></tr>",
            escape(&verdict.threshold),
            escape(&verdict.measured_text)
        );
    }
    html.push_str("</table>");
}

fn errors_and_generator(html: &mut String, report: &Report) {
    if !report.error_kinds.is_empty() {
        html.push_str("<h2>Errors</h2><table><tr><th>kind</th><th>count</th></tr>");
        for (kind, count) in &report.error_kinds {
            let _ = write!(html, "<tr><td>{}</td><td>{count}</td></tr>", escape(kind));
        }
        html.push_str("</table>");
    }
    let generator = &report.generator;
    let _ = write!(
        html,
        "<h2>Generator</h2><p>{}; {}.</p>",
        escape(&generator.cpu_text()),
        escape(&generator.lag_text())
    );
    for warning in &generator.warnings {
        let _ = write!(html, "<p class=\"warn\">{}</p>", escape(warning));
    }
}

fn estimate_cell(estimates: &[EstimateMs], percentile: f64) -> String {
    escape(&EstimateMs::find_with_bucket(estimates, percentile))
}

fn split_tables(html: &mut String, report: &Report) {
    let Some(split) = &report.split else {
        return;
    };
    let _ = write!(
        html,
        "<h2>Parapet's split</h2><p>{} Bucket bounds: {}.</p>",
        escape(split.method),
        split
            .bucket_bounds_ms
            .iter()
            .map(|b| format_ms(*b))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let client = &report.total.latency_ms;
    for route in &split.routes {
        let _ = write!(
            html,
            "<h3>route <code>{}</code> → {} ({} requests)</h3><table><tr><th></th><th>client</th><th>parapet total</th><th>upstream</th><th>proxy</th></tr>",
            escape(&route.route),
            escape(&route.upstreams.join(", ")),
            route.requests
        );
        for (percentile, client_ms) in [(50.0, client.p50), (95.0, client.p95), (99.0, client.p99)]
        {
            let proxy = route.proxy.iter().find(|p| p.percentile == percentile);
            let _ = write!(
                html,
                "<tr><td>p{percentile}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                optional_ms(client_ms),
                estimate_cell(&route.total, percentile),
                estimate_cell(&route.upstream, percentile),
                optional_ms(proxy.map(|p| p.ms))
            );
        }
        let _ = write!(
            html,
            "<tr><td>mean</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            optional_ms(client.mean),
            optional_ms(route.mean_total_ms),
            optional_ms(route.mean_upstream_ms),
            optional_ms(route.mean_proxy_ms)
        );
    }
    html.push_str("<table><tr><th>server</th><th>requests</th><th>upstream p50</th><th>p95</th><th>p99</th><th>mean</th></tr>");
    for server in &split.servers {
        let _ = write!(
            html,
            "<tr><td>{}/{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&server.upstream),
            escape(&server.server),
            server.requests,
            estimate_cell(&server.upstream_time, 50.0),
            estimate_cell(&server.upstream_time, 95.0),
            estimate_cell(&server.upstream_time, 99.0),
            optional_ms(server.mean_ms)
        );
    }
    html.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(tick_step(0.3), 0.1);
        assert_eq!(tick_step(480.0), 100.0);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
    }
}
