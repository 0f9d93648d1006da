//! Maps between positions in the TOML text and dotted key paths (`upstream.api.server[0].weight`),
//! so every config error can name the file, the line and the key.

use super::Problem;
use serde::de::DeserializeOwned;
use std::fmt;
use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

/// One step into the config: a table key or an index into an array of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A dotted key path such as `upstream.api.server[0].weight`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Step>);

impl KeyPath {
    pub fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_string()));
        KeyPath(steps)
    }

    pub fn index(&self, index: usize) -> Self {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        KeyPath(steps)
    }

    /// The key path of a key that serde ignored (an unknown key).
    pub fn of_ignored(path: &serde_ignored::Path<'_>) -> Self {
        use serde_ignored::Path;
        match path {
            Path::Root => KeyPath::root(),
            Path::Seq { parent, index } => KeyPath::of_ignored(parent).index(*index),
            Path::Map { parent, key } => KeyPath::of_ignored(parent).key(key),
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => KeyPath::of_ignored(parent),
        }
    }
}

/// Deserializes `text` into `T`, collecting every key `T` does not know (rather than stopping
/// at the first) so that all of them can be reported; a serde error is a [`Problem`] placed by
/// `map`.
pub fn deserialize_noting_unknown<T: DeserializeOwned>(
    text: &str,
    map: &SourceMap,
) -> Result<(T, Vec<KeyPath>), Problem> {
    let mut unknown = Vec::new();
    let parsed = serde_ignored::deserialize(toml::Deserializer::new(text), |path| {
        unknown.push(KeyPath::of_ignored(&path));
    });
    match parsed {
        Ok(value) => Ok((value, unknown)),
        Err(error) => Err(map.serde_problem(&error)),
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if position == 0 => write!(f, "{key}")?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The parsed document with its spans, used only to find lines and keys.
pub struct SourceMap {
    text: String,
    doc: Option<ImDocument<String>>,
}

impl SourceMap {
    pub fn new(text: &str) -> Self {
        SourceMap {
            text: text.to_string(),
            doc: ImDocument::parse(text.to_string()).ok(),
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// Line of the deepest part of `path` that exists in the file (the key itself, or the
    /// table it should have been in).
    pub fn line_of_path(&self, path: &KeyPath) -> usize {
        let Some(doc) = &self.doc else { return 1 };
        let mut best = None;
        let mut table: Option<&Table> = Some(doc.as_table());
        let mut item: Option<&Item> = None;
        for step in &path.0 {
            match (step, table, item) {
                (Step::Key(key), Some(current), _) => {
                    let Some((found_key, found)) = current.get_key_value(key) else {
                        break;
                    };
                    best = found_key.span().or(best);
                    best = table_span(found).or(best);
                    table = found.as_table();
                    item = Some(found);
                    if let Item::Value(Value::InlineTable(_)) = found {
                        table = None;
                    }
                }
                (Step::Index(index), _, Some(Item::ArrayOfTables(array))) => {
                    let Some(entry) = array.get(*index) else {
                        break;
                    };
                    best = entry.span().or(best);
                    table = Some(entry);
                    item = None;
                }
                _ => break,
            }
        }
        best.map(|span| self.line_of(span.start)).unwrap_or(1)
    }

    /// A serde error as a problem: the line and key path of its span, when it has one.
    pub fn serde_problem(&self, error: &toml::de::Error) -> Problem {
        let offset = error.span().map(|span| span.start);
        Problem {
            line: offset.map(|o| self.line_of(o)).unwrap_or(0),
            key: offset
                .map(|o| self.path_at(o).to_string())
                .unwrap_or_default(),
            message: error.message().trim().to_string(),
        }
    }

    /// The key path at a byte offset (for serde errors, which only carry a span).
    pub fn path_at(&self, offset: usize) -> KeyPath {
        let Some(doc) = &self.doc else {
            return KeyPath::root();
        };
        let mut path = KeyPath::root();
        descend_table(doc.as_table(), offset, &mut path);
        path
    }
}

fn table_span(item: &Item) -> Option<Range<usize>> {
    item.as_table().and_then(|table| table.span())
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|span| span.start <= offset && offset < span.end.max(span.start + 1))
}

/// Walks into whichever key, value or sub-table holds `offset`, extending `path`; the
/// deepest match wins, so a key inside `[[upstream.api.server]]` beats the table itself.
fn descend_table(table: &Table, offset: usize, path: &mut KeyPath) -> bool {
    for (key, item) in table.iter() {
        let here = path.key(key);
        let key_span = table.get_key_value(key).and_then(|(k, _)| k.span());
        if contains(key_span, offset) {
            *path = here;
            return true;
        }
        if let Some(found) = descend_item(item, offset, &here) {
            *path = found;
            return true;
        }
    }
    false
}

fn descend_item(item: &Item, offset: usize, here: &KeyPath) -> Option<KeyPath> {
    match item {
        Item::Table(sub) => {
            let mut deeper = here.clone();
            (descend_table(sub, offset, &mut deeper) || contains(sub.span(), offset))
                .then_some(deeper)
        }
        Item::ArrayOfTables(array) => array.iter().enumerate().find_map(|(index, entry)| {
            let mut deeper = here.index(index);
            (descend_table(entry, offset, &mut deeper) || contains(entry.span(), offset))
                .then_some(deeper)
        }),
        Item::Value(value) => contains(value.span(), offset).then(|| here.clone()),
        Item::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "[server]\ngrace_period = \"1s\"\n\n[upstream.api]\nretries = 1\n[[upstream.api.server]]\naddress = \"a\"\n[[upstream.api.server]]\naddress = \"b\"\nweight = 0\n";

    #[test]
    fn paths_render_with_dots_and_indexes() {
        let path = KeyPath::root()
            .key("upstream")
            .key("api")
            .key("server")
            .index(1)
            .key("weight");
        assert_eq!(path.to_string(), "upstream.api.server[1].weight");
    }

    #[test]
    fn lines_are_found_for_nested_keys() {
        let map = SourceMap::new(SAMPLE);
        let server = KeyPath::root().key("upstream").key("api").key("server");
        assert_eq!(
            map.line_of_path(&KeyPath::root().key("server").key("grace_period")),
            2
        );
        assert_eq!(
            map.line_of_path(&KeyPath::root().key("upstream").key("api").key("retries")),
            5
        );
        assert_eq!(map.line_of_path(&server.index(1).key("weight")), 10);
        assert_eq!(map.line_of_path(&server.index(1).key("missing")), 8);
    }

    #[test]
    fn a_span_maps_back_to_its_key_path() {
        let map = SourceMap::new(SAMPLE);
        let offset = SAMPLE.find("weight").unwrap();
        assert_eq!(
            map.path_at(offset).to_string(),
            "upstream.api.server[1].weight"
        );
    }
}
