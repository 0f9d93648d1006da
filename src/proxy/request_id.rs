//! `X-Request-Id`: passed through when the client sent a sane one, otherwise generated, and
//! sent both upstream and back to the client so one id ties the logs of every hop together.

use http::HeaderMap;

/// Longest client-supplied id accepted; longer ones are replaced.
const MAX_ID_LENGTH: usize = 200;

/// The id for this request.
pub fn for_request(headers: &HeaderMap) -> String {
    headers
        .get(&super::headers::X_REQUEST_ID.0)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_acceptable(id))
        .map_or_else(generate, str::to_string)
}

fn is_acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_LENGTH && id.bytes().all(|b| b.is_ascii_graphic())
}

/// 128 random bits as 32 hex digits.
pub fn generate() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::random::<u128>();
    let mut digits = [0u8; 32];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((bits >> ((31 - i) * 4)) & 0xf) as usize];
    }
    String::from_utf8_lossy(&digits).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sane_client_id_is_kept_and_a_bad_one_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(
            super::super::headers::X_REQUEST_ID.0,
            "abc-123".parse().unwrap(),
        );
        assert_eq!(for_request(&headers), "abc-123");
        headers.insert(
            super::super::headers::X_REQUEST_ID.0,
            "has space".parse().unwrap(),
        );
        let generated = for_request(&headers);
        assert_eq!(generated.len(), 32);
        assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(for_request(&HeaderMap::new()), generated);
    }
}
