//! Host normalisation and route matching on arbitrary hosts, patterns and paths: a match is a
//! route whose prefix starts the path, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parapet::route::{check_host_pattern, normalize_host, Router};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\n');
    let (Some(host), Some(path)) = (parts.next(), parts.next()) else {
        return;
    };
    let routes: Vec<(Option<String>, String, String)> = parts
        .filter_map(|line| {
            let (pattern, prefix) = line.split_once(' ')?;
            let pattern = (!pattern.is_empty()).then(|| pattern.to_ascii_lowercase());
            if pattern
                .as_deref()
                .is_some_and(|p| check_host_pattern(p).is_err())
            {
                return None;
            }
            Some((pattern, prefix.to_string(), prefix.to_string()))
        })
        .collect();
    let router = Router::new(routes);
    if let Some(prefix) = router.lookup(&normalize_host(host), path) {
        assert!(path.starts_with(prefix.as_str()), "{prefix:?} for {path:?}");
    }
});
