//! TOML text to the raw structs (`file.rs`), reporting every value of the wrong type in one
//! run: serde stops at the first, so each is reported, blanked out (its `key = value`, or the
//! table a required key is missing from, replaced by spaces, so every line and offset stays
//! where it was) and the text read again. Unknown keys are collected on the way
//! (`serde_ignored`).

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
    let mut text = text.to_string();
    let mut problems = Vec::new();
    let mut blanked_keys = Vec::new();
    loop {
        let mut unknown = Vec::new();
        let parsed = serde_ignored::deserialize(toml::Deserializer::new(&text), |path| {
            unknown.push(KeyPath::of_ignored(&path));
        });
        let error = match parsed {
            Ok(raw) => {
                return Read {
                    raw: problems.is_empty().then_some(raw),
                    unknown,
                    problems,
                }
            }
            Err(error) => error,
        };
        if !is_consequence(&error, &blanked_keys) {
            problems.push(map.serde_problem(&error));
        }
        let progress = match blank_key_value(&mut text, &error) {
            Some(key) => {
                blanked_keys.push(key);
                true
            }
            None => blank_span(&mut text, &error),
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
