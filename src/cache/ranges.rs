//! Byte ranges served from a stored partial response (RFC 9110 §14, RFC 9111 §3.3): a stored
//! `206` holds one byte range of a representation; a request for bytes inside it is answered
//! from it, anything else goes to the origin. Ranges of a stored complete response are served
//! by pingora's range filter, which handles single, multiple and suffix ranges and 416.

use super::policy::StoredPart;
use http::header::{HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, IF_RANGE, RANGE};
use pingora::http::ResponseHeader;
use pingora::proxy::RangeType;

/// The bytes `first..=last` a request's single `Range` asks for, resolved against a
/// representation of `complete` bytes; `None` for no range, several, or an unsatisfiable one.
pub fn requested(headers: &HeaderMap, complete: u64) -> Option<(u64, u64)> {
    let value = headers.get(RANGE)?.to_str().ok()?;
    let (unit, spec) = value.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') || complete == 0 {
        return None;
    }
    let (first, last) = spec.trim().split_once('-')?;
    let number = |t: &str| {
        let t = t.trim();
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<u64>().ok())
            .flatten()
    };
    match (number(first), number(last)) {
        (Some(first), last) if first < complete => {
            let last = last.map_or(complete - 1, |l| l.min(complete - 1));
            (first <= last).then_some((first, last))
        }
        (None, Some(suffix)) if suffix > 0 && first.trim().is_empty() => {
            Some((complete.saturating_sub(suffix), complete - 1))
        }
        _ => None,
    }
}

/// The bytes of `part` a request asks for, when they all lie inside it. `If-Range` sends the
/// request to the origin (the stored part cannot prove it is the current representation).
pub fn covered(request: &HeaderMap, part: StoredPart) -> Option<(u64, u64)> {
    if request.contains_key(IF_RANGE) {
        return None;
    }
    let (first, last) = requested(request, part.complete)?;
    (part.first <= first && last <= part.last).then_some((first, last))
}

/// Turns the stored `206` header into the answer for bytes `first..=last` and returns the
/// range to read, relative to the stored body.
pub fn answer_from_part(
    response: &mut ResponseHeader,
    part: StoredPart,
    (first, last): (u64, u64),
) -> pingora::Result<RangeType> {
    response.insert_header(
        CONTENT_RANGE,
        format!("bytes {first}-{last}/{}", part.complete),
    )?;
    response.insert_header(CONTENT_LENGTH, last - first + 1)?;
    let start = usize::try_from(first - part.first).unwrap_or(usize::MAX);
    let end = usize::try_from(last - part.first + 1).unwrap_or(usize::MAX);
    Ok(RangeType::Single(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RANGE, value.parse().expect("value"));
        headers
    }

    #[test]
    fn single_ranges_resolve_against_the_complete_length() {
        assert_eq!(requested(&range("bytes=2-4"), 10), Some((2, 4)));
        assert_eq!(requested(&range("bytes=2-"), 10), Some((2, 9)));
        assert_eq!(requested(&range("bytes=-3"), 10), Some((7, 9)));
        assert_eq!(requested(&range("bytes=-30"), 10), Some((0, 9)));
        assert_eq!(requested(&range("bytes=5-100"), 10), Some((5, 9)));
        for other in [
            "bytes=10-",
            "bytes=4-2",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-0",
        ] {
            assert_eq!(requested(&range(other), 10), None, "{other}");
        }
    }

    #[test]
    fn only_ranges_inside_the_stored_part_are_covered() {
        let part = StoredPart {
            first: 4,
            last: 9,
            complete: 10,
        };
        assert_eq!(covered(&range("bytes=-5"), part), Some((5, 9)));
        assert_eq!(covered(&range("bytes=4-6"), part), Some((4, 6)));
        assert_eq!(covered(&range("bytes=0-5"), part), None);
        assert_eq!(covered(&HeaderMap::new(), part), None);
        let mut conditional = range("bytes=4-6");
        conditional.insert(IF_RANGE, "\"x\"".parse().expect("value"));
        assert_eq!(covered(&conditional, part), None);
    }

    #[test]
    fn the_answer_names_the_absolute_range_and_reads_relative_to_the_part() {
        let part = StoredPart {
            first: 4,
            last: 9,
            complete: 10,
        };
        let mut response = ResponseHeader::build(206, None).expect("status");
        let read = answer_from_part(&mut response, part, (5, 7)).expect("answer");
        assert_eq!(read, RangeType::Single(1..4));
        assert_eq!(
            response.headers.get(CONTENT_RANGE).map(|v| v.as_bytes()),
            Some(&b"bytes 5-7/10"[..])
        );
        assert_eq!(
            response.headers.get(CONTENT_LENGTH).map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
    }
}
