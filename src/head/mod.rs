//! Heads: what turns the encoder output into entities. Each head owns its parameters, its
//! scratch ([`HeadCache`]), its loss and gradient, its decoding to token spans and, if it needs
//! one, its own input ([`SpanHead::samples`]); the trainer and predict only see [`SpanHead`].
//!
//! A head is one file that defines its [`HeadKind`] (name, help line, settings, limits and
//! constructor) in a `kind()` function, plus its name in the `heads!` line below.

pub mod bio_tags;
pub mod buffer;
pub mod cache;
pub mod config;
pub mod crf_chain;
pub mod kind;
pub mod rope;
pub mod score_head;
pub mod span_head;

pub use buffer::Buffer;
pub use cache::HeadCache;
pub use config::{HeadConfig, HeadError, HeadOptions, Settings};
pub use kind::{HeadKind, HeadShape};
pub use rope::RopeTable;
pub use score_head::{ScoreCache, ScoreHead, Scored, ScoredCache};
pub use span_head::SpanHead;

use crate::scalar::Scalar;
use rand::RngCore;

/// Declares the head modules and lists them, in `--head`'s order, in [`kinds`].
macro_rules! heads {
    ($($head:ident),* $(,)?) => {
        $(pub mod $head;)*

        /// Every registered head, in `--head`'s order (the first is the default).
        pub fn kinds<T: Scalar>() -> Vec<HeadKind<T>> {
            vec![$($head::kind::<T>()),*]
        }
    };
}

// The registry: one name a head.
heads!(global_pointer, efficient, additive, crf, reader);

pub use crf::{Crf, CrfConfig};
pub use efficient::EfficientGlobalPointer;
pub use global_pointer::{GlobalPointer, GlobalPointerConfig};

/// The registered head called `name`.
pub fn kind<T: Scalar>(name: &str) -> Result<HeadKind<T>, HeadError> {
    kinds::<T>()
        .into_iter()
        .find(|k| k.name == name)
        .ok_or_else(|| HeadError::Unknown {
            kind: name.to_string(),
            known: names().join(", "),
        })
}

/// The names `--head` accepts, with their help lines.
pub fn names() -> Vec<&'static str> {
    kinds::<f64>().iter().map(|k| k.name).collect()
}

/// The head called `name` with its settings taken from the command line's `opts`.
pub fn from_options(name: &str, opts: &HeadOptions) -> Result<HeadConfig, HeadError> {
    let k = kind::<f64>(name)?;
    Ok(HeadConfig {
        kind: name.to_string(),
        settings: (k.settings)(opts),
    })
}

/// Checks `config` for a head of `shape` before anything is allocated: a known head whose
/// settings parse and fit; returns a lower bound of its parameter count.
pub fn check(config: &HeadConfig, shape: HeadShape) -> Result<u128, HeadError> {
    (kind::<f64>(&config.kind)?.check)(&config.settings, shape)
}

/// A fresh head as `config` says, for `shape`.
pub fn build<T: Scalar>(
    config: &HeadConfig,
    shape: HeadShape,
    rng: &mut dyn RngCore,
) -> Result<Box<dyn SpanHead<T>>, HeadError> {
    let k = kind::<T>(&config.kind)?;
    (k.check)(&config.settings, shape)?;
    (k.build)(&config.settings, shape, rng)
}

/// Whether the head `config` names can output overlapping entities.
pub fn nested(config: &HeadConfig) -> Result<bool, HeadError> {
    Ok(kind::<f64>(&config.kind)?.nested)
}
#[cfg(test)]
mod tests {
    //! The span-score heads (gp, egp, additive) composed with the loss (through the SpanHead
    //! trait): gradient checks in f64, with and without RoPE.
    use super::*;
    use crate::gradcheck::{fixed_random, GradCheck};
    use crate::nn::Linear;
    use crate::span::{span_is_valid, Bounds, GoldSpan};
    use ndarray::Array2;
    use ndarray::{Ix1, Ix2};

    const N: usize = 6;
    const H: usize = 5;

    fn inputs() -> (Array2<f64>, Array2<bool>, Array2<bool>, Vec<Vec<GoldSpan>>) {
        let h = fixed_random(Ix2(2 * N, H), 21);
        let starts = ndarray::array![
            [false, true, true, true, true, false],
            [false, true, true, false, false, false]
        ];
        // Token 2 of text 0 may start but not end an entity (a word-piece boundary).
        let ends = ndarray::array![
            [false, true, false, true, true, false],
            [false, true, true, false, false, false]
        ];
        let gold = vec![vec![(0, 1, 3), (2, 3, 3), (1, 1, 4)], vec![(1, 1, 2)]];
        (h, starts, ends, gold)
    }

    fn heads(rope: bool) -> Vec<Box<dyn SpanHead<f64>>> {
        let (c, d) = (3, 4);
        let gp = GlobalPointer::from_dense(
            Linear::from_arrays(
                fixed_random(Ix2(c * 2 * d, H), 1),
                fixed_random(Ix1(c * 2 * d), 2),
            ),
            c,
            d,
            rope,
        );
        let egp = EfficientGlobalPointer::from_dense(
            Linear::from_arrays(fixed_random(Ix2(2 * d, H), 3), fixed_random(Ix1(2 * d), 4)),
            Linear::from_arrays(fixed_random(Ix2(2 * c, 2 * d), 5), fixed_random(Ix1(2 * c), 6)),
            rope,
        );
        let add = additive::Additive::from_dense(
            Linear::from_arrays(fixed_random(Ix2(d, 2 * H), 7), fixed_random(Ix1(d), 8)),
            Linear::from_arrays(fixed_random(Ix2(c, d), 9), fixed_random(Ix1(c), 10)),
            rope,
        );
        vec![Box::new(Scored(gp)), Box::new(Scored(egp)), Box::new(Scored(add))]
    }

