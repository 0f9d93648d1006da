//! `parapet load`: staged, open-model load on a URL, judged by thresholds, with each percentile
//! split into proxy time and upstream time from Parapet's own metrics.
//!
//! A run: flags and plan file → a checked [`plan::Plan`] (bad input exits 2) → `run` sends each
//! request when the stages say it is due, measures latency from that moment, ticks progress and
//! scrapes `/metrics` every second → `report` gathers it all → `output`: the summary on stdout,
//! the JSON or HTML report on disk; and the exit status from the thresholds (0 all hold, 1 one
//! failed, or every request failed).
//!
//! Files: `cli` (flags), `plan_file` (TOML), `plan` (fields, merge, checks), `stages` (the rate
//! curve), `threshold`, `dispatch` (the scheduler), `client/` (HTTP/1.1, h2, h3), `record` (HDR
//! histograms, counts), `cpu`, `scrape` + `split` (Parapet's histograms), `progress`, `report` (the
//! data), `output` (where it goes: `summary`, `report_html`), `format`.

mod cli;
mod client;
mod cpu;
mod dispatch;
mod format;
mod output;
mod plan;
mod plan_file;
mod progress;
mod record;
mod report;
mod report_html;
mod run;
mod scrape;
mod split;
mod stages;
mod summary;
mod threshold;

pub use cli::LoadArgs;

use std::process::ExitCode;

/// Every threshold held (or there were none).
pub const EXIT_PASSED: u8 = 0;
/// A threshold failed.
pub const EXIT_THRESHOLD_FAILED: u8 = 1;
/// The flags, the plan file or the target were unusable; nothing (or not all) was run.
pub const EXIT_BAD_INPUT: u8 = 2;

/// Runs `parapet load` with these flags; the exit status says whether the thresholds held.
pub fn run(args: LoadArgs) -> ExitCode {
    let plan = match plan_from(&args) {
        Ok(plan) => plan,
        Err(problems) => return bad_input(&problems),
    };
    if let Some(Err(message)) = plan.report.as_ref().map(output::prepare) {
        return bad_input(&[message]);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return bad_input(&[format!("cannot start the runtime: {e}")]),
    };
    let result = match runtime.block_on(run::execute(&plan)) {
        Ok(result) => result,
        Err(message) => return bad_input(&[message]),
    };
    let report = report::Report::new(&plan, result);
    if let Err(message) = output::publish(&report, plan.report.as_ref()) {
        return bad_input(&[message]);
    }
    if report.all_failed {
        eprintln!(
            "parapet load: every one of the {} requests failed ({}): exit {EXIT_THRESHOLD_FAILED}",
            report.total.finished,
            error_summary(&report.error_kinds)
        );
    }
    match report.passed {
        true => ExitCode::from(EXIT_PASSED),
        false => ExitCode::from(EXIT_THRESHOLD_FAILED),
    }
}

/// The commonest error kinds, e.g. `connect: refused ×1000, status 502 ×3`.
fn error_summary(kinds: &std::collections::BTreeMap<String, u64>) -> String {
    let mut kinds: Vec<(&String, &u64)> = kinds.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1));
    kinds
        .iter()
        .take(3)
        .map(|(kind, n)| format!("{kind} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn bad_input(problems: &[String]) -> ExitCode {
    for problem in problems {
        eprintln!("parapet load: {problem}");
    }
    ExitCode::from(EXIT_BAD_INPUT)
}

/// The plan file (if any) with the flags on top, checked whole: every problem of both at once.
fn plan_from(args: &LoadArgs) -> Result<plan::Plan, Vec<String>> {
    let file = args.plan.as_deref().map(plan_file::load);
    let flags = args.partial_plan();
    let mut problems = Vec::new();
    let from_file = match file {
        Some(Ok(plan)) => Some(plan),
        Some(Err(error)) => {
            problems.extend(error.to_string().lines().map(str::to_string));
            None
        }
        None => None,
    };
    let flags = flags.map_err(|flag_problems| problems.extend(flag_problems));
    let (Ok(flags), true) = (flags, problems.is_empty()) else {
        return Err(problems);
    };
    let source = args
        .plan
        .as_ref()
        .map_or("command line".to_string(), |p| p.display().to_string());
    from_file
        .unwrap_or_default()
        .overridden_by(flags)
        .complete(source)
}
