//! Server selection algorithms over a snapshot of candidates. Pure: the caller holds whatever
//! lock protects the smooth-round-robin state.

use std::hash::{Hash, Hasher};

/// What selection needs to know about one server at this instant.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub weight: u32,
    pub in_flight: usize,
    /// Up by both active and passive health, and not already tried by this request.
    pub eligible: bool,
}

/// Weighted least connections with nginx's semantics: the lowest `in_flight / weight` wins
/// (compared by cross-multiplication, so no rounding); ties go to smooth weighted round robin,
/// which keeps an idle pool of weights 3,3,2 splitting 3:3:2.
pub fn least_conn(candidates: &[Candidate], current: &mut [i64]) -> Option<usize> {
    let best = candidates.iter().filter(|c| c.eligible).min_by(|a, b| {
        let left = a.in_flight as u128 * u128::from(b.weight);
        let right = b.in_flight as u128 * u128::from(a.weight);
        left.cmp(&right)
    })?;
    let tied = |c: &Candidate| {
        c.eligible
            && c.in_flight as u128 * u128::from(best.weight)
                == best.in_flight as u128 * u128::from(c.weight)
    };
    smooth_round_robin(candidates, current, tied)
}

/// Smooth weighted round robin over the eligible candidates (nginx's algorithm): each pick adds
/// every weight to its running score, takes the highest, and subtracts the total from it.
pub fn round_robin(candidates: &[Candidate], current: &mut [i64]) -> Option<usize> {
    smooth_round_robin(candidates, current, |c| c.eligible)
}

fn smooth_round_robin(
    candidates: &[Candidate],
    current: &mut [i64],
    include: impl Fn(&Candidate) -> bool,
) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (index, candidate) in candidates.iter().enumerate() {
        if !include(candidate) {
            continue;
        }
        let weight = i64::from(candidate.weight);
        current[index] += weight;
        total += weight;
        if best.is_none_or(|b| current[index] > current[b]) {
            best = Some(index);
        }
    }
    let chosen = best?;
    current[chosen] -= total;
    Some(chosen)
}

/// Weighted random choice; `roll` is a uniform random number.
pub fn random(candidates: &[Candidate], roll: u64) -> Option<usize> {
    let total: u64 = candidates
        .iter()
        .filter(|c| c.eligible)
        .map(|c| u64::from(c.weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = roll % total;
    for (index, candidate) in candidates.iter().enumerate().filter(|(_, c)| c.eligible) {
        let weight = u64::from(candidate.weight);
        if point < weight {
            return Some(index);
        }
        point -= weight;
    }
    None
}

/// Weighted rendezvous hashing: each key maps to one server, and when a server leaves only
/// its own keys move. `identities` are stable per-server values (their addresses).
pub fn hash<I: Hash>(candidates: &[Candidate], identities: &[I], key: &[u8]) -> Option<usize> {
    candidates
        .iter()
        .zip(identities)
        .enumerate()
        .filter(|(_, (c, _))| c.eligible)
        .map(|(index, (candidate, identity))| {
            (index, rendezvous_score(key, identity, candidate.weight))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(index, _)| index)
}

fn rendezvous_score<I: Hash>(key: &[u8], identity: &I, weight: u32) -> f64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    identity.hash(&mut hasher);
    // Map the hash to (0, 1) and apply the weighted score -w / ln(u).
    let unit = ((hasher.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight) / unit.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .map(|&weight| Candidate {
                weight,
                in_flight: 0,
                eligible: true,
            })
            .collect()
    }

    fn count_picks(
        mut pick: impl FnMut() -> Option<usize>,
        servers: usize,
        rounds: usize,
    ) -> Vec<usize> {
        let mut counts = vec![0; servers];
        for _ in 0..rounds {
            counts[pick().expect("a server")] += 1;
        }
        counts
    }

    #[test]
    fn idle_least_conn_splits_by_weight_exactly() {
        let candidates = idle(&[3, 3, 2]);
        let mut current = vec![0; 3];
        let counts = count_picks(|| least_conn(&candidates, &mut current), 3, 80);
        assert_eq!(counts, vec![30, 30, 20]);
    }

    #[test]
    fn least_conn_prefers_the_lowest_load_per_weight() {
        let mut candidates = idle(&[1, 1, 4]);
        candidates[0].in_flight = 1;
        candidates[1].in_flight = 0;
        candidates[2].in_flight = 2; // 2/4 beats 1/1 but not 0/1
        let mut current = vec![0; 3];
        assert_eq!(least_conn(&candidates, &mut current), Some(1));
        candidates[1].in_flight = 1;
        assert_eq!(least_conn(&candidates, &mut current), Some(2));
    }

    #[test]
    fn ineligible_servers_are_never_chosen() {
        let mut candidates = idle(&[5, 1]);
        candidates[0].eligible = false;
        let mut current = vec![0; 2];
        assert_eq!(least_conn(&candidates, &mut current), Some(1));
        assert_eq!(round_robin(&candidates, &mut current), Some(1));
        assert_eq!(random(&candidates, 12345), Some(1));
        assert_eq!(hash(&candidates, &["a", "b"], b"key"), Some(1));
        candidates[1].eligible = false;
        assert_eq!(least_conn(&candidates, &mut current), None);
        assert_eq!(random(&candidates, 1), None);
    }

    #[test]
    fn smooth_round_robin_interleaves_rather_than_bursts() {
        let candidates = idle(&[5, 1, 1]);
        let mut current = vec![0; 3];
        let order: Vec<usize> = (0..7)
            .map(|_| round_robin(&candidates, &mut current).unwrap())
            .collect();
        assert_eq!(order, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn random_follows_weights() {
        let candidates = idle(&[3, 1]);
        let counts = count_picks(
            {
                let mut roll = 0u64;
                move || {
                    roll += 1;
                    random(&candidates, roll)
                }
            },
            2,
            400,
        );
        assert_eq!(counts, vec![300, 100]);
    }

    #[test]
    fn hash_is_stable_and_only_moves_keys_of_a_removed_server() {
        let mut candidates = idle(&[1, 1, 1]);
        let names = ["a:1", "b:1", "c:1"];
        let before: Vec<usize> = (0..300u32)
            .map(|k| hash(&candidates, &names, &k.to_be_bytes()).unwrap())
            .collect();
        assert!((0..3).all(|s| before.contains(&s)));
        candidates[2].eligible = false;
        for (k, &was) in before.iter().enumerate() {
            let now = hash(&candidates, &names, &(k as u32).to_be_bytes()).unwrap();
            if was != 2 {
                assert_eq!(now, was);
            }
        }
    }
}
