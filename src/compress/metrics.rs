//! The compression metric handles (`parapet_compression_*`, `parapet_decompression*`),
//! registered in Parapet's registry when the proxy installs the compression module.

use super::{Algorithm, DecodeError};
use crate::metrics::{counter_vec, register, NAMESPACE};
use prometheus::{IntCounter, IntCounterVec, Opts};
use std::sync::LazyLock;

/// Compression metrics, each by [`Algorithm`] index.
pub struct CompressionMetrics {
    pub bytes_in: [IntCounter; 3],
    pub bytes_out: [IntCounter; 3],
    /// Wall time around the compressor calls (each is synchronous CPU work, so it is the CPU
    /// time unless the thread is preempted).
    pub seconds: [prometheus::Counter; 3],
    pub compressions: [IntCounter; 3],
    pub decompressions: [IntCounter; 3],
    /// `[algorithm][DecodeError index]`.
    pub decompression_errors: [[IntCounter; 2]; 3],
}

pub static COMPRESSION: LazyLock<CompressionMetrics> = LazyLock::new(|| {
    let per_algorithm =
        |vec: IntCounterVec| Algorithm::ALL.map(|a| vec.with_label_values(&[a.as_str()]));
    let seconds = prometheus::CounterVec::new(
        Opts::new(
            "compression_seconds_total",
            "Time spent in the compressors (wall time around each synchronous call), by algorithm.",
        )
        .namespace(NAMESPACE),
        &["algorithm"],
    )
    .expect("static metric definition");
    register(Box::new(seconds.clone()));
    let errors = counter_vec(
        "decompression_errors_total",
        "Upstream bodies whose decoding stopped (the response was cut): corrupt or truncated data, or over max_ratio / max_decompressed_size.",
        &["algorithm", "reason"],
    );
    CompressionMetrics {
        bytes_in: per_algorithm(counter_vec(
            "compression_bytes_in_total",
            "Body bytes fed to the compressors, by algorithm.",
            &["algorithm"],
        )),
        bytes_out: per_algorithm(counter_vec(
            "compression_bytes_out_total",
            "Compressed body bytes produced, by algorithm.",
            &["algorithm"],
        )),
        seconds: Algorithm::ALL.map(|a| seconds.with_label_values(&[a.as_str()])),
        compressions: per_algorithm(counter_vec(
            "compressions_total",
            "Responses compressed (one per response), by algorithm.",
            &["algorithm"],
        )),
        decompressions: per_algorithm(counter_vec(
            "decompressions_total",
            "Upstream-compressed responses decoded for clients that do not accept the coding.",
            &["algorithm"],
        )),
        decompression_errors: Algorithm::ALL
            .map(|a| DecodeError::ALL.map(|e| errors.with_label_values(&[a.as_str(), e.as_str()]))),
    }
});
