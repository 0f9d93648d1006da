//! The config loader on arbitrary text: every input is either a config or a list of problems,
//! each naming a line inside the file; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = parapet::config::Config::parse(text, Path::new("fuzz.toml")) {
        let lines = text.lines().count().max(1);
        for problem in &error.problems {
            assert!(
                problem.line <= lines + 1,
                "line {} of {lines}",
                problem.line
            );
        }
        assert!(!error.problems.is_empty());
    }
});
