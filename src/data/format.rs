//! The data formats, detection by content, and the one entry point [`read_dataset`].

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde_json::Value;

use super::{bio, cluener, cmeee, json, jsonl, DataError, Dataset, Problem};

/// A data format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CLUENER2020 JSON lines (`label` map, inclusive ends).
    Cluener,
    /// CMeEE JSON array or lines (`start_idx`/`end_idx` inclusive).
    Cmeee,
    /// CoNLL-style column file with BIO/IOB1/BIOES tags.
    Conll,
    /// gp-lite JSON lines (`start`/`end` exclusive).
    Jsonl,
}

impl FromStr for Format {
    type Err = DataError;

    /// `cluener`, `cmeee`, `conll` or `bio`, `jsonl` or `gp` (any case).
    fn from_str(s: &str) -> Result<Format, DataError> {
        match s.to_ascii_lowercase().as_str() {
            "cluener" => Ok(Format::Cluener),
            "cmeee" => Ok(Format::Cmeee),
            "conll" | "bio" => Ok(Format::Conll),
            "jsonl" | "gp" => Ok(Format::Jsonl),
            _ => Err(DataError::UnknownFormat(s.to_string())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Cluener => "cluener",
            Format::Cmeee => "cmeee",
            Format::Conll => "conll",
            Format::Jsonl => "jsonl",
        })
    }
}

/// How to read a data file.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// The format; `None`: detected from the content.
    pub format: Option<Format>,
    /// How a column file's tokens are joined into text.
    pub join: bio::Join,
}

/// Reads `path` in `format`, or in the format detected from its content when `None`.
pub fn read_dataset(path: impl AsRef<Path>, format: Option<Format>) -> Result<Dataset, DataError> {
    read_dataset_with(
        path,
        ReadOptions {
            format,
            ..Default::default()
        },
    )
}

/// Reads `path` as `opts` say.
pub fn read_dataset_with(path: impl AsRef<Path>, opts: ReadOptions) -> Result<Dataset, DataError> {
    let (path, format) = (path.as_ref(), opts.format);
    let text = super::read_text(path)?;
    let format = match format {
        Some(f) => f,
        None => detect_text(path, &text)?,
    };
    match format {
        Format::Cluener => cluener::parse(path, &text),
        Format::Cmeee => cmeee::parse(path, &text),
        Format::Conll => bio::parse_with(path, &text, opts.join),
        Format::Jsonl => jsonl::parse(path, &text),
    }
}

/// The format of a file, from its content (see [`read_dataset`]).
pub fn detect(path: impl AsRef<Path>) -> Result<Format, DataError> {
    let path = path.as_ref();
    detect_text(path, &super::read_text(path)?)
}

/// `[` first: a CMeEE array. `{` first: JSON lines, told apart by the first line that decides:
/// a `label` field means CLUENER, an entity with `start_idx` CMeEE, one with `start` gp-lite
/// (lines with no entities do not decide; a file of only those reads the same either way and is
/// taken as gp-lite). Otherwise a line of two or more columns: a column file.
fn detect_text(path: &Path, text: &str) -> Result<Format, DataError> {
    let Some((first_line, first)) = json::numbered_lines(text).next() else {
        return Err(DataError::at(path, 1, Problem::Empty));
    };
    let first = first.trim_start();
    if first.starts_with('[') {
        return Ok(Format::Cmeee);
    }
    if first.starts_with('{') {
        for (line, s) in json::numbered_lines(text) {
            let at = json::At { path, line };
            if let Some(format) = json_line_format(&json::parse_object_line(at, s)?) {
                return Ok(format);
            }
        }
        return Ok(Format::Jsonl);
    }
    if first.split_whitespace().count() >= 2 {
        return Ok(Format::Conll);
    }
    let problem = Problem::Undetected("neither JSON nor a column file");
    Err(DataError::at(path, first_line, problem))
}

fn json_line_format(obj: &serde_json::Map<String, Value>) -> Option<Format> {
    if json::optional(obj, "label").is_some() {
        return Some(Format::Cluener);
    }
    let entity = json::optional(obj, "entities")?.as_array()?.first()?;
    let entity = entity.as_object()?;
    if entity.contains_key("start_idx") {
        Some(Format::Cmeee)
    } else if entity.contains_key("start") {
        Some(Format::Jsonl)
    } else {
        None
    }
}
