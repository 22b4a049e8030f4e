//! Reciprocal-rank fusion of ranked result lists. Pure.

use std::collections::HashMap;

/// The usual RRF constant (Cormack et al.): dampens the weight of the very top ranks.
pub const RRF_K: f64 = 60.0;

/// Fuse ranked lists of ids: score(id) = Σ 1 / (k + rank), rank starting at 1. Returns (id, score)
/// best first; ties keep the order of first appearance.
pub fn rrf(lists: &[&[i64]], k: f64, limit: usize) -> Vec<(i64, f64)> {
    let mut scores: HashMap<i64, (f64, usize)> = HashMap::new();
    let mut seen = 0usize;
    for list in lists {
        for (rank, id) in list.iter().enumerate() {
            let e = scores.entry(*id).or_insert_with(|| {
                seen += 1;
                (0.0, seen)
            });
            e.0 += 1.0 / (k + rank as f64 + 1.0);
        }
    }
    let mut out: Vec<(i64, f64, usize)> =
        scores.into_iter().map(|(id, (s, o))| (id, s, o)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    out.into_iter()
        .take(limit)
        .map(|(id, s, _)| (id, s))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_in_both_lists_win() {
        let fused = rrf(&[&[1, 2, 3], &[3, 4, 1]], RRF_K, 10);
        let ids: Vec<i64> = fused.iter().map(|f| f.0).collect();
        assert_eq!(ids[..2], [1, 3]);
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn limit_and_single_list_keep_order() {
        let fused = rrf(&[&[7, 8, 9]], RRF_K, 2);
        assert_eq!(fused.iter().map(|f| f.0).collect::<Vec<_>>(), [7, 8]);
        assert!((fused[0].1 - 1.0 / 61.0).abs() < 1e-12);
    }

    #[test]
    fn empty_lists_fuse_to_nothing() {
        assert!(rrf(&[&[], &[]], RRF_K, 5).is_empty());
    }
}
