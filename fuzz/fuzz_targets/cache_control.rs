//! Cache-Control and the other freshness fields, request and response side: parsing and the
//! storability decision never panic, whatever the field values.
#![no_main]

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use parapet::cache::policy::{storable, RequestDirectives};
use pingora::http::ResponseHeader;
use std::time::{Duration, SystemTime};

/// Response fields the input's lines are given to, in turn.
const RESPONSE_FIELDS: [&str; 7] = [
    "cache-control",
    "expires",
    "date",
    "age",
    "vary",
    "set-cookie",
    "last-modified",
];

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let mut request = HeaderMap::new();
    for name in ["cache-control", "pragma"] {
        if let Some(value) = lines.next().and_then(|l| HeaderValue::from_bytes(l).ok()) {
            request.append(name, value);
        }
    }
    let directives = RequestDirectives::parse(&request);
    let _ = directives.forbids_stale();
    let Ok(mut response) = ResponseHeader::build(200, None) else {
        return;
    };
    for (line, name) in lines.zip(RESPONSE_FIELDS.iter().cycle()) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            let _ = response.append_header(HeaderName::from_static(name), value);
        }
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Ok(freshness) = storable(&Method::GET, &request, &response, None, now) {
        let _ = freshness.lifetime.checked_add(freshness.initial_age);
    }
});
