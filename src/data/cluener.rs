//! CLUENER2020: JSON lines `{"text": ..., "label": {TYPE: {MENTION: [[start, end], ...]}}}`,
//! character offsets with the end inclusive; `label` is absent on unlabeled data.

use std::path::Path;

use super::json::{self, At, Span};
use super::kind::{FormatKind, Sample, Verdict};
use super::{DataError, Dataset, Example};

/// CLUENER: JSON lines with a `label` field.
pub fn kind() -> FormatKind {
    FormatKind {
        name: "cluener",
        aliases: &[],
        help: "CLUENER2020 JSON lines: {\"text\", \"label\": {TYPE: {MENTION: [[start, end]]}}}, \
               character offsets, end inclusive",
        sniff: |sample| match sample {
            Sample::JsonLine(obj) if json::optional(obj, "label").is_some() => Verdict::Yes,
            _ => Verdict::No,
        },
        read: |path, text, _| parse(path, text),
    }
}

/// Reads a CLUENER file.
pub fn read(path: &Path) -> Result<Dataset, DataError> {
    parse(path, &super::read_text(path)?)
}

/// Parses CLUENER text; `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Dataset, DataError> {
    json::parse_lines(path, text, example)
}

fn example(at: At, line: &str) -> Result<Example, DataError> {
    let obj = json::parse_object_line(at, line)?;
    let text = json::as_str(at, json::field(at, &obj, "text", "")?, "text")?;
    let chars: Vec<char> = text.chars().collect();
    let mut entities = Vec::new();
    if let Some(label) = json::optional(&obj, "label") {
        for (ty, mentions) in json::as_object(at, label, "label")? {
            let ty_field = format!("label.{ty}");
            for (mention, spans) in json::as_object(at, mentions, &ty_field)? {
                let m_field = format!("{ty_field}.{mention}");
                for (k, span) in json::as_array(at, spans, &m_field)?.iter().enumerate() {
                    let field = format!("{m_field}[{k}]");
                    let span = pair(at, span, &field)?;
                    entities.push(json::entity(at, &chars, &field, span, ty, Some(mention))?);
                }
            }
        }
    }
    Ok(Example {
        text: text.to_string(),
        entities,
        question: None,
    })
}

/// `[start, end]`, end inclusive.
fn pair(at: At, v: &serde_json::Value, field: &str) -> Result<Span, DataError> {
    let items = json::as_array(at, v, field)?;
    if items.len() != 2 {
        return Err(at.err(super::Problem::WrongType {
            field: field.to_string(),
            expected: "a pair [start, end]",
        }));
    }
    let start = json::as_index(at, &items[0], &format!("{field}[0]"))?;
    let end = json::as_index(at, &items[1], &format!("{field}[1]"))?;
    Ok(Span::Inclusive(start, end))
}
