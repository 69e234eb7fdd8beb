//! Entity-level precision, recall and F1 (method.md §5): a predicted (text, type, start, end)
//! counts only if it equals a gold entity. Micro figures over all types and per-type figures.
//!
//! Empty sets: P = R = F1 = 1 when there are neither gold nor predicted entities (nothing to
//! find, nothing wrongly found), and P = R = F1 = 0 when exactly one of the two is empty.

use serde::Serialize;
use std::collections::HashSet;

/// An entity: (text index, type, start token, end token inclusive).
pub type Entity = (usize, usize, usize, usize);

/// Counts and the figures derived from them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Prf {
    /// Number of distinct gold entities.
    pub gold: usize,
    /// Number of distinct predicted entities.
    pub predicted: usize,
    /// Predicted entities equal to a gold one.
    pub correct: usize,
    /// `correct / predicted`, in `[0, 1]`.
    pub precision: f64,
    /// `correct / gold`, in `[0, 1]`.
    pub recall: f64,
    /// Harmonic mean of precision and recall, `2 correct / (gold + predicted)`.
    pub f1: f64,
}

impl Prf {
    /// Figures from counts, with the empty-set convention of the module docs.
    pub fn from_counts(gold: usize, predicted: usize, correct: usize) -> Prf {
        let (precision, recall, f1) = match (gold, predicted) {
            (0, 0) => (1.0, 1.0, 1.0),
            (0, _) | (_, 0) => (0.0, 0.0, 0.0),
            (g, p) => {
                let c = correct as f64;
                (c / p as f64, c / g as f64, 2.0 * c / (g + p) as f64)
            }
        };
        Prf {
            gold,
            predicted,
            correct,
            precision,
            recall,
            f1,
        }
    }
}

/// Micro figures and one entry per type `0..num_types`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Figures over all entities of every type.
    pub micro: Prf,
    /// Figures of each type, indexed by type.
    pub per_type: Vec<Prf>,
}

/// Compares predicted with gold entities (duplicates count once). Types must be `< num_types`.
pub fn evaluate(gold: &[Entity], predicted: &[Entity], num_types: usize) -> Report {
    let g: HashSet<Entity> = gold.iter().copied().collect();
    let p: HashSet<Entity> = predicted.iter().copied().collect();
    let mut counts = vec![(0usize, 0usize, 0usize); num_types];
    for e in &g {
        assert!(e.1 < num_types, "evaluate: gold type {} >= {num_types}", e.1);
        counts[e.1].0 += 1;
    }
    for e in &p {
        assert!(e.1 < num_types, "evaluate: predicted type {} >= {num_types}", e.1);
        counts[e.1].1 += 1;
        if g.contains(e) {
            counts[e.1].2 += 1;
        }
    }
    let per_type: Vec<Prf> = counts
        .iter()
        .map(|&(g, p, c)| Prf::from_counts(g, p, c))
        .collect();
    let (tg, tp, tc) = counts
        .iter()
        .fold((0, 0, 0), |acc, &(g, p, c)| (acc.0 + g, acc.1 + p, acc.2 + c));
    Report {
        micro: Prf::from_counts(tg, tp, tc),
        per_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed() {
        let gold = [(0, 0, 1, 2), (0, 1, 4, 4), (1, 0, 0, 3), (1, 1, 2, 2)];
        // one exact hit of each type, one wrong boundary (type 0), one wrong type, one duplicate
        let pred = [
            (0, 0, 1, 2),
            (0, 1, 4, 4),
            (1, 0, 0, 2),
            (1, 0, 2, 2),
            (0, 0, 1, 2),
        ];
        let r = evaluate(&gold, &pred, 3);
        assert_eq!((r.micro.gold, r.micro.predicted, r.micro.correct), (4, 4, 2));
        assert_eq!((r.micro.precision, r.micro.recall, r.micro.f1), (0.5, 0.5, 0.5));
        // type 0: gold 2, predicted 3, correct 1
        let t0 = r.per_type[0];
        assert_eq!((t0.gold, t0.predicted, t0.correct), (2, 3, 1));
        assert!((t0.precision - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(t0.recall, 0.5);
        assert!((t0.f1 - 0.4).abs() < 1e-15);
        // type 1: gold 2, predicted 1, correct 1
        let t1 = r.per_type[1];
        assert_eq!((t1.precision, t1.recall), (1.0, 0.5));
        assert!((t1.f1 - 2.0 / 3.0).abs() < 1e-15);
        // type 2: nothing either side
        assert_eq!(r.per_type[2], Prf::from_counts(0, 0, 0));
        assert_eq!(r.per_type[2].f1, 1.0);
    }

    #[test]
    fn empty_sets() {
        let both = evaluate(&[], &[], 1).micro;
        assert_eq!((both.precision, both.recall, both.f1), (1.0, 1.0, 1.0));
        let no_pred = evaluate(&[(0, 0, 1, 1)], &[], 1).micro;
        assert_eq!((no_pred.precision, no_pred.recall, no_pred.f1), (0.0, 0.0, 0.0));
        let no_gold = evaluate(&[], &[(0, 0, 1, 1)], 1).micro;
        assert_eq!((no_gold.precision, no_gold.recall, no_gold.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn serializes() {
        let r = evaluate(&[(0, 0, 1, 1)], &[(0, 0, 1, 1)], 1);
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains("\"micro\":{\"gold\":1,\"predicted\":1,\"correct\":1,\"precision\":1.0"));
    }
}
