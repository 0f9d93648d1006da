//! The `[cache.shared]` table: where the Redis tier is, how it authenticates, and the bounds
//! that keep it from ever holding a request up (timeouts, object size, breaker).

use super::super::file::RawSharedCache;
use super::{Checker, KeyPath};
use crate::config::{Secret, SharedCacheConfig};
use std::path::PathBuf;
use std::time::Duration;

const DEFAULT_TIMEOUT_MILLIS: u64 = 50;
const DEFAULT_MAX_OBJECT_BYTES: u64 = 1 << 20;
const DEFAULT_CHUNK_BYTES: u64 = 256 << 10;
/// Redis refuses single values above 512 MiB.
const MAX_CHUNK_BYTES: u64 = 512 << 20;
const DEFAULT_POOL_SIZE: u32 = 2;
const MAX_POOL_SIZE: u32 = 64;
const DEFAULT_LOCK_TIMEOUT_SECS: u64 = 5;
const DEFAULT_BREAKER_FAILURES: u32 = 5;
const DEFAULT_BREAKER_COOLDOWN_SECS: u64 = 1;
const DEFAULT_KEY_PREFIX: &str = "parapet:";

/// `None` when the table has no usable `url` (the problem is recorded).
pub(super) fn build(
    checker: &mut Checker,
    raw: &RawSharedCache,
    path: &KeyPath,
) -> Option<SharedCacheConfig> {
    let url = url(checker, raw.url.as_deref(), &path.key("url"));
    let password = raw
        .password_file
        .as_deref()
        .and_then(|file| password(checker, file, &path.key("password_file")));
    let ca_file = raw.ca_file.as_deref().map(PathBuf::from);
    if let Some(file) = &ca_file {
        if let Err(e) = std::fs::metadata(file) {
            checker.problem(
                &path.key("ca_file"),
                format!("cannot read {}: {e}", file.display()),
            );
        }
    }
    let pool_size = checker.positive(raw.pool_size, &path.key("pool_size"), DEFAULT_POOL_SIZE);
    if pool_size > MAX_POOL_SIZE {
        checker.problem(
            &path.key("pool_size"),
            format!("must be at most {MAX_POOL_SIZE}"),
        );
    }
    let chunk_size = checker.size(
        &raw.chunk_size,
        &path.key("chunk_size"),
        DEFAULT_CHUNK_BYTES,
    );
    if chunk_size > MAX_CHUNK_BYTES {
        checker.problem(&path.key("chunk_size"), "must be at most 512MiB");
    }
    let config = SharedCacheConfig {
        url: url?,
        password,
        ca_file,
        key_prefix: raw
            .key_prefix
            .clone()
            .unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_string()),
        timeout: checker.positive_duration(
            &raw.timeout,
            &path.key("timeout"),
            Duration::from_millis(DEFAULT_TIMEOUT_MILLIS),
        ),
        max_object_size: checker.size(
            &raw.max_object_size,
            &path.key("max_object_size"),
            DEFAULT_MAX_OBJECT_BYTES,
        ),
        chunk_size: chunk_size.min(MAX_CHUNK_BYTES),
        pool_size: pool_size.min(MAX_POOL_SIZE) as usize,
        lock_timeout: checker.positive_duration(
            &raw.lock_timeout,
            &path.key("lock_timeout"),
            Duration::from_secs(DEFAULT_LOCK_TIMEOUT_SECS),
        ),
        breaker_failures: checker.positive(
            raw.breaker_failures,
            &path.key("breaker_failures"),
            DEFAULT_BREAKER_FAILURES,
        ),
        breaker_cooldown: checker.positive_duration(
            &raw.breaker_cooldown,
            &path.key("breaker_cooldown"),
            Duration::from_secs(DEFAULT_BREAKER_COOLDOWN_SECS),
        ),
    };
    Some(config)
}

fn url(checker: &mut Checker, url: Option<&str>, path: &KeyPath) -> Option<String> {
    let Some(url) = url else {
        checker.problem(
            path,
            "required: redis://host:port/db or rediss://host:port/db",
        );
        return None;
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        checker.problem(
            path,
            format!("{url:?}: must start with redis:// or rediss://"),
        );
        return None;
    }
    if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url) {
        checker.problem(path, format!("{url:?}: {e}"));
        return None;
    }
    Some(url.to_string())
}

fn password(checker: &mut Checker, file: &str, path: &KeyPath) -> Option<Secret> {
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Some(Secret(text.trim_end().to_string())),
        Ok(_) => {
            checker.problem(path, format!("{file} is empty"));
            None
        }
        Err(e) => {
            checker.problem(path, format!("cannot read {file}: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_and_validate;
    use super::super::tests::GOOD as BASE;
    use super::*;
    use crate::config::{Config, Problem};
    use std::path::Path;

    fn parse(table: &str) -> Result<Config, Vec<Problem>> {
        parse_and_validate(
            &format!("{BASE}\n[cache.shared]\n{table}\n"),
            Path::new("t.toml"),
        )
    }

    fn problem_keys(table: &str) -> Vec<String> {
        parse(table)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    #[test]
    fn a_url_alone_takes_every_default() {
        let config = parse("url = \"redis://127.0.0.1:6379/0\"").expect("valid");
        let shared = config.cache.shared.expect("the shared tier is on");
        assert_eq!(shared.timeout, Duration::from_millis(50));
        assert_eq!(shared.max_object_size, 1 << 20);
        assert_eq!(shared.chunk_size, 256 << 10);
        assert_eq!(shared.pool_size, 2);
        assert_eq!(shared.lock_timeout, Duration::from_secs(5));
        assert_eq!(shared.breaker_failures, 5);
        assert_eq!(shared.breaker_cooldown, Duration::from_secs(1));
        assert_eq!(shared.key_prefix, "parapet:");
        assert!(shared.password.is_none());
    }

    #[test]
    fn without_the_table_there_is_no_shared_tier() {
        let config = parse_and_validate(BASE, Path::new("t.toml")).expect("valid");
        assert!(config.cache.shared.is_none());
    }

    #[test]
    fn the_url_is_required_and_must_name_redis() {
        assert_eq!(problem_keys("timeout = \"10ms\""), ["cache.shared.url"]);
        assert_eq!(
            problem_keys("url = \"http://127.0.0.1:6379\""),
            ["cache.shared.url"]
        );
    }

    #[test]
    fn the_password_comes_from_its_file_and_is_never_printed() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), "s3cret\n").expect("written");
        let table = format!(
            "url = \"rediss://cache.internal:6380/1\"\npassword_file = {:?}",
            file.path().display().to_string()
        );
        let shared = parse(&table).expect("valid").cache.shared.expect("on");
        assert_eq!(shared.password, Some(Secret("s3cret".into())));
        assert!(!format!("{shared:?}").contains("s3cret"));
        assert_eq!(
            problem_keys("url = \"redis://h:1\"\npassword_file = \"/nonexistent/pw\""),
            ["cache.shared.password_file"]
        );
    }

    #[test]
    fn bad_bounds_are_each_reported() {
        let keys = problem_keys(
            "url = \"redis://h:1\"\ntimeout = \"0ms\"\npool_size = 0\nchunk_size = \"1x\"\nunknown = 1",
        );
        assert_eq!(
            keys,
            [
                "cache.shared.timeout",
                "cache.shared.pool_size",
                "cache.shared.chunk_size",
                "cache.shared.unknown"
            ]
        );
    }
}
