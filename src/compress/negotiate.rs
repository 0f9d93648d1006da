//! `Accept-Encoding` negotiation (RFC 9110 §12.5.3): which coding a client gets. Pure, no I/O,
//! no allocation.

use http::header::{HeaderMap, ACCEPT_ENCODING};

/// A content coding Parapet can produce and undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Br,
    Zstd,
    Gzip,
}

impl Algorithm {
    /// Every algorithm, in the order of the default `algorithms` list and of metric handles.
    pub const ALL: [Algorithm; 3] = [Algorithm::Br, Algorithm::Zstd, Algorithm::Gzip];

    /// The content-coding token (`Content-Encoding`, `Accept-Encoding`), also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Br => "br",
            Algorithm::Zstd => "zstd",
            Algorithm::Gzip => "gzip",
        }
    }

    /// The algorithm a coding token names, case-insensitively; `x-gzip` is gzip
    /// (RFC 9110 §8.4.1.3). `None` for anything else, `identity` included.
    pub fn from_token(token: &str) -> Option<Algorithm> {
        let token = token.trim();
        if token.eq_ignore_ascii_case("br") {
            Some(Algorithm::Br)
        } else if token.eq_ignore_ascii_case("zstd") {
            Some(Algorithm::Zstd)
        } else if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Some(Algorithm::Gzip)
        } else {
            None
        }
    }

    /// Position in [`Algorithm::ALL`] (indexes per-algorithm arrays such as metric handles).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a response body is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    Identity,
    Compressed(Algorithm),
}

impl Encoding {
    /// `identity`, `br`, `zstd` or `gzip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Compressed(algorithm) => algorithm.as_str(),
        }
    }
}

/// Weights are kept in thousandths: a qvalue has at most three decimals (RFC 9110 §12.4.2).
const FULL_WEIGHT: u16 = 1000;

/// A parsed `Accept-Encoding`: the weight the client gave each coding Parapet knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AcceptEncoding {
    /// Explicit weights by [`Algorithm::index`]; `None` when the coding is not listed.
    codings: [Option<u16>; 3],
    identity: Option<u16>,
    /// The `*` entry: the weight of every coding not listed by name.
    any: Option<u16>,
}

impl AcceptEncoding {
    /// Parses every `Accept-Encoding` field value (several lines are one comma-joined list).
    /// No value at all means the client stated nothing: Parapet then sends identity, which
    /// RFC 9110 §12.5.3 allows (any coding would be acceptable, none is preferred).
    /// Malformed elements (a bad qvalue) are ignored.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> AcceptEncoding {
        let mut accept = AcceptEncoding::default();
        for element in values.into_iter().flat_map(|v| v.split(',')) {
            let mut parts = element.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if coding.is_empty() {
                continue;
            }
            let Some(weight) = weight_of(parts) else {
                continue;
            };
            let slot = if coding == "*" {
                &mut accept.any
            } else if coding.eq_ignore_ascii_case("identity") {
                &mut accept.identity
            } else if let Some(algorithm) = Algorithm::from_token(coding) {
                &mut accept.codings[algorithm.index()]
            } else {
                continue;
            };
            // A coding listed twice keeps its best weight.
            *slot = Some(slot.map_or(weight, |w| w.max(weight)));
        }
        accept
    }

    /// Parses the request's `Accept-Encoding` lines; lines that are not text are ignored.
    pub fn from_headers(headers: &HeaderMap) -> AcceptEncoding {
        AcceptEncoding::parse(
            headers
                .get_all(ACCEPT_ENCODING)
                .iter()
                .filter_map(|v| v.to_str().ok()),
        )
    }

    /// The client's weight for `algorithm` in thousandths; 0 means not acceptable.
    pub fn weight(&self, algorithm: Algorithm) -> u16 {
        self.codings[algorithm.index()].or(self.any).unwrap_or(0)
    }

    /// True when the client accepts a body in `algorithm` (listed, or covered by `*`, with a
    /// weight above 0).
    pub fn accepts(&self, algorithm: Algorithm) -> bool {
        self.weight(algorithm) > 0
    }

    /// True unless the client refuses an identity body (`identity;q=0`, or `*;q=0` without
    /// `identity` listed).
    pub fn accepts_identity(&self) -> bool {
        self.identity.or(self.any).is_none_or(|weight| weight > 0)
    }

    /// The best of `algorithms` by the client's weights, ties going to the earlier in
    /// `algorithms`; identity when none is acceptable, or when the client weighs identity
    /// (by name or through `*`) strictly above the best coding.
    ///
    /// Identity is also the answer when the client forbids it (`identity;q=0`, or `*;q=0`
    /// with no acceptable coding): a proxy has nothing better to send, and the origin's
    /// answer is passed on rather than turned into a 406.
    pub fn preferred(&self, algorithms: &[Algorithm]) -> Encoding {
        let mut best: Option<(Algorithm, u16)> = None;
        for &algorithm in algorithms {
            let weight = self.weight(algorithm);
            if weight > 0 && best.is_none_or(|(_, best_weight)| weight > best_weight) {
                best = Some((algorithm, weight));
            }
        }
        match best {
            Some((_, weight)) if self.identity.or(self.any).is_some_and(|w| w > weight) => {
                Encoding::Identity
            }
            Some((algorithm, _)) => Encoding::Compressed(algorithm),
            None => Encoding::Identity,
        }
    }
}

/// The coding a client with this `Accept-Encoding` value gets, from `algorithms` in server
/// preference order (see [`AcceptEncoding::preferred`]). Pure: the cache calls it to name the
/// variant a request maps to.
pub fn negotiate(accept_encoding: Option<&str>, algorithms: &[Algorithm]) -> Encoding {
    AcceptEncoding::parse(accept_encoding).preferred(algorithms)
}

