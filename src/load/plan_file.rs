//! The plan file (`parapet load -p plan.toml`): the same fields as the flags, in TOML. Unknown
//! keys and bad values are reported like the rest of Parapet's config, as `FILE:LINE:key: message`,
//! every problem in one run. Relative paths in it are relative to the working directory, as in
//! `parapet.toml`.

use super::plan::{self, PartialPlan, Protocol, ReportFile, Target};
use super::stages::Stage;
use super::threshold::Threshold;
use crate::config::locate::{deserialize_noting_unknown, KeyPath, SourceMap};
use crate::config::{ConfigError, Problem};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Deserialize)]
struct RawPlan {
    url: Option<String>,
    method: Option<String>,
    protocol: Option<String>,
    connections: Option<usize>,
    timeout: Option<String>,
    admin: Option<String>,
    report: Option<String>,
    body_file: Option<String>,
    cacert: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    thresholds: Vec<String>,
    #[serde(default)]
    stage: Vec<RawStage>,
}

#[derive(Debug, Deserialize)]
struct RawStage {
    duration: String,
    rate: f64,
}

/// Reads and checks a plan file.
pub fn load(path: &Path) -> Result<PartialPlan, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        problems: vec![Problem {
            line: 0,
            key: String::new(),
            message: format!("cannot read the plan file: {e}"),
        }],
    })?;
    parse(&text).map_err(|problems| ConfigError {
        file: path.display().to_string(),
        problems,
    })
}

/// Checks plan text; every problem found, sorted by line.
pub fn parse(text: &str) -> Result<PartialPlan, Vec<Problem>> {
    let map = SourceMap::new(text);
    let (raw, unknown): (RawPlan, _) =
        deserialize_noting_unknown(text, &map).map_err(|problem| vec![problem])?;
    let mut checker = Checker {
        map,
        problems: Vec::new(),
    };
    for path in unknown {
        checker.problem(&path, "unknown key (conf/load-plan.toml lists every key)");
    }
    let plan = checker.build(raw);
    if checker.problems.is_empty() {
        return Ok(plan);
    }
    checker.problems.sort_by_key(|p| p.line);
    Err(checker.problems)
}

struct Checker {
    map: SourceMap,
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, path: &KeyPath, message: impl Into<String>) {
        self.problems.push(Problem {
            line: self.map.line_of_path(path),
            key: path.to_string(),
            message: message.into(),
        });
    }

    /// The parsed value of key `key`, or `None` (with a problem noted) when it does not parse.
    fn checked<T, V>(
        &mut self,
        path: KeyPath,
        value: Option<V>,
        parse: impl FnOnce(V) -> Result<T, String>,
    ) -> Option<T> {
        match parse(value?) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.problem(&path, message);
                None
            }
        }
    }

    fn build(&mut self, raw: RawPlan) -> PartialPlan {
        let root = KeyPath::root();
        PartialPlan {
            url: self.checked(root.key("url"), raw.url, |u| Target::parse(&u)),
            stages: self.stages(raw.stage),
            thresholds: self.thresholds(raw.thresholds),
            admin: self.checked(root.key("admin"), raw.admin, |u| Target::parse(&u)),
            report: self.checked(root.key("report"), raw.report, |r| {
                ReportFile::parse(Path::new(&r))
            }),
            headers: self.headers(raw.headers),
            method: self.checked(root.key("method"), raw.method, |m| plan::parse_method(&m)),
            body: self.checked(root.key("body_file"), raw.body_file, |f| {
                plan::read_body(Path::new(&f))
            }),
            protocol: self.checked(root.key("protocol"), raw.protocol, |p| Protocol::parse(&p)),
            connections: self.checked(
                root.key("connections"),
                raw.connections,
                plan::parse_connections,
            ),
            timeout: self.checked(root.key("timeout"), raw.timeout, |t| {
                plan::parse_timeout(&t)
            }),
            cacert: raw.cacert.map(PathBuf::from),
        }
    }

    fn stages(&mut self, raw: Vec<RawStage>) -> Option<Vec<Stage>> {
        if raw.is_empty() {
            return None;
        }
        let count = raw.len();
        let stages: Vec<Stage> = raw
            .into_iter()
            .enumerate()
            .filter_map(|(index, stage)| {
                let path = KeyPath::root().key("stage").index(index);
                let duration = self.checked(path.key("duration"), Some(stage.duration), |d| {
                    crate::config::units::parse_duration(&d).map_err(|e| e.to_string())
                })?;
                self.checked(path.key("rate"), Some(stage.rate), |rate| {
                    Stage::new(duration, rate)
                })
            })
            .collect();
        (stages.len() == count).then_some(stages)
    }

    fn thresholds(&mut self, raw: Vec<String>) -> Vec<Threshold> {
        let path = KeyPath::root().key("thresholds");
        raw.into_iter()
            .enumerate()
            .filter_map(|(index, text)| {
                self.checked(path.index(index), Some(text), |t| Threshold::parse(&t))
            })
            .collect()
    }

    fn headers(
        &mut self,
        raw: BTreeMap<String, String>,
    ) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let path = KeyPath::root().key("headers");
        raw.into_iter()
            .filter_map(|(name, value)| {
                self.checked(path.key(&name), Some(value), |v| plan::header(&name, &v))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PLAN: &str = r#"url = "http://127.0.0.1:8080/api"
method = "POST"
protocol = "http2"
connections = 8
timeout = "2s"
thresholds = ["p95<200ms", "errors<0.1%"]

[headers]
accept = "application/json"

[[stage]]
duration = "30s"
rate = 100

[[stage]]
duration = "1m"
rate = 2.5
"#;

    #[test]
    fn a_plan_file_gives_every_field() {
        let plan = parse(PLAN).unwrap();
        assert_eq!(plan.url.unwrap().port, 8080);
        assert_eq!(plan.method, Some(http::Method::POST));
        assert_eq!(plan.protocol, Some(Protocol::Http2));
        assert_eq!(plan.connections, Some(8));
        assert_eq!(plan.timeout, Some(Duration::from_secs(2)));
        assert_eq!(plan.thresholds.len(), 2);
        assert_eq!(plan.headers[0].0, "accept");
        let stages = plan.stages.unwrap();
        assert_eq!(stages[1].duration, Duration::from_secs(60));
        assert_eq!(stages[1].rate, 2.5);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let text = format!("bogus = 1\n{PLAN}").replace("rate = 2.5", "rate = 2.5\nrampup = true");
        let problems = parse(&text).unwrap_err();
        let found: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(found, vec![(1, "bogus"), (19, "stage[1].rampup")]);
    }

    #[test]
    fn bad_values_are_all_reported_in_one_run() {
        let text = PLAN
            .replace("\"30s\"", "\"30x\"")
            .replace("\"p95<200ms\"", "\"p95<fast\"")
            .replace("\"http2\"", "\"spdy\"");
        let problems = parse(&text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["protocol", "thresholds[0]", "stage[0].duration"]);
    }

    #[test]
    fn a_wrongly_typed_value_names_its_key() {
        let problems = parse("url = 5\n").unwrap_err();
        assert_eq!((problems[0].line, problems[0].key.as_str()), (1, "url"));
    }
}
