//! Field access and span checks shared by the JSON readers, each error naming `FILE:LINE`.

use std::path::Path;

use serde_json::{Map, Value};

use super::{DataError, Dataset, Entity, Example, Problem};

/// Where in which file a value was read.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub path: &'a Path,
    pub line: usize,
}

impl At<'_> {
    pub fn err(&self, problem: Problem) -> DataError {
        DataError::at(self.path, self.line, problem)
    }

    fn wrong(&self, field: &str, expected: &'static str) -> DataError {
        self.err(Problem::WrongType {
            field: field.to_string(),
            expected,
        })
    }
}

/// serde_json's message without its " at line L column C" suffix, plus the column when the
/// value is one line of the file.
pub(super) fn json_message(e: &serde_json::Error, with_column: bool) -> String {
    let full = e.to_string();
    let msg = full.rfind(" at line ").map_or(&full[..], |i| &full[..i]);
    if with_column {
        format!("{msg} (column {})", e.column())
    } else {
        msg.to_string()
    }
}

/// One line of a JSON-lines file, as an object.
pub(super) fn parse_object_line(at: At, line: &str) -> Result<Map<String, Value>, DataError> {
    match serde_json::from_str(line) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(at.err(Problem::MalformedJson("expected an object `{...}`".into()))),
        Err(e) => Err(at.err(Problem::MalformedJson(json_message(&e, true)))),
    }
}

/// The first entity of a JSON line's `entities` list, when it is an object (for sniffers).
pub(super) fn first_entity(obj: &Map<String, Value>) -> Option<&Map<String, Value>> {
    optional(obj, "entities")?.as_array()?.first()?.as_object()
}

/// A required field.
pub(super) fn field<'v>(
    at: At,
    obj: &'v Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<&'v Value, DataError> {
    obj.get(name)
        .ok_or_else(|| at.err(Problem::MissingField(join(path, name))))
}

/// An optional field; JSON `null` counts as absent.
pub(super) fn optional<'v>(obj: &'v Map<String, Value>, name: &str) -> Option<&'v Value> {
    obj.get(name).filter(|v| !v.is_null())
}

pub(super) fn as_str<'v>(at: At, v: &'v Value, field: &str) -> Result<&'v str, DataError> {
    v.as_str().ok_or_else(|| at.wrong(field, "a string"))
}

pub(super) fn as_index(at: At, v: &Value, field: &str) -> Result<usize, DataError> {
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| at.wrong(field, "a non-negative integer"))
}

pub(super) fn as_array<'v>(at: At, v: &'v Value, field: &str) -> Result<&'v [Value], DataError> {
    v.as_array()
        .map(|a| a.as_slice())
        .ok_or_else(|| at.wrong(field, "an array"))
}

pub(super) fn as_object<'v>(at: At, v: &'v Value, field: &str) -> Result<&'v Map<String, Value>, DataError> {
    v.as_object().ok_or_else(|| at.wrong(field, "an object"))
}

/// `path.name`, or `name` at the top level.
pub(super) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// A span as the file gives it, either end-inclusive (`[start, end]`) or end-exclusive.
#[derive(Clone, Copy)]
pub(super) enum Span {
    Inclusive(usize, usize),
    Exclusive(usize, usize),
}

impl Span {
    fn show(self) -> String {
        match self {
            Span::Inclusive(s, e) => format!("[{s}, {e}]"),
            Span::Exclusive(s, e) => format!("[{s}, {e})"),
        }
    }
}

/// Checks `span` against the text's characters (and the mention when the file gives one) and
/// returns the entity with an exclusive end.
pub(super) fn entity(
    at: At,
    chars: &[char],
    field: &str,
    span: Span,
    label: &str,
    mention: Option<&str>,
) -> Result<Entity, DataError> {
    let (start, end, empty) = match span {
        Span::Inclusive(s, e) => (s, e.saturating_add(1), false),
        Span::Exclusive(s, e) => (s, e, s == e),
    };
    let (s, e) = match span {
        Span::Inclusive(s, e) | Span::Exclusive(s, e) => (s, e),
    };
    if s > e {
        let field = field.to_string();
        return Err(at.err(Problem::StartAfterEnd {
            field,
            start: s,
            end: e,
        }));
    }
    if empty {
        let field = field.to_string();
        return Err(at.err(Problem::EmptySpan {
            field,
            span: span.show(),
        }));
    }
    if end > chars.len() {
        return Err(at.err(Problem::SpanOutsideText {
            field: field.to_string(),
            span: span.show(),
            len: chars.len(),
        }));
    }
    if let Some(mention) = mention {
        let found: String = chars[start..end].iter().collect();
        if found != mention {
            return Err(at.err(Problem::MentionMismatch {
                field: field.to_string(),
                span: span.show(),
                found,
                expected: mention.to_string(),
            }));
        }
    }
    Ok(Entity {
        start,
        end,
        label: label.to_string(),
    })
}

/// The non-blank lines of a text with their 1-based numbers.
pub(super) fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty())
}

/// Parses a JSON-lines file: `example` turns each non-blank line into an [`Example`].
pub(super) fn parse_lines(
    path: &Path,
    text: &str,
    example: impl Fn(At, &str) -> Result<Example, DataError>,
) -> Result<Dataset, DataError> {
    let mut examples = Vec::new();
    let mut lines = Vec::new();
    for (line, s) in numbered_lines(text) {
        examples.push(example(At { path, line }, s)?);
        lines.push(line);
    }
    Dataset::new(path, examples, lines)
}
