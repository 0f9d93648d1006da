//! Request paths in normal form (RFC 3986 §6.2.2), so that routing, the cache key and the
//! upstream see one spelling of each path, as nginx matches `location` on the normalised URI:
//! percent-encoded unreserved characters are decoded (`%65` → `e`), other percent-encodings
//! get upper-case hex and stay encoded (so `%2F` never becomes a separator), dot segments are
//! resolved (`/a/../b` → `/b`), and runs of `/` become one when `merge_slashes` is on. A path
//! that climbs above `/` or holds a broken percent-encoding is refused. The query is never
//! touched. A refused path is a [`Violation`], answered 400.

use crate::validate_request::Violation;

/// The normal form of `path` (a path without its query), or `None` when it is normal already,
/// which is decided in one scan without allocating. Paths that do not start with `/` (the
/// asterisk form) are left as they are.
pub fn normalize(path: &str, merge_slashes: bool) -> Result<Option<String>, Violation> {
    if !path.starts_with('/') || is_normal(path.as_bytes(), merge_slashes) {
        return Ok(None);
    }
    let decoded = decode_unreserved(path)?;
    let resolved = resolve_segments(&decoded, merge_slashes)?;
    Ok((resolved != path).then_some(resolved))
}

/// True when nothing in `path` would change: no `%`, no dot segment, no `//` to merge.
fn is_normal(path: &[u8], merge_slashes: bool) -> bool {
    if path.contains(&b'%') {
        return false;
    }
    let mut segments = path[1..].split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            b"." | b".." => return false,
            b"" if merge_slashes && !last => return false,
            _ => {}
        }
    }
    true
}

/// RFC 3986 unreserved characters: decoding them never changes what a path means (§2.3).
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` of unreserved characters and writes every other one with upper-case hex.
fn decode_unreserved(path: &str) -> Result<String, Violation> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Everything but `%` is copied as it is; the URI parser only let ASCII through.
            let next = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(bytes.len(), |p| i + p);
            out.push_str(&path[i..next]);
            i = next;
            continue;
        }
        let high = bytes.get(i + 1).copied().and_then(hex_value);
        let low = bytes.get(i + 2).copied().and_then(hex_value);
        let (Some(high), Some(low)) = (high, low) else {
            return Err(Violation::PathPercentEncoding);
        };
        let byte = high << 4 | low;
        if is_unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(high)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(low)]));
        }
        i += 3;
    }
    Ok(out)
}

/// Resolves `.` and `..` (RFC 3986 §5.2.4) and, with `merge_slashes`, drops empty segments but
/// a trailing one. A `.` or `..` as the last segment leaves a trailing `/`.
fn resolve_segments(path: &str, merge_slashes: bool) -> Result<String, Violation> {
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = path[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => {}
            ".." => {
                kept.pop().ok_or(Violation::PathAboveRoot)?;
            }
            "" if merge_slashes && !last => continue,
            other => {
                kept.push(other);
                continue;
            }
        }
        if last {
            kept.push("");
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> Result<String, Violation> {
        normalize(path, true).map(|n| n.unwrap_or_else(|| path.to_string()))
    }

    #[test]
    fn normal_paths_are_left_alone_without_allocating() {
        for path in ["/", "/echo/a", "/a/b/", "/a.b/..c/.d", "*"] {
            assert_eq!(normalize(path, true), Ok(None), "{path}");
        }
        assert_eq!(normalize("/a//b", false), Ok(None));
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(normal("/x/../echo/y").as_deref(), Ok("/echo/y"));
        assert_eq!(normal("/echo/../secret").as_deref(), Ok("/secret"));
        assert_eq!(normal("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(normal("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(normal("/a/.").as_deref(), Ok("/a/"));
        assert_eq!(normal("/a/..").as_deref(), Ok("/"));
        assert_eq!(normal("/.").as_deref(), Ok("/"));
    }

    #[test]
    fn climbing_above_the_root_is_refused() {
        for path in ["/..", "/../x", "/a/../../x", "/%2e%2e/x", "/a/%2E%2E/.."] {
            assert_eq!(normal(path), Err(Violation::PathAboveRoot), "{path}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_in_upper_case() {
        assert_eq!(normal("/%65cho/a").as_deref(), Ok("/echo/a"));
        assert_eq!(normal("/a%7e%2D%5f").as_deref(), Ok("/a~-_"));
        assert_eq!(normal("/a%2fb").as_deref(), Ok("/a%2Fb"));
        assert_eq!(normal("/a%2Fb"), Ok("/a%2Fb".to_string()));
        assert_eq!(normal("/a%20b%c3%a9").as_deref(), Ok("/a%20b%C3%A9"));
        assert_eq!(normal("/%2e/x").as_deref(), Ok("/x"));
    }

    #[test]
    fn broken_escapes_are_refused() {
        for path in ["/%", "/a%2", "/a%zz", "/%g0"] {
            assert_eq!(normal(path), Err(Violation::PathPercentEncoding), "{path}");
        }
    }

    #[test]
    fn slashes_are_merged_only_when_asked() {
        assert_eq!(normal("//a///b//").as_deref(), Ok("/a/b/"));
        assert_eq!(normal("//").as_deref(), Ok("/"));
        assert_eq!(
            normalize("/a//b/../c", false),
            Ok(Some("/a//c".to_string()))
        );
        assert_eq!(normalize("/a//../c", false), Ok(Some("/a/c".to_string())));
    }
}