/// The weight of an element from its parameters: `q=` (name case-insensitive), 1 when absent;
/// `None` when the qvalue is malformed. Other parameters are ignored.
fn weight_of<'a>(parameters: impl Iterator<Item = &'a str>) -> Option<u16> {
    for parameter in parameters {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("q") {
            return parse_qvalue(value.trim());
        }
    }
    Some(FULL_WEIGHT)
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'));
    match whole {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(FULL_WEIGHT),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Algorithm::{Br, Gzip, Zstd};
    use Encoding::{Compressed, Identity};

    const DEFAULT_ORDER: [Algorithm; 3] = [Br, Zstd, Gzip];

    #[test]
    fn negotiation_follows_the_clients_weights_then_the_servers_order() {
        let table: &[(Option<&str>, Encoding)] = &[
            // Chrome, Firefox, curl --compressed.
            (Some("gzip, deflate, br, zstd"), Compressed(Br)),
            (Some("gzip, deflate, br"), Compressed(Br)),
            (Some("deflate, gzip"), Compressed(Gzip)),
            (Some("gzip;q=1, br;q=0.5"), Compressed(Gzip)),
            (Some("br;q=0, gzip"), Compressed(Gzip)),
            (Some("br;q=0"), Identity),
            (Some("zstd;q=0.9, br;q=0.8, gzip;q=0.95"), Compressed(Gzip)),
            (Some("zstd, gzip"), Compressed(Zstd)),
            // No header: nothing stated, identity. An empty value: no coding wanted.
            (None, Identity),
            (Some(""), Identity),
            (Some("identity"), Identity),
            (Some("deflate, compress"), Identity),
            // `*` covers every coding not listed by name.
            (Some("*"), Compressed(Br)),
            (Some("*;q=0.5, gzip"), Compressed(Gzip)),
            (Some("*;q=0.5, br;q=0"), Compressed(Zstd)),
            (Some("br;q=0, zstd;q=0, gzip;q=0, *"), Identity),
            // Identity weighted above every coding wins; an implicit identity never does.
            (Some("gzip;q=0.5, identity"), Identity),
            (Some("gzip;q=0.5, identity;q=0.5"), Compressed(Gzip)),
            (Some("gzip;q=0.5"), Compressed(Gzip)),
            // Identity forbidden with nothing acceptable: identity is still served.
            (Some("identity;q=0"), Identity),
            (Some("*;q=0"), Identity),
            (Some("identity;q=0, gzip"), Compressed(Gzip)),
            // Case, spacing, `x-gzip`, other parameters, odd qvalues.
            (Some("GZIP ; Q=0.3 , BR ; q=0.2"), Compressed(Gzip)),
            (Some("x-gzip"), Compressed(Gzip)),
            (Some("br;level=5;q=0.1"), Compressed(Br)),
            (Some("br;q=1.000, gzip;q=1"), Compressed(Br)),
            (Some("br;q=0.001"), Compressed(Br)),
            (Some("br;q=2, gzip;q=0.1"), Compressed(Gzip)),
            (Some("br;q=0.1234, gzip;q=0.1"), Compressed(Gzip)),
            (Some("br;q=, gzip"), Compressed(Gzip)),
            (Some(" , ,br"), Compressed(Br)),
            // Listed twice: the best weight counts.
            (Some("br;q=0, br;q=0.5"), Compressed(Br)),
        ];
        for (header, expected) in table {
            assert_eq!(
                negotiate(*header, &DEFAULT_ORDER),
                *expected,
                "Accept-Encoding: {header:?}"
            );
        }
    }

    #[test]
    fn ties_go_to_the_configured_order() {
        assert_eq!(negotiate(Some("br, gzip"), &[Gzip, Br]), Compressed(Gzip));
        assert_eq!(negotiate(Some("*"), &[Zstd, Gzip]), Compressed(Zstd));
        assert_eq!(negotiate(Some("gzip, br"), &[Br]), Compressed(Br));
        assert_eq!(negotiate(Some("gzip"), &[Br, Zstd]), Identity);
        assert_eq!(negotiate(Some("gzip"), &[]), Identity);
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let accept = AcceptEncoding::parse(["gzip;q=0.5", "br;q=0.9"]);
        assert_eq!(accept.preferred(&DEFAULT_ORDER), Compressed(Br));
        assert!(accept.accepts(Gzip));
        assert!(!accept.accepts(Zstd));
    }

    #[test]
    fn acceptance_counts_star_but_not_zero_weights() {
        let accept = AcceptEncoding::parse(["gzip;q=0, *;q=0.1"]);
        assert!(!accept.accepts(Gzip));
        assert!(accept.accepts(Br));
        assert_eq!(accept.weight(Zstd), 100);
        assert!(!AcceptEncoding::parse(None).accepts(Gzip));
    }

    #[test]
    fn qvalues_follow_the_grammar() {
        assert_eq!(parse_qvalue("1"), Some(1000));
        assert_eq!(parse_qvalue("1.0"), Some(1000));
        assert_eq!(parse_qvalue("0.5"), Some(500));
        assert_eq!(parse_qvalue("0.05"), Some(50));
        assert_eq!(parse_qvalue("0"), Some(0));
        assert_eq!(parse_qvalue("0."), Some(0));
        assert_eq!(parse_qvalue("1.001"), None);
        assert_eq!(parse_qvalue("0.0001"), None);
        assert_eq!(parse_qvalue("-1"), None);
        assert_eq!(parse_qvalue(".5"), None);
    }
}
