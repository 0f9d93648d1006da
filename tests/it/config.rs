//! `parapet check` and `parapet run` on config files: valid ones pass, each invalid one is refused
//! with `FILE:LINE:KEY: message` naming the offending line and dotted key.

use crate::harness::{line_of, reserve_addr, CommandOutput, ConfigFile};

/// A small valid config; the error tests change one line of it.
fn valid_config() -> String {
    let listen = reserve_addr();
    let server = reserve_addr();
    format!(
        r#"[server]
threads = 2
grace_period = "1s"

[[listener]]
address = "{listen}"
protocols = ["http1"]

[upstream.api]
connect_timeout = "1s"

[[upstream.api.server]]
address = "{server}"
weight = 1

[[route]]
path_prefix = "/"
upstream = "api"
"#
    )
}

/// `text` with the line starting with `start` replaced by `replacement` (one or more lines).
fn replace_line(text: &str, start: &str, replacement: &str) -> String {
    let line = line_of(text, start, 1);
    text.lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == line { replacement } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn assert_refused(file: &ConfigFile, out: &CommandOutput, toml: &str) {
    assert!(
        !out.status.success(),
        "expected a non-zero exit for:\n{toml}\ngot {} and:\n{}",
        out.status,
        out.output
    );
    assert!(
        !out.output
            .contains(&format!("{}: ok", file.path().display())),
        "an invalid file was reported ok:\n{}",
        out.output
    );
}

/// Runs `parapet check` on `toml`; asserts it fails and names every `(line, key)` in `problems`.
fn assert_check_reports(toml: &str, problems: &[(usize, &str)]) {
    let file = ConfigFile::new(toml);
    let out = file.check();
    assert_refused(&file, &out, toml);
    for (line, key) in problems {
        let location = file.location(*line, key);
        assert!(
            out.output.contains(&location),
            "expected `{location}` in the output:\n{}\nfor the config:\n{}",
            out.output,
            numbered(toml)
        );
    }
}

fn numbered(text: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| format!("{:3} | {l}\n", i + 1))
        .collect()
}

#[test]
fn check_accepts_a_small_valid_config() {
    let toml = valid_config();
    let file = ConfigFile::new(&toml);
    let out = file.check();
    assert!(
        out.status.success(),
        "check refused a valid config ({}):\n{}\n{}",
        out.status,
        out.output,
        numbered(&toml)
    );
}

#[test]
fn unknown_key_is_reported_with_its_line_and_dotted_key() {
    let toml = replace_line(
        &valid_config(),
        "grace_period",
        "grace_period = \"1s\"\ngrace_perid = \"1s\"",
    );
    assert_check_reports(
        &toml,
        &[(line_of(&toml, "grace_perid", 1), "server.grace_perid")],
    );
}

#[test]
fn bad_duration_is_reported_with_its_line_and_dotted_key() {
    let toml = replace_line(
        &valid_config(),
        "connect_timeout",
        "connect_timeout = \"1x\"",
    );
    assert_check_reports(
        &toml,
        &[(
            line_of(&toml, "connect_timeout", 1),
            "upstream.api.connect_timeout",
        )],
    );
}

#[test]
fn bad_size_is_reported_with_its_line_and_dotted_key() {
    let toml = replace_line(
        &valid_config(),
        "grace_period",
        "grace_period = \"1s\"\nmax_request_body_size = \"12 parsecs\"",
    );
    assert_check_reports(
        &toml,
        &[(
            line_of(&toml, "max_request_body_size", 1),
            "server.max_request_body_size",
        )],
    );
}

#[test]
fn bad_listener_address_is_reported_with_its_line_and_dotted_key() {
    let base = valid_config();
    let listener_line = line_of(&base, "[[listener]]", 1) + 1;
    let start = base
        .lines()
        .nth(listener_line - 1)
        .expect("listener address line");
    assert!(start.starts_with("address"), "unexpected base config");
    let toml = replace_line(&base, start, "address = \"not-an-address\"");
    assert_check_reports(
        &toml,
        &[(
            line_of(&toml, "address = \"not-an-address\"", 1),
            "listener[0].address",
        )],
    );
}

