//! The `[compression]` table: algorithms, thresholds, types, levels and decoding bounds.

use super::super::file::{RawCompression, RawSize};
use super::{Checker, KeyPath};
use crate::compress::{
    Algorithm, Bounds, CompressionConfig, Levels, TypePattern, DEFAULT_LEVELS,
    DEFAULT_MAX_DECOMPRESSED_BYTES, DEFAULT_MAX_RATIO, DEFAULT_MIN_LENGTH_BYTES,
};

const GZIP_LEVELS: std::ops::RangeInclusive<i64> = 1..=9;
const BROTLI_LEVELS: std::ops::RangeInclusive<i64> = 0..=11;
/// Up to 19 the zstd window stays within the 8 MiB the `zstd` content coding allows
/// (RFC 9659); 20 to 22 use larger windows that clients may refuse.
const ZSTD_LEVELS: std::ops::RangeInclusive<i64> = 1..=19;

pub(super) fn build(
    checker: &mut Checker,
    raw: &RawCompression,
    path: &KeyPath,
) -> CompressionConfig {
    let defaults = CompressionConfig::default();
    CompressionConfig {
        enabled: raw.enabled.unwrap_or(defaults.enabled),
        algorithms: raw.algorithms.as_ref().map_or(defaults.algorithms, |list| {
            algorithms(checker, list, &path.key("algorithms"))
        }),
        min_length: raw
            .min_length
            .as_ref()
            .map_or(DEFAULT_MIN_LENGTH_BYTES, |size| {
                min_length(checker, size, &path.key("min_length"))
            }),
        types: raw.types.as_ref().map_or(defaults.types, |list| {
            types(checker, list, &path.key("types"))
        }),
        levels: Levels {
            gzip: level(checker, raw.gzip_level, GZIP_LEVELS, path, "gzip_level")
                .map_or(DEFAULT_LEVELS.gzip, |l| l as u32),
            brotli: level(
                checker,
                raw.brotli_level,
                BROTLI_LEVELS,
                path,
                "brotli_level",
            )
            .map_or(DEFAULT_LEVELS.brotli, |l| l as u32),
            zstd: level(checker, raw.zstd_level, ZSTD_LEVELS, path, "zstd_level")
                .map_or(DEFAULT_LEVELS.zstd, |l| l as i32),
        },
        bounds: Bounds {
            max_decompressed_size: checker.size(
                &raw.max_decompressed_size,
                &path.key("max_decompressed_size"),
                DEFAULT_MAX_DECOMPRESSED_BYTES,
            ),
            max_ratio: match raw.max_ratio {
                None => DEFAULT_MAX_RATIO,
                Some(ratio) if ratio >= 1 => ratio as u64,
                Some(_) => {
                    checker.problem(&path.key("max_ratio"), "must be at least 1");
                    DEFAULT_MAX_RATIO
                }
            },
        },
    }
}

fn algorithms(checker: &mut Checker, list: &[String], path: &KeyPath) -> Vec<Algorithm> {
    if list.is_empty() {
        checker.problem(
            path,
            "must name at least one of \"br\", \"zstd\", \"gzip\" (to turn compression off, set enabled = false)",
        );
        return CompressionConfig::default().algorithms;
    }
    let mut found = Vec::new();
    for (index, name) in list.iter().enumerate() {
        match Algorithm::from_token(name).filter(|_| !name.eq_ignore_ascii_case("x-gzip")) {
            Some(algorithm) if found.contains(&algorithm) => {
                checker.problem(&path.index(index), format!("\"{name}\" is listed twice"))
            }
            Some(algorithm) => found.push(algorithm),
            None => checker.problem(
                &path.index(index),
                format!("unknown algorithm \"{name}\" (use \"br\", \"zstd\" or \"gzip\")"),
            ),
        }
    }
    found
}

fn min_length(checker: &mut Checker, size: &RawSize, path: &KeyPath) -> u64 {
    super::size_in_bytes(size).unwrap_or_else(|message| {
        checker.problem(path, message);
        DEFAULT_MIN_LENGTH_BYTES
    })
}

fn types(checker: &mut Checker, list: &[String], path: &KeyPath) -> Vec<TypePattern> {
    if list.is_empty() {
        checker.problem(
            path,
            "must list at least one media type (to turn compression off, set enabled = false)",
        );
    }
    list.iter()
        .enumerate()
        .filter_map(|(index, text)| match TypePattern::parse(text) {
            Ok(pattern) => Some(pattern),
            Err(e) => {
                checker.problem(&path.index(index), e.to_string());
                None
            }
        })
        .collect()
}

