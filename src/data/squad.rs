//! SQuAD-format reading comprehension (CMRC 2018, DRCD): one JSON document
//! `{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "answers":
//! [{"text", "answer_start"}]}]}]}]}` (pretty-printed or on one line), `answer_start` a character
//! offset into the context.
//!
//! Each question is one [`Example`]: the context as its text, the [`Question`] (with every
//! reference answer's text, for the metric), and its answers located in the context as entities
//! of the one label [`ANSWER_LABEL`]. A published `answer_start` can be wrong (CMRC 2018 dev has
//! 200 such answers): an answer is located at the occurrence of its text nearest to
//! `answer_start` (repaired when that is not `answer_start`), and skipped when its text is not
//! in the context; [`Dataset::answers`] counts both. Structural problems (a missing or mistyped
//! field) are errors naming the file, the line of the question's id (or of the document's start)
//! and the field's JSON path, e.g. `data[0].paragraphs[2].qas[1].question`.

use std::path::Path;

use serde_json::{Map, Value};

use super::json::{self, At};
use super::kind::{FormatKind, Sample, Verdict};
use super::{AnswerCounts, DataError, Dataset, Entity, Example, Problem, Question};

/// The label of every answer span.
pub const ANSWER_LABEL: &str = "answer";

/// SQuAD: a JSON object with a `data` array.
pub fn kind() -> FormatKind {
    FormatKind {
        name: "squad",
        aliases: &["mrc"],
        help: "SQuAD-format reading comprehension (CMRC 2018, DRCD): {\"data\": [{\"paragraphs\": \
               [{\"context\", \"qas\": [{\"id\", \"question\", \"answers\": [{\"text\", \
               \"answer_start\"}]}]}]}]}",
        sniff: |sample| match sample {
            Sample::JsonLine(obj) | Sample::Document(obj) if obj.get("data").is_some_and(Value::is_array) => {
                Verdict::Yes
            }
            _ => Verdict::No,
        },
        read: |path, text, _| parse(path, text),
    }
}

/// Reads a SQuAD-format file.
pub fn read(path: &Path) -> Result<Dataset, DataError> {
    parse(path, &super::read_text(path)?)
}

/// Parses SQuAD-format text; `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Dataset, DataError> {
    let start_line = json::numbered_lines(text).next().map_or(1, |(l, _)| l);
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        DataError::at(
            path,
            e.line().max(1),
            Problem::MalformedJson(json::json_message(&e, true)),
        )
    })?;
    let at = At {
        path,
        line: start_line,
    };
    let Value::Object(doc) = doc else {
        return Err(at.err(Problem::MalformedJson("expected an object `{...}`".into())));
    };
    let mut reader = Reader {
        path,
        text,
        cursor: 0,
        line: 1,
        counts: AnswerCounts::default(),
        examples: Vec::new(),
        lines: Vec::new(),
    };
    for (a, article) in json::as_array(at, json::field(at, &doc, "data", "")?, "data")?
        .iter()
        .enumerate()
    {
        let a_path = format!("data[{a}]");
        let article = json::as_object(at, article, &a_path)?;
        let paragraphs = json::field(at, article, "paragraphs", &a_path)?;
        let p_field = format!("{a_path}.paragraphs");
        for (p, paragraph) in json::as_array(at, paragraphs, &p_field)?.iter().enumerate() {
            reader.paragraph(at, paragraph, &format!("{p_field}[{p}]"))?;
        }
    }
    let mut data = Dataset::new(path, reader.examples, reader.lines)?;
    data.answers = Some(reader.counts);
    Ok(data)
}

/// The state of a pass over one document.
struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    /// Byte offset in `text` after the last question id found, and its line.
    cursor: usize,
    line: usize,
    counts: AnswerCounts,
    examples: Vec<Example>,
    lines: Vec<usize>,
}

