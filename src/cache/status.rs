//! `Cache-Status` (RFC 9211) and the cache result counted in metrics, from pingora-cache's
//! phase for the request.

use super::policy::NotStored;
use pingora::cache::CachePhase;

/// How the cache handled one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served fresh from the cache.
    Hit,
    /// Served stale (stale-while-revalidate, stale-if-error or max-stale).
    Stale,
    /// Nothing usable stored: fetched from the origin.
    Miss,
    /// A stored response had expired (or the client demanded validation): forwarded to the
    /// origin, which revalidated (304) or replaced it.
    Expired,
    /// The cache did not take part (method, or the request was not cacheable).
    Bypass,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Hit,
        Outcome::Stale,
        Outcome::Miss,
        Outcome::Expired,
        Outcome::Bypass,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Miss => "miss",
            Outcome::Expired => "expired",
            Outcome::Bypass => "bypass",
        }
    }

    pub fn of(phase: &CachePhase) -> Outcome {
        match phase {
            CachePhase::Hit => Outcome::Hit,
            CachePhase::Stale | CachePhase::StaleUpdating => Outcome::Stale,
            CachePhase::Miss => Outcome::Miss,
            CachePhase::Expired | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
                Outcome::Expired
            }
            _ => Outcome::Bypass,
        }
    }
}

/// What the response filter knows when writing `Cache-Status`.
pub struct StatusFacts<'a> {
    pub phase: &'a CachePhase,
    /// Seconds of freshness left on a served stored response (negative when stale).
    pub ttl: Option<i64>,
    /// The status the origin answered when the request was forwarded.
    pub forwarded_status: u16,
    /// The response was written to the cache.
    pub stored: bool,
    /// Why it was not stored, when it was not.
    pub not_stored: Option<NotStored>,
    pub method_not_cacheable: bool,
    /// A hit served from the shared tier (Redis) rather than this instance's cache.
    pub shared_hit: bool,
    /// A stale response served because the origin failed (stale-if-error).
    pub stale_on_error: bool,
}

/// The `Cache-Status` value, e.g. `parapet; hit; ttl=42`, `parapet; hit; ttl=42; detail=shared`
/// (found in the shared tier) or `parapet; fwd=uri-miss; fwd-status=200; stored`.
pub fn cache_status(facts: &StatusFacts<'_>) -> String {
    let mut parts = vec!["parapet".to_string()];
    let forwarded = |parts: &mut Vec<String>, why: &str| {
        parts.push(format!("fwd={why}"));
        parts.push(format!("fwd-status={}", facts.forwarded_status));
    };
    match facts.phase {
        CachePhase::Hit => parts.push("hit".into()),
        CachePhase::Stale | CachePhase::StaleUpdating => {
            parts.push("hit".into());
            if let Some(ttl) = facts.ttl {
                parts.push(format!("ttl={ttl}"));
            }
            parts.push(if facts.stale_on_error {
                "detail=stale-if-error".into()
            } else {
                "detail=stale".into()
            });
            return parts.join("; ");
        }
        CachePhase::Miss => forwarded(&mut parts, "uri-miss"),
        CachePhase::Expired | CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            forwarded(&mut parts, "stale")
        }
        _ if facts.method_not_cacheable => parts.push("fwd=method".into()),
        _ if facts.not_stored.is_some() => forwarded(&mut parts, "miss"),
        _ => parts.push("fwd=bypass".into()),
    }
    if matches!(facts.phase, CachePhase::Hit) {
        if let Some(ttl) = facts.ttl {
            parts.push(format!("ttl={ttl}"));
        }
        if facts.shared_hit {
            parts.push("detail=shared".into());
        }
    }
    if facts.stored {
        parts.push("stored".into());
    }
    if let Some(reason) = facts.not_stored {
        parts.push(format!("detail={}", reason.as_str()));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(phase: &CachePhase) -> StatusFacts<'_> {
        StatusFacts {
            phase,
            ttl: Some(42),
            forwarded_status: 200,
            stored: false,
            not_stored: None,
            method_not_cacheable: false,
            shared_hit: false,
            stale_on_error: false,
        }
    }

    #[test]
    fn statuses_read_like_rfc_9211() {
        assert_eq!(
            cache_status(&facts(&CachePhase::Hit)),
            "parapet; hit; ttl=42"
        );
        let miss = StatusFacts {
            stored: true,
            ..facts(&CachePhase::Miss)
        };
        assert_eq!(
            cache_status(&miss),
            "parapet; fwd=uri-miss; fwd-status=200; stored"
        );
        let revalidated = StatusFacts {
            forwarded_status: 304,
            ..facts(&CachePhase::Revalidated)
        };
        assert_eq!(
            cache_status(&revalidated),
            "parapet; fwd=stale; fwd-status=304"
        );
        let stale = StatusFacts {
            ttl: Some(-3),
            ..facts(&CachePhase::StaleUpdating)
        };
        assert_eq!(cache_status(&stale), "parapet; hit; ttl=-3; detail=stale");
        let post = StatusFacts {
            method_not_cacheable: true,
            ..facts(&CachePhase::Uninit)
        };
        assert_eq!(cache_status(&post), "parapet; fwd=method");
        let shared = StatusFacts {
            shared_hit: true,
            ..facts(&CachePhase::Hit)
        };
        assert_eq!(cache_status(&shared), "parapet; hit; ttl=42; detail=shared");
    }
}
