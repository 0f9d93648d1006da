//! TOML text to the raw structs (`file.rs`), reporting every value of the wrong type in one
//! run: serde stops at the first, so each is reported, blanked out (its `key = value`, or the
//! table a required key is missing from, replaced by spaces, so every line and offset stays
//! where it was) and the text read again. Unknown keys are collected on the way
//! (`serde_ignored`). A syntax error (a duplicate key, a broken table header) stops the
//! reading: nothing after it can be trusted, and it is reported once.

use super::file::RawConfig;
use super::locate::{KeyPath, SourceMap};
use super::Problem;

/// Most wrong-typed values reported from one file (each costs a parse of the file).
const MAX_TYPE_ERRORS: usize = 64;

/// What reading the text gave: the raw config when every value had its type, the unknown
/// keys, and the type problems.
pub(super) struct Read {
    pub raw: Option<RawConfig>,
    pub unknown: Vec<KeyPath>,
    pub problems: Vec<Problem>,
}

pub(super) fn read(text: &str, map: &SourceMap) -> Read {
    if let Some(problem) = syntax_problem(text, map) {
        return Read {
            raw: None,
            unknown: Vec::new(),
            problems: vec![problem],
        };
    }
    let mut text = text.to_string();
    let mut problems = Vec::new();
    let mut blanked_keys = Vec::new();
    // Every wrong value so far was one `key = value`, now blank: the rest is sound to check.
    let mut only_keys_blanked = true;
    loop {
        let mut unknown = Vec::new();
        let parsed = serde_ignored::deserialize(toml::Deserializer::new(&text), |path| {
            unknown.push(KeyPath::of_ignored(&path));
        });
        let error = match parsed {
            Ok(raw) => {
                return Read {
                    raw: only_keys_blanked.then_some(raw),
                    unknown,
                    problems,
                }
            }
            Err(error) => error,
        };
        if !is_consequence(&error, &blanked_keys) {
            let mut problem = map.serde_problem(&error);
            problem.message = plain_type_names(&problem.message);
            problems.push(problem);
        }
        let progress = match blank_key_value(&mut text, &error) {
            Some(key) => {
                blanked_keys.push(key);
                true
            }
            None => {
                only_keys_blanked = false;
                blank_span(&mut text, &error)
            }
        };
        if !progress || problems.len() >= MAX_TYPE_ERRORS {
            return Read {
                raw: None,
                unknown,
                problems,
            };
        }
    }
}

/// A "missing field" error for a key blanked out before: the first error already said it.
fn is_consequence(error: &toml::de::Error, blanked_keys: &[String]) -> bool {
    let message = error.message();
    blanked_keys
        .iter()
        .any(|key| message.contains(&format!("missing field `{key}`")))
}

/// Replaces the `key = value` the error points into with spaces (newlines kept); the key's
/// name, or `None` when the error is not about one plain `key = value` (a missing field, a
/// value inside an inline table or array, a syntax error).
fn blank_key_value(text: &mut String, error: &toml::de::Error) -> Option<String> {
    let span = usable_span(text, error)?;
    let line_start = text[..span.start].rfind('\n').map_or(0, |n| n + 1);
    let key = text[line_start..span.start]
        .trim()
        .strip_suffix('=')?
        .trim();
    let plain_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c));
    if !plain_key {
        return None;
    }
    let key = key
        .rsplit('.')
        .next()
        .unwrap_or(key)
        .trim_matches(['"', '\''])
        .to_string();
    let blank: String = text[line_start..span.end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(line_start..span.end, &blank);
    Some(key)
}

/// The error's span, when it lies on character boundaries of `text`.
fn usable_span(text: &str, error: &toml::de::Error) -> Option<std::ops::Range<usize>> {
    error.span().filter(|span| {
        span.start <= span.end
            && span.end <= text.len()
            && text.is_char_boundary(span.start)
            && text.is_char_boundary(span.end)
    })
}

/// Blanks whatever the error spans (a table missing a field); false when that changes
/// nothing, so the reading stops.
fn blank_span(text: &mut String, error: &toml::de::Error) -> bool {
    let Some(span) = usable_span(text, error) else {
        return false;
    };
    let region = &text[span.clone()];
    if region.chars().all(char::is_whitespace) {
        return false;
    }
    let blank: String = region
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(span, &blank);
    true
}

/// The file's first TOML syntax error, if any, as one problem: the line it is on, the key
/// (for a duplicate key, the table and key), and toml's message on one line.
fn syntax_problem(text: &str, map: &SourceMap) -> Option<Problem> {
    let error = toml_edit::ImDocument::parse(text.to_string()).err()?;
    let message = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let line = error.span().map_or(0, |span| map.line_of(span.start));
    Some(Problem {
        line,
        key: duplicated_key(&message).unwrap_or_default(),
        message,
    })
}

/// `server.threads` from toml's "duplicate key `threads` in table `server`".
fn duplicated_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("duplicate key `")?;
    let (key, rest) = rest.split_once('`')?;
    let table = rest
        .strip_prefix(" in table `")
        .and_then(|t| t.split_once('`'))
        .map(|(table, _)| table)
        .filter(|table| !table.is_empty());
    Some(table.map_or(key.to_string(), |table| format!("{table}.{key}")))
}

/// serde's "invalid type: string \"32\", expected usize" in an operator's words: "expected a
/// whole number, got the string \"32\"".
fn plain_type_names(message: &str) -> String {
    const NAMES: [(&str, &str); 16] = [
        ("usize", "a whole number"),
        ("u64", "a whole number"),
        ("u32", "a whole number"),
        ("u16", "a whole number"),
        ("u8", "a whole number"),
        ("isize", "a whole number"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("i16", "a whole number"),
        ("i8", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
        ("a sequence", "an array"),
        ("a map", "a table"),
        ("a boolean", "true or false"),
        ("a string", "a quoted string"),
    ];
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "))
    else {
        return message.to_string();
    };
    let expected = NAMES
        .iter()
        .find(|(rust, _)| *rust == expected)
        .map_or(expected, |(_, plain)| plain);
    let expected = if expected.starts_with("struct ") {
        "a table"
    } else {
        expected
    };
    format!("expected {expected}, got {found}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_type_names_become_plain_words() {
        assert_eq!(
            plain_type_names("invalid type: string \"32\", expected usize"),
            "expected a whole number, got string \"32\""
        );
        assert_eq!(
            plain_type_names("invalid value: integer `-1`, expected u32"),
            "expected a whole number, got integer `-1`"
        );
        assert_eq!(
            plain_type_names("invalid type: integer `5`, expected a string"),
            "expected a quoted string, got integer `5`"
        );
        assert_eq!(
            plain_type_names("missing field `address`"),
            "missing field `address`"
        );
    }

    #[test]
    fn a_duplicate_key_is_named_with_its_table() {
        assert_eq!(
            duplicated_key("duplicate key `threads` in table `server`").as_deref(),
            Some("server.threads")
        );
        assert_eq!(duplicated_key("duplicate key `a`").as_deref(), Some("a"));
        assert_eq!(duplicated_key("invalid table header"), None);
    }
}