impl Reader<'_> {
    /// The questions of one paragraph.
    fn paragraph(&mut self, at: At, v: &Value, field: &str) -> Result<(), DataError> {
        let paragraph = json::as_object(at, v, field)?;
        let context = json::field(at, paragraph, "context", field)?;
        let context = json::as_str(at, context, &json::join(field, "context"))?;
        let chars: Vec<char> = context.chars().collect();
        let qas_field = json::join(field, "qas");
        let qas = json::as_array(at, json::field(at, paragraph, "qas", field)?, &qas_field)?;
        for (q, qa) in qas.iter().enumerate() {
            let q_field = format!("{qas_field}[{q}]");
            let qa = json::as_object(at, qa, &q_field)?;
            let id = json::as_str(
                at,
                json::field(at, qa, "id", &q_field)?,
                &json::join(&q_field, "id"),
            )?;
            let at = At {
                path: self.path,
                line: self.line_of(id),
            };
            let question = json::field(at, qa, "question", &q_field)?;
            let question = json::as_str(at, question, &json::join(&q_field, "question"))?;
            let example = self.question(at, qa, &q_field, context, &chars, id, question)?;
            self.examples.push(example);
            self.lines.push(at.line);
        }
        Ok(())
    }

    /// One question with its answers located in the context.
    #[allow(clippy::too_many_arguments)]
    fn question(
        &mut self,
        at: At,
        qa: &Map<String, Value>,
        field: &str,
        context: &str,
        chars: &[char],
        id: &str,
        question: &str,
    ) -> Result<Example, DataError> {
        let a_field = json::join(field, "answers");
        let answers = match json::optional(qa, "answers") {
            Some(v) => json::as_array(at, v, &a_field)?,
            None => &[],
        };
        let (mut texts, mut entities) = (Vec::new(), Vec::new());
        for (k, answer) in answers.iter().enumerate() {
            let field = format!("{a_field}[{k}]");
            let answer = json::as_object(at, answer, &field)?;
            let text = json::field(at, answer, "text", &field)?;
            let text = json::as_str(at, text, &json::join(&field, "text"))?;
            let start_field = json::join(&field, "answer_start");
            let start = json::field(at, answer, "answer_start", &field)?;
            let start = start.as_i64().ok_or_else(|| {
                at.err(Problem::WrongType {
                    field: start_field,
                    expected: "an integer",
                })
            })?;
            texts.push(text.to_string());
            let answer: Vec<char> = text.chars().collect();
            match locate(chars, &answer, start) {
                Some(s) => {
                    if s as i64 == start {
                        self.counts.kept += 1;
                    } else {
                        self.counts.repaired += 1;
                    }
                    entities.push(Entity {
                        start: s,
                        end: s + answer.len(),
                        label: ANSWER_LABEL.to_string(),
                    });
                }
                None => self.counts.skipped += 1,
            }
        }
        entities.sort();
        entities.dedup();
        Ok(Example {
            text: context.to_string(),
            entities,
            question: Some(Question {
                id: id.to_string(),
                text: question.to_string(),
                answers: texts,
            }),
        })
    }

    /// The line of the next occurrence of `id` as a JSON string (questions come in file order);
    /// the line of the last one found when it is not there (an id written with escapes).
    fn line_of(&mut self, id: &str) -> usize {
        let quoted = serde_json::to_string(id).expect("a string serialises");
        if let Some(i) = self.text[self.cursor..].find(&quoted) {
            let end = self.cursor + i;
            self.line += self.text[self.cursor..end].matches('\n').count();
            self.cursor = end;
        }
        self.line
    }
}