fn level(
    checker: &mut Checker,
    value: Option<i64>,
    range: std::ops::RangeInclusive<i64>,
    path: &KeyPath,
    key: &str,
) -> Option<i64> {
    let level = value?;
    if range.contains(&level) {
        return Some(level);
    }
    checker.problem(
        &path.key(key),
        format!("must be between {} and {}", range.start(), range.end()),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::super::parse_and_validate;
    use super::super::tests::GOOD as BASE;
    use crate::config::Problem;
    use std::path::Path;

    fn with_table(table: &str) -> String {
        format!("{BASE}\n[compression]\n{table}\n")
    }

    fn problems(table: &str) -> Vec<Problem> {
        parse_and_validate(&with_table(table), Path::new("t.toml"))
            .err()
            .unwrap_or_default()
    }

    /// The one problem `table` has: its key, and its line within the whole file.
    fn only_problem(table: &str) -> (String, usize, String) {
        let found = problems(table);
        assert_eq!(found.len(), 1, "{found:?}");
        let p = &found[0];
        (p.key.clone(), p.line, p.message.clone())
    }

    /// The line of the first line of `table` in the whole file.
    fn first_table_line() -> usize {
        BASE.lines().count() + 3
    }

    #[test]
    fn no_table_means_every_default() {
        let config = parse_and_validate(BASE, Path::new("t.toml")).expect("valid");
        assert_eq!(
            config.compression,
            crate::compress::CompressionConfig::default()
        );
        assert!(config.routes[0].compress);
    }

    #[test]
    fn every_key_is_read() {
        let config = parse_and_validate(
            &with_table(
                r#"enabled = false
algorithms = ["gzip", "BR"]
min_length = "2KiB"
types = ["text/html", "application/*"]
gzip_level = 6
brotli_level = 0
zstd_level = 19
max_decompressed_size = "64MiB"
max_ratio = 20"#,
            )
            .replace("upstream = \"api\"", "upstream = \"api\"\ncompress = false"),
            Path::new("t.toml"),
        )
        .expect("valid");
        let c = &config.compression;
        assert!(!c.enabled);
        assert_eq!(
            c.algorithms,
            [
                crate::compress::Algorithm::Gzip,
                crate::compress::Algorithm::Br
            ]
        );
        assert_eq!(c.min_length, 2048);
        assert_eq!(c.types.len(), 2);
        assert!(c.types[1].matches("application/pdf"));
        assert_eq!((c.levels.gzip, c.levels.brotli, c.levels.zstd), (6, 0, 19));
        assert_eq!(c.bounds.max_decompressed_size, 64 << 20);
        assert_eq!(c.bounds.max_ratio, 20);
        assert!(!config.routes[0].compress);
    }

    #[test]
    fn min_length_takes_a_number_of_bytes_or_a_size() {
        let parsed = |v: &str| {
            parse_and_validate(
                &with_table(&format!("min_length = {v}")),
                Path::new("t.toml"),
            )
            .map(|c| c.compression.min_length)
        };
        assert_eq!(parsed("0").ok(), Some(0));
        assert_eq!(parsed("1500").ok(), Some(1500));
        assert_eq!(parsed("\"1KB\"").ok(), Some(1000));
        let (key, line, message) = only_problem("min_length = -1");
        assert_eq!(
            (key.as_str(), line),
            ("compression.min_length", first_table_line())
        );
        assert!(message.contains("negative"), "{message}");
        let (key, _, message) = only_problem("min_length = \"1 parsec\"");
        assert_eq!(key, "compression.min_length");
        assert!(message.contains("unknown unit"), "{message}");
        let found = problems("min_length = true");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("size string"), "{found:?}");
    }

    #[test]
    fn algorithms_must_be_known_and_listed_once() {
        let (key, line, message) = only_problem("algorithms = [\"br\", \"deflate\"]");
        assert_eq!(key, "compression.algorithms[1]");
        assert_eq!(line, first_table_line());
        assert!(
            message.contains("unknown algorithm \"deflate\""),
            "{message}"
        );
        let (key, _, message) = only_problem("algorithms = [\"gzip\", \"gzip\"]");
        assert_eq!(key, "compression.algorithms[1]");
        assert!(message.contains("twice"), "{message}");
        let (key, _, message) = only_problem("algorithms = []");
        assert_eq!(key, "compression.algorithms");
        assert!(message.contains("enabled = false"), "{message}");
    }

    #[test]
    fn types_must_be_media_types_or_globs() {
        let (key, _, message) = only_problem("types = [\"text/*\", \"json\"]");
        assert_eq!(key, "compression.types[1]");
        assert!(message.contains("not a media type"), "{message}");
        let (key, _, _) = only_problem("types = [\"text/html; charset=utf-8\"]");
        assert_eq!(key, "compression.types[0]");
        let (key, _, message) = only_problem("types = []");
        assert_eq!(key, "compression.types");
        assert!(message.contains("at least one"), "{message}");
    }

    #[test]
    fn levels_must_be_in_each_algorithms_range() {
        for (table, key, range) in [
            (
                "gzip_level = 0",
                "compression.gzip_level",
                "between 1 and 9",
            ),
            (
                "gzip_level = 10",
                "compression.gzip_level",
                "between 1 and 9",
            ),
            (
                "brotli_level = 12",
                "compression.brotli_level",
                "between 0 and 11",
            ),
            (
                "brotli_level = -1",
                "compression.brotli_level",
                "between 0 and 11",
            ),
            (
                "zstd_level = 0",
                "compression.zstd_level",
                "between 1 and 19",
            ),
            (
                "zstd_level = 22",
                "compression.zstd_level",
                "between 1 and 19",
            ),
        ] {
            let (found, line, message) = only_problem(table);
            assert_eq!((found.as_str(), line), (key, first_table_line()), "{table}");
            assert!(message.contains(range), "{table}: {message}");
        }
    }

    #[test]
    fn decoding_bounds_must_be_positive() {
        let (key, _, message) = only_problem("max_ratio = 0");
        assert_eq!(key, "compression.max_ratio");
        assert!(message.contains("at least 1"), "{message}");
        let (key, _, _) = only_problem("max_decompressed_size = \"0B\"");
        assert_eq!(key, "compression.max_decompressed_size");
        let (key, _, _) = only_problem("max_decompressed_size = \"lots\"");
        assert_eq!(key, "compression.max_decompressed_size");
    }

    #[test]
    fn unknown_keys_and_a_non_boolean_route_switch_are_reported() {
        let (key, _, message) = only_problem("level = 3");
        assert_eq!(key, "compression.level");
        assert!(message.contains("unknown key"), "{message}");
        let text = BASE.replace(
            "upstream = \"api\"",
            "upstream = \"api\"\ncompress = \"yes\"",
        );
        let found = parse_and_validate(&text, Path::new("t.toml"))
            .err()
            .unwrap_or_default();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].key.starts_with("route"), "{found:?}");
    }
}