#[test]
fn route_naming_an_unknown_upstream_is_reported() {
    let toml = replace_line(&valid_config(), "upstream = \"api\"", "upstream = \"nope\"");
    assert_check_reports(
        &toml,
        &[(
            line_of(&toml, "upstream = \"nope\"", 1),
            "route[0].upstream",
        )],
    );
}

#[test]
fn upstream_without_servers_is_reported_at_its_table_header() {
    let listen = reserve_addr();
    let toml = format!(
        r#"[server]
grace_period = "1s"

[[listener]]
address = "{listen}"

[upstream.api]
connect_timeout = "1s"

[[route]]
path_prefix = "/"
upstream = "api"
"#
    );
    assert_check_reports(
        &toml,
        &[(line_of(&toml, "[upstream.api]", 1), "upstream.api.server")],
    );
}

#[test]
fn zero_weight_is_reported_with_its_line_and_dotted_key() {
    let toml = replace_line(&valid_config(), "weight = 1", "weight = 0");
    assert_check_reports(
        &toml,
        &[(
            line_of(&toml, "weight = 0", 1),
            "upstream.api.server[0].weight",
        )],
    );
}

#[test]
fn duplicate_listener_address_is_reported_on_the_second_listener() {
    let listen = reserve_addr();
    let server = reserve_addr();
    let toml = format!(
        r#"[[listener]]
address = "{listen}"

[[listener]]
address = "{listen}"
protocols = ["http1", "h2c"]

[upstream.api]
[[upstream.api.server]]
address = "{server}"

[[route]]
upstream = "api"
"#
    );
    assert_check_reports(
        &toml,
        &[(
            line_of(&toml, &format!("address = \"{listen}\""), 2),
            "listener[1].address",
        )],
    );
}

#[test]
fn several_value_problems_in_one_file_are_all_reported_in_one_run() {
    let toml = replace_line(
        &valid_config(),
        "connect_timeout",
        "connect_timeout = \"1x\"",
    );
    let toml = replace_line(&toml, "weight = 1", "weight = 0");
    let toml = replace_line(&toml, "upstream = \"api\"", "upstream = \"nope\"");
    assert_check_reports(
        &toml,
        &[
            (
                line_of(&toml, "connect_timeout", 1),
                "upstream.api.connect_timeout",
            ),
            (
                line_of(&toml, "weight = 0", 1),
                "upstream.api.server[0].weight",
            ),
            (
                line_of(&toml, "upstream = \"nope\"", 1),
                "route[0].upstream",
            ),
        ],
    );
}

#[test]
fn unknown_key_does_not_hide_the_other_problems_of_the_file() {
    let toml = replace_line(
        &valid_config(),
        "grace_period",
        "grace_period = \"1s\"\ngrace_perid = \"1s\"",
    );
    let toml = replace_line(&toml, "connect_timeout", "connect_timeout = \"1x\"");
    let toml = replace_line(&toml, "weight = 1", "weight = 0");
    let toml = replace_line(&toml, "upstream = \"api\"", "upstream = \"nope\"");
    assert_check_reports(
        &toml,
        &[
            (line_of(&toml, "grace_perid", 1), "server.grace_perid"),
            (
                line_of(&toml, "connect_timeout", 1),
                "upstream.api.connect_timeout",
            ),
            (
                line_of(&toml, "weight = 0", 1),
                "upstream.api.server[0].weight",
            ),
            (
                line_of(&toml, "upstream = \"nope\"", 1),
                "route[0].upstream",
            ),
        ],
    );
}

#[test]
fn run_refuses_an_invalid_file_with_the_same_message_as_check() {
    let toml = replace_line(
        &valid_config(),
        "connect_timeout",
        "connect_timeout = \"1x\"",
    );
    let file = ConfigFile::new(&toml);
    let out = file.run_expecting_exit();
    assert!(
        !out.status.success(),
        "run accepted an invalid file ({}):\n{}",
        out.status,
        out.output
    );
    let location = file.location(
        line_of(&toml, "connect_timeout", 1),
        "upstream.api.connect_timeout",
    );
    assert!(
        out.output.contains(&location),
        "expected `{location}` in:\n{}",
        out.output
    );
    let checked = file.check();
    let problem = |output: &str| {
        output
            .lines()
            .find(|l| l.contains(&location))
            .map(str::to_string)
    };
    assert_eq!(problem(&out.output), problem(&checked.output));
}
