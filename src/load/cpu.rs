//! The generator's own CPU use, from `/proc/self/stat`, so a report shows whether the load
//! generator itself was the bottleneck.

use serde::Serialize;
use std::time::{Duration, Instant};

/// Clock ticks per second of `/proc/*/stat` times: USER_HZ, which Linux fixes at 100 on every
/// architecture it exports to user space.
const USER_HZ: f64 = 100.0;

/// The process's user + system CPU time so far; `None` where `/proc` is unavailable.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_time_from_stat(&stat)
}

/// Fields 14 and 15 (utime, stime) of a stat line. The command name (field 2) may hold spaces
/// and parentheses, so counting starts after its closing parenthesis.
fn cpu_time_from_stat(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((user + system) as f64 / USER_HZ))
}

/// CPU and wall time since it was started.
pub struct CpuMeter {
    wall: Instant,
    cpu: Option<Duration>,
}

/// The generator's CPU use over the run.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub cpu_seconds: f64,
    pub wall_seconds: f64,
    /// Average use in percent of one core (200 = two cores busy).
    pub percent_of_one_core: f64,
    pub cores: usize,
    pub cpu_us_per_request: f64,
}

impl CpuMeter {
    pub fn start() -> CpuMeter {
        CpuMeter {
            wall: Instant::now(),
            cpu: process_cpu_time(),
        }
    }

    pub fn finish(&self, requests: u64) -> Option<CpuUse> {
        let used = process_cpu_time()?.saturating_sub(self.cpu?);
        let wall = self.wall.elapsed().as_secs_f64().max(f64::EPSILON);
        Some(CpuUse {
            cpu_seconds: used.as_secs_f64(),
            wall_seconds: wall,
            percent_of_one_core: used.as_secs_f64() * 100.0 / wall,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_us_per_request: used.as_secs_f64() * 1e6 / requests.max(1) as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_ticks_are_read_after_the_command_name() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 150 50 0 0 20 0 3";
        assert_eq!(cpu_time_from_stat(stat), Some(Duration::from_secs(2)));
        assert_eq!(cpu_time_from_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        assert!(process_cpu_time().is_some());
    }
}
