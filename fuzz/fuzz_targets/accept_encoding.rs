//! Accept-Encoding negotiation on arbitrary field values: the chosen coding is one the client
//! accepts (or identity), never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use parapet::compress::{negotiate, AcceptEncoding, Algorithm, Encoding};

const SERVER_ORDER: [Algorithm; 3] = [Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = AcceptEncoding::parse(text.split('\n'));
    for algorithm in SERVER_ORDER {
        let _ = parsed.weight(algorithm);
    }
    if let Encoding::Compressed(algorithm) = negotiate(Some(text), &SERVER_ORDER) {
        assert!(
            AcceptEncoding::parse([text]).accepts(algorithm),
            "{algorithm:?} chosen for {text:?}"
        );
    }
});
