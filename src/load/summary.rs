//! The summary printed at the end of a run: stages table, errors, thresholds, the generator's
//! own cost, and Parapet's split of the time.

use super::format::{format_duration, format_ms};
use super::report::{LatencyReport, Report};
use super::split::{EstimateMs, RouteSplit, SplitReport};
use std::fmt::Write;

/// The whole summary, ready to print.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    stages_table(&mut out, report);
    errors(&mut out, report);
    thresholds(&mut out, report);
    generator(&mut out, report);
    if let Some(split) = &report.split {
        split_section(&mut out, split, &report.total.latency_ms);
    }
    out
}

fn header(out: &mut String, report: &Report) {
    let plan = &report.plan;
    let _ = writeln!(
        out,
        "\nparapet load: {} {} over {}, up to {} connections; {} requests in {} ({})\n",
        plan.method,
        plan.url,
        plan.protocol,
        plan.connections,
        plan.requests,
        format_duration(plan.duration_secs),
        plan.source
    );
}

fn optional_ms(value: Option<f64>) -> String {
    value.map_or("-".to_string(), format_ms)
}

fn stages_table(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "{:<6} {:<18} {:>7} {:>7} {:>10} {:>16} {:>9} {:>9} {:>9} {:>9}",
        "stage", "shape", "asked", "sent", "achieved", "errors", "p50", "p95", "p99", "max"
    );
    for stage in report.stages.iter().chain([&report.total]) {
        let shape = match stage.name.as_str() {
            "total" => String::new(),
            _ => stage.shape(),
        };
        let latency = &stage.latency_ms;
        let _ = writeln!(
            out,
            "{:<6} {:<18} {:>7} {:>7} {:>8.1}/s {:>16} {:>9} {:>9} {:>9} {:>9}",
            stage.name,
            shape,
            stage.asked,
            stage.sent,
            stage.achieved_rps,
            format!(
                "{} ({:.2}%)",
                stage.errors,
                stage.error_percent.unwrap_or(0.0)
            ),
            optional_ms(latency.p50),
            optional_ms(latency.p95),
            optional_ms(latency.p99),
            optional_ms(latency.max),
        );
    }
    let _ = writeln!(
        out,
        "latency counts from when each request was due (coordinated omission corrected)"
    );
}

fn errors(out: &mut String, report: &Report) {
    if report.error_kinds.is_empty() {
        return;
    }
    let kinds: Vec<String> = report
        .error_kinds
        .iter()
        .map(|(kind, count)| format!("{kind} ×{count}"))
        .collect();
    let _ = writeln!(out, "\nerrors: {}", kinds.join(", "));
}

fn thresholds(out: &mut String, report: &Report) {
    if let Some(secs) = report.interrupted_after_secs {
        let _ = writeln!(
            out,
            "\nINTERRUPTED by Ctrl-C after {secs:.1}s: the figures cover what was sent until then, and the run does not pass"
        );
    }
    if report.thresholds.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nthresholds:");
    for verdict in &report.thresholds {
        let _ = writeln!(
            out,
            "  {}  {:<16} measured {}",
            if verdict.passed { "PASS" } else { "FAIL" },
            verdict.threshold,
            verdict.measured_text
        );
    }
}

fn generator(out: &mut String, report: &Report) {
    let generator = &report.generator;
    let _ = writeln!(
        out,
        "\ngenerator: {}\n  {}",
        generator.cpu_text(),
        generator.lag_text()
    );
    for warning in &generator.warnings {
        let _ = writeln!(out, "WARNING: {warning}");
    }
}

fn split_section(out: &mut String, split: &SplitReport, client: &LatencyReport) {
    let bounds: Vec<String> = split
        .bucket_bounds_ms
        .iter()
        .map(|b| format_ms(*b))
        .collect();
    let _ = writeln!(
        out,
        "\nParapet's split (from /metrics histogram deltas; bucket bounds {}; each estimate is interpolated inside the [bucket] shown; ≤ marks one clamped to the client's own percentile)",
        bounds.join(" ")
    );
    if split.routes.is_empty() {
        let _ = writeln!(out, "  Parapet recorded no request during the run");
    }
    for route in &split.routes {
        route_table(out, route, client);
    }
    for server in &split.servers {
        let _ = writeln!(
            out,
            "  server {}/{}: {} requests; upstream p50 {}, p95 {}, p99 {}; mean {}",
            server.upstream,
            server.server,
            server.requests,
            EstimateMs::find_with_bucket(&server.upstream_time, 50.0),
            EstimateMs::find_with_bucket(&server.upstream_time, 95.0),
            EstimateMs::find_with_bucket(&server.upstream_time, 99.0),
            optional_ms(server.mean_ms)
        );
    }
}

fn route_table(out: &mut String, route: &RouteSplit, client: &LatencyReport) {
    let _ = writeln!(
        out,
        "  route {:?} → {}: {} requests",
        route.route,
        route.upstreams.join(", "),
        route.requests
    );
    let _ = writeln!(
        out,
        "    {:<5} {:>10} {:>24} {:>24} {:>12}",
        "", "client", "parapet total", "upstream", "proxy"
    );
    for (percentile, client_ms) in [(50.0, client.p50), (95.0, client.p95), (99.0, client.p99)] {
        let proxy = route
            .proxy
            .iter()
            .find(|p| p.percentile == percentile)
            .map(|p| format_ms(p.ms));
        let _ = writeln!(
            out,
            "    p{:<4} {:>10} {:>24} {:>24} {:>12}",
            percentile,
            optional_ms(client_ms),
            EstimateMs::find_with_bucket(&route.total, percentile),
            EstimateMs::find_with_bucket(&route.upstream, percentile),
            proxy.unwrap_or_else(|| "-".to_string())
        );
    }
    let _ = writeln!(
        out,
        "    {:<5} {:>10} {:>24} {:>24} {:>12}",
        "mean",
        optional_ms(client.mean),
        optional_ms(route.mean_total_ms),
        optional_ms(route.mean_upstream_ms),
        optional_ms(route.mean_proxy_ms)
    );
}
