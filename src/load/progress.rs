//! Live progress on stderr: a bar per stage on a terminal (indicatif), else one plain line per
//! second, each with the current rate, the stage's p95 and its errors.

use super::format::{format_duration, format_ms};
use super::plan::Plan;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// What one tick shows.
pub struct TickView {
    pub elapsed: Duration,
    pub stage: usize,
    /// Requests due during the last second.
    pub asked_rate: f64,
    /// Requests that left during the last second.
    pub sent_last_second: u64,
    pub stage_p95_ms: Option<f64>,
    pub stage_finished: u64,
    pub stage_errors: u64,
    pub in_flight: u64,
    /// Upstream and proxy p95 (ms) over the last second, from Parapet's metrics.
    pub split_p95_ms: Option<(f64, f64)>,
}

impl TickView {
    fn stage_text(&self) -> String {
        let p95 = self.stage_p95_ms.map_or("-".to_string(), format_ms);
        let errors = match self.stage_finished {
            0 => "0".to_string(),
            n => format!(
                "{} ({:.2}%)",
                self.stage_errors,
                self.stage_errors as f64 * 100.0 / n as f64
            ),
        };
        let split = self
            .split_p95_ms
            .map_or(String::new(), |(upstream, proxy)| {
                format!(
                    " | parapet p95 upstream {} proxy {}",
                    format_ms(upstream),
                    format_ms(proxy)
                )
            });
        format!(
            "sent {}/s (asked {:.0}) p95 {p95} errors {errors} in flight {}{split}",
            self.sent_last_second, self.asked_rate, self.in_flight
        )
    }
}

pub enum Progress {
    Bars {
        bars: Vec<ProgressBar>,
        starts: Vec<Duration>,
        _multi: MultiProgress,
    },
    Lines {
        stages: usize,
    },
}

const BAR_TEMPLATE: &str = "{prefix:>16} [{bar:24.cyan/blue}] {msg}";

impl Progress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new(plan: &Plan) -> Progress {
        let stages = plan.stages.len();
        if !std::io::stderr().is_terminal() {
            return Progress::Lines { stages };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(BAR_TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bars = plan
            .stages
            .iter()
            .enumerate()
            .map(|(index, stage)| {
                let bar = multi.add(ProgressBar::new(stage.duration.as_millis() as u64));
                bar.set_style(style.clone());
                bar.set_prefix(format!(
                    "stage {}/{stages} ({})",
                    index + 1,
                    format_duration(stage.duration.as_secs_f64())
                ));
                bar.set_message(format!(
                    "to {:.0}/s over {}",
                    stage.rate,
                    format_duration(stage.duration.as_secs_f64())
                ));
                bar
            })
            .collect();
        let starts = (0..stages).map(|i| plan.shape.stage_start(i)).collect();
        Progress::Bars {
            bars,
            starts,
            _multi: multi,
        }
    }

    pub fn tick(&self, view: &TickView) {
        match self {
            Progress::Lines { stages } => eprintln!(
                "t={:>4}s stage {}/{stages} {}",
                view.elapsed.as_secs(),
                view.stage + 1,
                view.stage_text()
            ),
            Progress::Bars { bars, starts, .. } => {
                for bar in bars.iter().take(view.stage) {
                    if !bar.is_finished() {
                        bar.finish();
                    }
                }
                if let (Some(bar), Some(start)) = (bars.get(view.stage), starts.get(view.stage)) {
                    let into = view.elapsed.saturating_sub(*start);
                    bar.set_position(into.as_millis() as u64);
                    bar.set_message(view.stage_text());
                }
            }
        }
    }

    /// Completes every bar (the run is over).
    pub fn finish(&self) {
        if let Progress::Bars { bars, .. } = self {
            for bar in bars {
                bar.finish();
            }
        }
    }
}