/// The character offset of the occurrence of `answer` in `context` nearest to `start` (the
/// earlier of two equally near), or None when it does not occur (or is empty).
pub fn locate(context: &[char], answer: &[char], start: i64) -> Option<usize> {
    if answer.is_empty() || answer.len() > context.len() {
        return None;
    }
    (0..=context.len() - answer.len())
        .filter(|&s| context[s..s + answer.len()] == *answer)
        .min_by_key(|&s| (s as i128 - i128::from(start)).unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn locate_prefers_answer_start_then_the_nearest_occurrence() {
        let c = chars("北京是首都，北京很大，北京");
        assert_eq!(locate(&c, &chars("北京"), 6), Some(6));
        assert_eq!(locate(&c, &chars("北京"), 8), Some(6));
        assert_eq!(locate(&c, &chars("北京"), 10), Some(11));
        assert_eq!(locate(&c, &chars("北京"), -1), Some(0));
        assert_eq!(locate(&c, &chars("上海"), 0), None);
        assert_eq!(locate(&c, &chars(""), 0), None);
    }

    #[test]
    fn reads_pretty_printed_and_counts_repairs() {
        let text = r#"{
  "version": "v1",
  "data": [{"title": "t", "paragraphs": [
    {"context": "甲乙丙甲乙", "qas": [
      {"id": "q1", "question": "哪里？",
       "answers": [{"text": "甲乙", "answer_start": 3}, {"text": "甲乙", "answer_start": 2},
                   {"text": "丁", "answer_start": 0}]}
    ]}
  ]}]
}"#;
        let d = parse(Path::new("f.json"), text).unwrap();
        assert_eq!(d.examples.len(), 1);
        assert_eq!(d.lines, vec![5]);
        let ex = &d.examples[0];
        assert_eq!(ex.text, "甲乙丙甲乙");
        let q = ex.question.as_ref().unwrap();
        assert_eq!((q.id.as_str(), q.text.as_str()), ("q1", "哪里？"));
        assert_eq!(q.answers, vec!["甲乙", "甲乙", "丁"]);
        // answer_start 3 is right; 2 is repaired to 3 (nearer than 0): one entity after dedup.
        assert_eq!(ex.entities.len(), 1);
        assert_eq!((ex.entities[0].start, ex.entities[0].end), (3, 5));
        let counts = d.answers.unwrap();
        assert_eq!(
            counts,
            AnswerCounts {
                kept: 1,
                repaired: 1,
                skipped: 1
            }
        );
        assert_eq!(d.labels, vec![ANSWER_LABEL]);
    }

    #[test]
    fn extreme_answers_are_counted_not_fatal() {
        let doc = |text: &str, start: &str| {
            format!(
                "{{\"data\": [{{\"paragraphs\": [{{\"context\": \"a😀b\", \"qas\": [{{\"id\": \"x\", \"question\": \"q\", \"answers\": [{{\"text\": {text}, \"answer_start\": {start}}}]}}]}}]}}]}}"
            )
        };
        for (text, start, found) in [
            ("\"😀\"", "-9223372036854775808", Some((1, 2))),
            ("\"b\"", "9223372036854775807", Some((2, 3))),
            ("\"\"", "0", None),
            ("\"a😀bc\"", "0", None),
            ("\"z\"", "-1", None),
        ] {
            let d = parse(Path::new("f.json"), &doc(text, start)).unwrap();
            let span = d.examples[0].entities.first().map(|e| (e.start, e.end));
            assert_eq!(span, found, "{text} at {start}");
            let a = d.answers.unwrap();
            assert_eq!(a.kept + a.repaired + a.skipped, 1);
        }
        // Answers absent or null: a question without references.
        let none = "{\"data\": [{\"paragraphs\": [{\"context\": \"ab\", \"qas\": [{\"id\": \"x\", \"question\": \"q\", \"answers\": null}]}]}]}";
        let d = parse(Path::new("f.json"), none).unwrap();
        assert!(d.examples[0].question.as_ref().unwrap().answers.is_empty());
        // A start beyond i64 is a typed error, not a panic.
        let e = parse(Path::new("f.json"), &doc("\"a\"", "1e30"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("answer_start` must be an integer"), "{e}");
    }

    #[test]
    fn malformed_input_names_file_line_and_field() {
        let err = |text: &str| parse(Path::new("f.json"), text).unwrap_err().to_string();
        let e = err("{\"data\": [{\"paragraphs\": [{\"context\": \"ab\", \"qas\": [\n{\"id\": \"x\", \"question\": 3}]}]}]}");
        assert_eq!(
            e,
            "f.json:2: field `data[0].paragraphs[0].qas[0].question` must be a string"
        );
        let e = err("{\"data\": [{\"paragraphs\": [{\"qas\": []}]}]}");
        assert_eq!(e, "f.json:1: missing field `data[0].paragraphs[0].context`");
        let e = err("{\"data\": [{\"paragraphs\": [{\"context\": \"ab\", \"qas\": [{\"id\": \"x\", \"question\": \"q\", \"answers\": [{\"text\": \"a\", \"answer_start\": \"0\"}]}]}]}]}");
        assert!(
            e.ends_with("field `data[0].paragraphs[0].qas[0].answers[0].answer_start` must be an integer"),
            "{e}"
        );
        let e = err("{\"data\": [\n{oops}]}");
        assert!(e.starts_with("f.json:2: malformed JSON"), "{e}");
        assert_eq!(err("{\"data\": []}"), "f.json:1: no examples");
    }
}