    fn loss(head: &dyn SpanHead<f64>, h: &Array2<f64>, cache: &mut HeadCache) -> f64 {
        let (_, starts, ends, gold) = inputs();
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        head.loss(h.view(), N, bounds, &gold, cache)
    }

    #[test]
    fn gradcheck_heads_with_loss() {
        for rope in [true, false] {
            for mut head in heads(rope) {
                let (h, _, _, _) = inputs();
                let mut cache = HeadCache::new();
                loss(head.as_ref(), &h, &mut cache);
                head.zero_grad();
                let dh = head.backward(h.view(), &mut cache);
                let gc = GradCheck::default();
                let mut scratch = HeadCache::new();
                gc.params(head.as_mut(), |m| loss(m, &h, &mut scratch))
                    .assert_below(1e-6);
                gc.input("h", &h, &dh, |x| loss(head.as_ref(), x, &mut scratch))
                    .assert_below(1e-6);
            }
        }
    }

    #[test]
    fn decode_respects_bounds() {
        let (h, starts, ends, _) = inputs();
        let bounds = Bounds {
            starts: starts.view(),
            ends: ends.view(),
        };
        for head in heads(true) {
            let spans = head.decode(h.view(), N, bounds, -1e9, &mut HeadCache::new());
            let mut count = 0;
            for (b, ps) in spans.iter().enumerate() {
                for p in ps {
                    assert!(span_is_valid(&bounds.row(b), p.start, p.end), "{p:?}");
                    count += 1;
                }
            }
            // Every valid span of every type scores above -1e9: text 0 has starts {1,2,3,4},
            // ends {1,3,4}: (1,1),(1,3),(1,4),(2,3),(2,4),(3,3),(3,4),(4,4) = 8; text 1: 3.
            assert_eq!(count, 3 * (8 + 3));
        }
    }

    #[test]
    fn config_json_is_backward_compatible() {
        let old = r#"{"kind": "gp", "head_size": 64, "rope": true}"#;
        let c: HeadConfig = serde_json::from_str(old).unwrap();
        let gp = GlobalPointerConfig {
            head_size: 64,
            rope: true,
        };
        assert_eq!(c, HeadConfig::new("gp", &gp));
        assert_eq!(c.parse::<GlobalPointerConfig>().unwrap(), gp);
        let crf = HeadConfig::new(
            "crf",
            &CrfConfig {
                transition_lr_multiplier: 100.0,
            },
        );
        let back: HeadConfig = serde_json::from_str(&serde_json::to_string(&crf).unwrap()).unwrap();
        assert_eq!(back, crf);
        // A CRF config without the multiplier (older models) takes the default.
        let bare: HeadConfig = serde_json::from_str(r#"{"kind": "crf"}"#).unwrap();
        let shape = HeadShape {
            hidden: 4,
            types: 2,
            std: 0.02,
        };
        assert!(check(&bare, shape).is_ok());
    }

    #[test]
    fn registry_names_every_head_once_and_refuses_what_it_does_not_know() {
        assert_eq!(names(), vec!["gp", "egp", "additive", "crf", "reader"]);
        let shape = HeadShape {
            hidden: 8,
            types: 3,
            std: 0.02,
        };
        let mut rng = rand::rngs::mock::StepRng::new(1, 1);
        // The reader has one type, the answer, and refuses more.
        let reader = from_options("reader", &HeadOptions::default()).unwrap();
        let e = check(&reader, shape).unwrap_err().to_string();
        assert!(e.contains("one label"), "{e}");
        for name in names() {
            let types = if name == "reader" { 1 } else { 3 };
            let shape = HeadShape { types, ..shape };
            let config = from_options(name, &HeadOptions::default()).unwrap();
            assert_eq!(config.kind, name);
            let head = build::<f64>(&config, shape, &mut rng).unwrap();
            assert_eq!(head.config(), config, "{name}: config round trip");
            assert_eq!(head.num_types(), types);
            let mut count = 0u128;
            head.visit("", &mut |_, v| {
                if v.ndim() == 2 {
                    count += v.len() as u128
                }
            });
            assert!(
                check(&config, shape).unwrap() <= count,
                "{name}: the bound is a lower bound"
            );
        }
        let e = from_options("nope", &HeadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown head `nope`") && e.contains("gp, egp, additive, crf, reader"),
            "{e}"
        );
        let unknown_field: HeadConfig =
            serde_json::from_str(r#"{"kind": "gp", "head_size": 8, "rope": true, "bias": 1}"#).unwrap();
        let e = check(&unknown_field, shape).unwrap_err().to_string();
        assert!(e.contains("bias"), "{e}");
        let odd: HeadConfig =
            serde_json::from_str(r#"{"kind": "egp", "head_size": 7, "rope": true}"#).unwrap();
        let e = check(&odd, shape).unwrap_err().to_string();
        assert!(e.contains("head.head_size") && e.contains("even"), "{e}");
        assert!(!nested(&HeadConfig::new(
            "crf",
            &CrfConfig {
                transition_lr_multiplier: 1.0
            }
        ))
        .unwrap());
    }
}
