//! The `parapet load` flags, and the partial plan they give (each bad flag named).

use super::plan::{self, PartialPlan, Protocol, ReportFile, Target};
use super::stages::parse_stage_list;
use super::threshold::Threshold;
use std::path::PathBuf;

const EXAMPLES: &str = "\
Examples:
  parapet load --url http://127.0.0.1:8080/api/items --stages 30s:100,1m:100,30s:0 \\
      --threshold 'p95<200ms' --threshold 'errors<0.1%' --admin http://127.0.0.1:9901
  parapet load -p conf/load-plan.toml --report target/load.html

Stages: each DURATION:RATE ramps the rate linearly from the previous stage's rate (0 before the
first) to RATE requests/s over DURATION (ms, s, m, h). The load is an open model: every request
is sent when it is due, whether or not earlier ones have returned, and its latency counts from
when it was due, so a slow server cannot slow the generator down and hide its own slowness.

Thresholds: p50, p95, p99, p99.9… with <, <=, >, >= and a duration (200ms, 1.5s); errors with
a percentage (errors<0.1%: statuses other than 2xx/3xx, and transport errors); rps with requests
per second (rps>450: responses per second over the plan).

Split (--admin): Parapet's request and upstream histograms are scraped before, every second and
after; per route and per upstream server the summary gives p50/p95/p99 of upstream time and of
proxy time (total minus upstream) beside the client's own, each with the histogram bucket it
lies in (Parapet's buckets run from 1 ms to 10 s, so that is the resolution).

Ctrl-C stops sending, waits for the requests in flight and reports what was measured.

Exit status: 0 every threshold holds, 1 one failed (each is printed with its measured value) or
the run was stopped by Ctrl-C, 2 bad input (flags, plan file, target, admin listener).";

/// Staged, open-model load on a URL, judged by thresholds; with --admin, each percentile is
/// split into proxy time and upstream time from Parapet's own metrics.
#[derive(Debug, clap::Args)]
#[command(after_long_help = EXAMPLES, after_help = "See --help for examples, stage and threshold syntax, exit status.")]
#[command(group(clap::ArgGroup::new("protocol").args(["http1", "http2", "http3"])))]
pub struct LoadArgs {
    /// Plan file (TOML) with the same fields as the flags (see conf/load-plan.toml); flags given
    /// too replace its values, --header and --threshold add to them.
    #[arg(short = 'p', long = "plan", value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// The URL to load, e.g. http://127.0.0.1:8080/api/items.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Stages: DURATION:RATE[,DURATION:RATE…], e.g. 30s:100,1m:100,30s:500,1m:500,30s:0.
    #[arg(long, value_name = "D:RATE,...")]
    pub stages: Option<String>,
    /// A pass/fail rule such as p95<200ms, errors<0.1% or rps>450; repeat for more.
    #[arg(long = "threshold", value_name = "EXPR")]
    pub thresholds: Vec<String>,
    /// Parapet's admin listener (e.g. http://127.0.0.1:9901): its /metrics are scraped before,
    /// every second and after, to split latency into proxy and upstream time.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// Write a report: FILE.json (everything measured) or FILE.html (with charts; self-contained).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// A request header as NAME:VALUE; repeat for more.
    #[arg(short = 'H', long = "header", value_name = "K:V")]
    pub headers: Vec<String>,
    /// The request method [default: GET].
    #[arg(short = 'm', long, value_name = "M")]
    pub method: Option<String>,
    /// Send this file's content as every request's body.
    #[arg(long, value_name = "F")]
    pub body_file: Option<PathBuf>,
    /// Speak HTTP/1.1 (the default).
    #[arg(long)]
    pub http1: bool,
    /// Speak HTTP/2: by ALPN over https, prior knowledge (h2c) over http.
    #[arg(long)]
    pub http2: bool,
    /// Speak HTTP/3 over QUIC (https URLs).
    #[arg(long)]
    pub http3: bool,
    /// Most connections open at once [default: 256 for HTTP/1.1, 4 for HTTP/2 and HTTP/3].
    #[arg(short = 'c', long, value_name = "N")]
    pub connections: Option<usize>,
    /// Longest a request may take, from when it is due to its last byte [default: 10s].
    #[arg(long, value_name = "D")]
    pub timeout: Option<String>,
    /// Also trust this CA certificate (PEM) for https URLs, e.g. certs/ca.crt from `parapet certs dev`.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,
}

impl LoadArgs {
    /// The plan the flags give (without the plan file), or every bad flag.
    pub fn partial_plan(&self) -> Result<PartialPlan, Vec<String>> {
        let mut problems = Vec::new();
        let plan = PartialPlan {
            url: flag(&mut problems, "url", self.url.as_deref(), Target::parse),
            admin: flag(&mut problems, "admin", self.admin.as_deref(), Target::parse),
            stages: flag(
                &mut problems,
                "stages",
                self.stages.as_deref(),
                parse_stage_list,
            ),
            thresholds: (self.thresholds.iter())
                .filter_map(|t| {
                    flag(
                        &mut problems,
                        "threshold",
                        Some(t.as_str()),
                        Threshold::parse,
                    )
                })
                .collect(),
            report: flag(
                &mut problems,
                "report",
                self.report.as_deref(),
                ReportFile::parse,
            ),
            headers: (self.headers.iter())
                .filter_map(|h| {
                    flag(
                        &mut problems,
                        "header",
                        Some(h.as_str()),
                        plan::parse_header,
                    )
                })
                .collect(),
            method: flag(
                &mut problems,
                "method",
                self.method.as_deref(),
                plan::parse_method,
            ),
            body: flag(
                &mut problems,
                "body-file",
                self.body_file.as_deref(),
                plan::read_body,
            ),
            protocol: self.protocol(),
            connections: flag(
                &mut problems,
                "connections",
                self.connections,
                plan::parse_connections,
            ),
            timeout: flag(
                &mut problems,
                "timeout",
                self.timeout.as_deref(),
                plan::parse_timeout,
            ),
            cacert: self.cacert.clone(),
        };
        match problems.is_empty() {
            true => Ok(plan),
            false => Err(problems),
        }
    }

    fn protocol(&self) -> Option<Protocol> {
        match (self.http1, self.http2, self.http3) {
            (_, true, _) => Some(Protocol::Http2),
            (_, _, true) => Some(Protocol::Http3),
            (true, _, _) => Some(Protocol::Http1),
            _ => None,
        }
    }
}

/// The parsed value of flag `--name`, or `None` (with the problem noted) when it does not parse.
fn flag<V, T>(
    problems: &mut Vec<String>,
    name: &str,
    value: Option<V>,
    parse: impl FnOnce(V) -> Result<T, String>,
) -> Option<T> {
    match parse(value?) {
        Ok(parsed) => Some(parsed),
        Err(message) => {
            problems.push(format!("--{name}: {message}"));
            None
        }
    }
}
