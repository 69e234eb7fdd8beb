//! `gp-lite predict` on a reader model: JSON lines `{"id", "question", "context"}` in, JSON
//! lines `{"id", "answer", "start", "end", "score"}` out (character offsets into the context,
//! `context[start:end] == answer`; `answer` null when the context has no span), in input order,
//! a chunk at a time. A bad line is answered with `{"error", "line"}` and reported on stderr.

use crate::Res;
use gp_lite::answer::{answer, ANSWER_BATCH};
use gp_lite::infer::Workspace;
use gp_lite::predict::Predictor;
use serde_json::{json, Value};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

/// One input line: `(id, question, context)`, or what is wrong with it.
type Line = Result<(Value, String, String), String>;

/// Reads one input line.
fn parse_line(line: &str) -> Line {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("missing string field `{name}`"))
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    Ok((id, field("question")?, field("context")?))
}

/// Answers every line of `input` (stdin when None) into `output` (stdout when None).
pub fn run(
    predictor: &Predictor<f32>,
    pool: &rayon::ThreadPool,
    input: Option<&Path>,
    output: Option<&Path>,
) -> Res<()> {
    let (reader, source): (Box<dyn BufRead>, String) = match input {
        Some(p) => (
            Box::new(std::io::BufReader::new(
                std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?,
            )),
            p.display().to_string(),
        ),
        None => (Box::new(std::io::stdin().lock()), "<stdin>".into()),
    };
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mut ws = Workspace::new();
    let lines: Vec<(usize, String)> = reader
        .lines()
        .enumerate()
        .map(|(i, l)| l.map(|l| (i + 1, l)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{source}: {e}"))?;
    for chunk in lines.chunks(ANSWER_BATCH) {
        let parsed: Vec<(usize, Line)> = chunk
            .iter()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| (*n, parse_line(l)))
            .collect();
        let pairs: Vec<(&str, &str)> = parsed
            .iter()
            .filter_map(|(_, p)| p.as_ref().ok().map(|(_, q, c)| (q.as_str(), c.as_str())))
            .collect();
        let answers = pool.install(|| answer(&predictor.model, &predictor.tokenizer, &pairs, &mut ws))?;
        let mut answers = answers.into_iter();
        for (lineno, p) in parsed {
            let line = match p {
                Ok((id, _, _)) => match answers.next().expect("one answer a pair") {
                    Some(a) => {
                        json!({"id": id, "answer": a.answer, "start": a.start, "end": a.end, "score": a.score})
                    }
                    None => json!({"id": id, "answer": null, "start": null, "end": null, "score": null}),
                },
                Err(what) => {
                    eprintln!("error: {source}:{lineno}: {what}");
                    json!({"error": what, "line": lineno})
                }
            };
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    Ok(())
}
