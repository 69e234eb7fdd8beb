//! gp-lite's own JSON lines: `{"text": ..., "entities": [{"start", "end", "type"}]}`, character
//! offsets with the end exclusive; `entities` is absent on unlabeled data.

use std::path::Path;

use super::json::{self, At, Span};
use super::kind::{FormatKind, Sample, Verdict};
use super::{DataError, Dataset, Example};

/// gp-lite's JSON lines: entities with `start`; also any JSON-lines file whose lines do not
/// decide (no line has a label or an entity), which every JSON-lines reader reads the same.
pub fn kind() -> FormatKind {
    FormatKind {
        name: "jsonl",
        aliases: &["gp"],
        help: "gp-lite JSON lines: {\"text\", \"entities\": [{\"start\", \"end\", \"type\"}]}, \
               character offsets, end exclusive",
        sniff: |sample| match sample {
            Sample::JsonLine(obj) => match json::first_entity(obj) {
                Some(e) if e.contains_key("start") => Verdict::Yes,
                _ => Verdict::Maybe,
            },
            Sample::FirstLine(_) | Sample::Document(_) => Verdict::No,
        },
        read: |path, text, _| parse(path, text),
    }
}

/// Reads a gp-lite JSON-lines file.
pub fn read(path: &Path) -> Result<Dataset, DataError> {
    parse(path, &super::read_text(path)?)
}

/// Parses gp-lite JSON lines; `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Dataset, DataError> {
    json::parse_lines(path, text, example)
}

fn example(at: At, line: &str) -> Result<Example, DataError> {
    let obj = json::parse_object_line(at, line)?;
    let text = json::as_str(at, json::field(at, &obj, "text", "")?, "text")?;
    let chars: Vec<char> = text.chars().collect();
    let mut entities = Vec::new();
    if let Some(list) = json::optional(&obj, "entities") {
        for (k, item) in json::as_array(at, list, "entities")?.iter().enumerate() {
            let path = format!("entities[{k}]");
            let e = json::as_object(at, item, &path)?;
            let get = |name: &str| json::field(at, e, name, &path);
            let start = json::as_index(at, get("start")?, &json::join(&path, "start"))?;
            let end = json::as_index(at, get("end")?, &json::join(&path, "end"))?;
            let ty = json::as_str(at, get("type")?, &json::join(&path, "type"))?;
            let span = Span::Exclusive(start, end);
            entities.push(json::entity(at, &chars, &path, span, ty, None)?);
        }
    }
    Ok(Example {
        text: text.to_string(),
        entities,
        question: None,
    })
}

/// Writes examples as gp-lite JSON lines (the inverse of [`parse`]).
pub fn to_string(examples: &[Example]) -> String {
    let mut out = String::new();
    for ex in examples {
        let entities: Vec<serde_json::Value> = ex
            .entities
            .iter()
            .map(|e| serde_json::json!({"start": e.start, "end": e.end, "type": e.label}))
            .collect();
        let line = serde_json::json!({"text": ex.text, "entities": entities});
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}
