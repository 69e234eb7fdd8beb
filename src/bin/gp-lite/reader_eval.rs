//! `gp-lite eval` on a reader model: CMRC 2018 EM and F1 over the questions of a SQuAD-format
//! file, overall and by question length (characters), as a table or JSON.

use crate::Res;
use gp_lite::answer::{evaluate_reader, questions};
use gp_lite::cmrc::{score, MrcScores};
use gp_lite::data::Dataset;
use gp_lite::predict::Predictor;

/// Question-length groups (characters): `[lo, hi)`.
const LENGTHS: &[(usize, usize)] = &[(0, 10), (10, 15), (15, 20), (20, usize::MAX)];

/// Prints the reader's EM/F1 on `data`.
pub fn run(predictor: &Predictor<f32>, pool: &rayon::ThreadPool, data: &Dataset, as_json: bool) -> Res<()> {
    let (all, answers) = pool.install(|| evaluate_reader(&predictor.model, &predictor.tokenizer, data))?;
    let (pairs, refs) = questions(data);
    let by_length: Vec<((usize, usize), MrcScores)> = LENGTHS
        .iter()
        .map(|&(lo, hi)| {
            let s = score(
                pairs
                    .iter()
                    .zip(&refs)
                    .zip(&answers)
                    .filter(|(((q, _), _), _)| (lo..hi).contains(&q.chars().count()))
                    .map(|((_, r), a)| (&r[..], a.as_ref().map(|a| a.answer.as_str()))),
            );
            ((lo, hi), s)
        })
        .collect();
    let name = |(lo, hi): (usize, usize)| {
        if hi == usize::MAX {
            format!("question >= {lo} chars")
        } else {
            format!("question {lo}-{} chars", hi - 1)
        }
    };
    if let Some(a) = data.answers {
        eprintln!(
            "{}: answers {} as published, {} repaired, {} skipped (not in the context)",
            data.path.display(),
            a.kept,
            a.repaired,
            a.skipped
        );
    }
    if as_json {
        let groups: serde_json::Map<String, serde_json::Value> = by_length
            .iter()
            .map(|&(g, s)| (name(g), serde_json::to_value(s).expect("scores serialise")))
            .collect();
        let obj = serde_json::json!({
            "em": all.em, "f1": all.f1, "questions": all.questions, "unanswered": all.unanswered,
            "by_question_length": groups,
        });
        println!("{obj}");
    } else {
        println!("{:<24} {:>7} {:>7} {:>9}", "questions", "EM", "F1", "count");
        for (g, s) in by_length
            .iter()
            .map(|&(g, s)| (name(g), s))
            .chain([("all".to_string(), all)])
        {
            println!("{g:<24} {:>7.2} {:>7.2} {:>9}", s.em, s.f1, s.questions);
        }
    }
    Ok(())
}
