//! CMeEE (CBLUE): a JSON array, or JSON lines, of `{"text": ..., "entities": [{"start_idx",
//! "end_idx", "type", "entity"}]}`, character offsets with the end inclusive; `entities` is absent
//! on unlabeled data.

use std::path::Path;

use serde_json::{Map, Value};

use super::json::{self, At, Span};
use super::kind::{FormatKind, Sample, Verdict};
use super::{DataError, Dataset, Example, Problem};

/// CMeEE: a JSON array, or JSON lines whose entities have `start_idx`.
pub fn kind() -> FormatKind {
    FormatKind {
        name: "cmeee",
        aliases: &[],
        help: "CMeEE JSON array or lines: {\"text\", \"entities\": [{\"start_idx\", \"end_idx\", \
               \"type\"}]}, character offsets, end inclusive",
        sniff: |sample| match sample {
            Sample::FirstLine(line) if line.starts_with('[') => Verdict::Yes,
            Sample::JsonLine(obj) if json::first_entity(obj).is_some_and(|e| e.contains_key("start_idx")) => {
                Verdict::Yes
            }
            _ => Verdict::No,
        },
        read: |path, text, _| parse(path, text),
    }
}

/// Reads a CMeEE file.
pub fn read(path: &Path) -> Result<Dataset, DataError> {
    parse(path, &super::read_text(path)?)
}

/// Parses CMeEE text (array or JSON lines); `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Dataset, DataError> {
    let mut examples = Vec::new();
    let mut lines = Vec::new();
    if text.trim_start().starts_with('[') {
        let items = match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => items,
            Ok(_) => unreachable!("a text starting with `[` parses only as an array"),
            Err(e) => {
                let at = At { path, line: e.line() };
                return Err(at.err(Problem::MalformedJson(json::json_message(&e, true))));
            }
        };
        for (item, line) in items.iter().zip(element_lines(text)) {
            let at = At { path, line };
            examples.push(example(at, json::as_object(at, item, "(array element)")?)?);
            lines.push(line);
        }
    } else {
        for (line, s) in json::numbered_lines(text) {
            let at = At { path, line };
            examples.push(example(at, &json::parse_object_line(at, s)?)?);
            lines.push(line);
        }
    }
    Dataset::new(path, examples, lines)
}

fn example(at: At, obj: &Map<String, Value>) -> Result<Example, DataError> {
    let text = json::as_str(at, json::field(at, obj, "text", "")?, "text")?;
    let chars: Vec<char> = text.chars().collect();
    let mut entities = Vec::new();
    if let Some(list) = json::optional(obj, "entities") {
        for (k, item) in json::as_array(at, list, "entities")?.iter().enumerate() {
            let path = format!("entities[{k}]");
            let e = json::as_object(at, item, &path)?;
            let get = |name: &str| json::field(at, e, name, &path);
            let start = json::as_index(at, get("start_idx")?, &json::join(&path, "start_idx"))?;
            let end = json::as_index(at, get("end_idx")?, &json::join(&path, "end_idx"))?;
            let ty = json::as_str(at, get("type")?, &json::join(&path, "type"))?;
            let mention = json::as_str(at, get("entity")?, &json::join(&path, "entity"))?;
            let span = Span::Inclusive(start, end);
            entities.push(json::entity(at, &chars, &path, span, ty, Some(mention))?);
        }
    }
    Ok(Example {
        text: text.to_string(),
        entities,
        question: None,
    })
}

/// The 1-based line on which each element of a top-level JSON array begins.
fn element_lines(text: &str) -> Vec<usize> {
    let (mut line, mut depth) = (1, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    // true after the array's `[` and after each `,` at depth 1: the next value is an element
    let mut expect = false;
    let mut starts = Vec::new();
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if c.is_whitespace() {
            continue;
        }
        if depth == 1 && c == ',' {
            expect = true;
            continue;
        }
        if depth == 1 && expect && c != ']' {
            starts.push(line);
            expect = false;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                expect = depth == 1;
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_lines_follow_objects_and_skip_strings() {
        let text = "[\n  {\"text\": \"a{[,\\\"\", \"x\": [1, 2]},\n  {\"text\": \"b\"},\n 7, \"s\"\n]";
        assert_eq!(element_lines(text), vec![2, 3, 4, 4]);
    }
}
