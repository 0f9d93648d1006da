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

#[test]
fn every_value_of_the_wrong_type_is_reported_in_one_run_issue_17() {
    let toml = replace_line(&valid_config(), "threads = 2", "threads = \"two\"");
    let toml = replace_line(&toml, "weight = 1", "weight = \"heavy\"");
    let toml = replace_line(&toml, "protocols = [\"http1\"]", "protocols = \"http1\"");
    let threads = line_of(&toml, "threads", 1);
    let weight = line_of(&toml, "weight", 1);
    let protocols = line_of(&toml, "protocols", 1);
    assert_check_reports(
        &toml,
        &[
            (threads, "server.threads"),
            (protocols, "listener[0].protocols"),
            (weight, "upstream.api.server[0].weight"),
        ],
    );
}

#[test]
fn keys_that_do_nothing_are_warned_about_and_the_file_passes_issue_17() {
    let toml = replace_line(
        &valid_config(),
        "connect_timeout = \"1s\"",
        "connect_timeout = \"1s\"\nhash_key = \"uri\"",
    );
    let file = ConfigFile::new(&toml);
    let out = file.check();
    assert!(out.status.success(), "{}", out.output);
    let location = file.location(line_of(&toml, "hash_key", 1), "upstream.api.hash_key");
    assert!(
        out.output.contains(&format!(
            "{location} warning: does nothing without balance = \"hash\""
        )),
        "{}",
        out.output
    );
}

#[test]
fn an_unreadable_token_file_fails_the_check_issue_17() {
    let missing = std::env::temp_dir().join(format!("parapet-no-token-{}", std::process::id()));
    let toml = format!(
        "{}\n[admin]\nlisten = \"{}\"\ntoken_file = \"{}\"\n",
        valid_config(),
        reserve_addr(),
        missing.display()
    );
    let line = line_of(&toml, "token_file", 1);
    assert_check_reports(&toml, &[(line, "admin.token_file")]);
}

#[test]
fn certs_dev_keeps_the_ca_remakes_a_missing_leaf_and_force_replaces_only_what_it_names_issue_25() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = |flag: Option<&str>| {
        let mut args = vec![
            "certs".as_ref(),
            "dev".as_ref(),
            "--dir".as_ref(),
            dir.path().as_os_str(),
        ];
        if let Some(flag) = flag {
            args.push(flag.as_ref());
        }
        crate::harness::run_parapet(&args)
    };
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect(name);
    assert!(certs(None).status.success());
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .expect("ca.key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let (ca, leaf) = (read("ca.crt"), read("localhost.crt"));

    let again = certs(None);
    assert!(again.status.success(), "{}", again.output);
    assert!(again.output.contains("nothing written"), "{}", again.output);
    assert_eq!(
        (read("ca.crt"), read("localhost.crt")),
        (ca.clone(), leaf.clone())
    );

    std::fs::remove_file(dir.path().join("localhost.key")).expect("remove the leaf key");
    let remade = certs(None);
    assert!(remade.status.success(), "{}", remade.output);
    assert_eq!(read("ca.crt"), ca, "the CA is kept");
    assert_ne!(read("localhost.crt"), leaf, "the leaf is remade");

    let leaf = read("localhost.crt");
    assert!(certs(Some("--force")).status.success());
    assert_eq!(read("ca.crt"), ca, "--force keeps the CA");
    assert_ne!(read("localhost.crt"), leaf, "--force remakes the leaf");

    assert!(certs(Some("--force-ca")).status.success());
    assert_ne!(read("ca.crt"), ca, "--force-ca makes a new CA");
}

/// Each fixture of `tests/fixtures/check/`, whether `parapet check` passes it, and every line
/// it must print (`LINE:KEY: MESSAGE-START`, after the file name) — no more, no fewer.
const CHECK_FIXTURES: &[(&str, bool, &[&str])] = &[
    (
        "mixed_types_and_values",
        false,
        &[
            "3:server.threads: must be > 0",
            "9:upstream.api.keepalive: expected a whole number, got string \"32\"",
            "13:upstream.api.server[0].weight: must be > 0",
            "17:route[0].upstream: no upstream named \"nope\"",
        ],
    ),
    (
        "duplicate_key",
        false,
        &["3:server.threads: duplicate key `threads` in table `server`"],
    ),
    (
        "syntax_error",
        false,
        &["1: invalid table header: expected `.`, `]`"],
    ),
    (
        "missing_key_file",
        false,
        &["6:listener[0].certificate[0].key: cannot read private key "],
    ),
    (
        "unresolvable_host",
        false,
        &[
            "6:upstream.api.server[0].address: cannot resolve host \"no-such-host.invalid\": ",
            "9:upstream.api.server[1].address: invalid address \"127.0.0.1\": expected HOST:PORT",
        ],
    ),
    (
        "passes_but_cannot_work",
        true,
        &[
            "3:server.max_request_header_size: warning: 512 bytes refuses most browsers' requests",
            "10:upstream.api.server[0].address: warning: port 0: nothing listens there",
        ],
    ),
];

#[test]
fn check_reports_every_problem_of_each_fixture_in_one_run_issue_25() {
    let certs = crate::harness::dev_certs();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/check");
    let mut mismatches = Vec::new();
    for (name, passes, expected) in CHECK_FIXTURES {
        let text = std::fs::read_to_string(fixtures.join(format!("{name}.toml")))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .replace("@CERTS@", &certs.path().display().to_string());
        let file = ConfigFile::new(&text);
        let out = file.check();
        let prefix = format!("{}:", file.path().display());
        let reported: Vec<&str> = out
            .output
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter(|line| !line.starts_with(" ok"))
            .collect();
        let all_found = expected.len() == reported.len()
            && expected
                .iter()
                .zip(&reported)
                .all(|(want, got)| got.starts_with(want));
        if out.status.success() != *passes || !all_found {
            mismatches.push(format!(
                "{name}: expected {} with\n  {}\ngot {} with\n{}",
                if *passes { "success" } else { "failure" },
                expected.join("\n  "),
                out.status,
                out.output
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn the_shipped_config_checks_without_a_warning_issue_25() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/parapet.toml");
    let certs = crate::harness::dev_certs();
    // The shipped file names certs/ relative to the working directory; check it from a
    // directory that has them.
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(work.path().join("certs")).expect("certs dir");
    for file in ["ca.crt", "localhost.crt", "localhost.key"] {
        std::fs::copy(
            certs.path().join(file),
            work.path().join("certs").join(file),
        )
        .expect("copy cert");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_parapet"))
        .args(["check", "-c"])
        .arg(&conf)
        .current_dir(work.path())
        .output()
        .expect("run parapet check");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.status.success(), "{output}");
    assert!(!output.contains("warning"), "{output}");
}
