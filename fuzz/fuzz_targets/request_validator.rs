//! The request validator on arbitrary methods, targets and fields (as an HTTP/1.1, HTTP/2 or
//! HTTP/3 request): a verdict, never a panic; an accepted target is no longer than the limit
//! and holds no space or control byte.
#![no_main]

use http::header::{HeaderName, HeaderValue};
use http::Version;
use libfuzzer_sys::fuzz_target;
use parapet::validate_request::{check, content_length, is_authority};
use pingora::http::RequestHeader;

const MAX_TARGET: usize = 256;
const VERSIONS: [Version; 4] = [
    Version::HTTP_10,
    Version::HTTP_11,
    Version::HTTP_2,
    Version::HTTP_3,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.split(|b| *b == b'\n');
    let (Some(method), Some(target)) = (lines.next(), lines.next()) else {
        return;
    };
    let Ok(mut request) = RequestHeader::build(method, target, None) else {
        return;
    };
    request.set_version(VERSIONS[usize::from(selector) % VERSIONS.len()]);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        let _ = request.append_header(name, value);
    }
    let _ = is_authority(target);
    let _ = content_length(&request.headers);
    if check(&request, MAX_TARGET).is_ok() {
        let raw = request.raw_path();
        assert!(raw.len() <= MAX_TARGET);
        assert!(!raw.iter().any(|b| *b == b' ' || b.is_ascii_control()));
    }
});
