//! `X-Request-Id`: passed through when the client sent a sane one, otherwise generated, and
//! sent both upstream and back to the client so one id ties the logs of every hop together.

use http::HeaderMap;

pub const HEADER: &str = crate::fields::X_REQUEST_ID;
/// Longest client-supplied id accepted; longer ones are replaced.
const MAX_ID_LENGTH: usize = 200;

/// The id for this request.
pub fn for_request(headers: &HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_acceptable(id))
        .map_or_else(generate, str::to_string)
}

fn is_acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LENGTH && id.bytes().all(|b| b.is_ascii_graphic())
}

/// 128 random bits as 32 hex digits.
pub fn generate() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_a_bad_one_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, "abc-123".parse().unwrap());
        assert_eq!(for_request(&headers), "abc-123");
        headers.insert(HEADER, "has space".parse().unwrap());
        let generated = for_request(&headers);
        assert_eq!(generated.len(), 32);
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(for_request(&HeaderMap::new()), generated);
    }
}
