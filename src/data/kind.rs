//! What a data format is to the registry (`formats!` in `data/mod.rs`): its names, its help
//! line, a sniffer that recognises its content, and its reader.

use std::path::Path;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::{DataError, Dataset};

/// A data format, as one format file defines it in its `kind()` function.
#[derive(Clone, Copy)]
pub struct FormatKind {
    /// `--format` value and the name shown (`Display`).
    pub name: &'static str,
    /// Other `--format` values for it.
    pub aliases: &'static [&'static str],
    /// One line for `--help`.
    pub help: &'static str,
    /// What the format makes of a sample of a file (see [`Sample`]).
    pub sniff: fn(&Sample) -> Verdict,
    /// Reads the whole text of the file at `path` (named in errors); the join applies to
    /// formats whose tokens are joined into a text (column files), the others ignore it.
    pub read: fn(&Path, &str, Join) -> Result<Dataset, DataError>,
}

/// What a sniffer is shown of a file.
pub enum Sample<'a> {
    /// The first non-blank line of a file that is not JSON lines, leading whitespace trimmed.
    FirstLine(&'a str),
    /// One line of a JSON-lines file (a file whose first non-blank line starts with `{`), parsed.
    /// Each line is shown in turn until a format says [`Verdict::Yes`].
    JsonLine(&'a Map<String, Value>),
    /// A file that is one JSON object spread over several lines (its first line is not a
    /// complete object), parsed whole.
    Document(&'a Map<String, Value>),
}

/// What a sniffer says of a sample. Formats are asked in the registry's order: the first `Yes`
/// decides; when none says `Yes` (of any line), the first `Maybe` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not this format, or nothing in the sample says so.
    No,
    /// This format would read the sample, but the sample does not decide.
    Maybe,
    /// This format.
    Yes,
}

/// How the tokens of a sentence in a column file are joined into its text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Join {
    /// Decided from the file (see the `bio` module's docs).
    #[default]
    Auto,
    /// One space between tokens (words).
    Space,
    /// Nothing between tokens (characters of a text without spaces).
    None,
}

impl FromStr for Join {
    type Err = DataError;

    /// `auto`, `space` or `none`.
    fn from_str(s: &str) -> Result<Join, DataError> {
        match s {
            "auto" => Ok(Join::Auto),
            "space" => Ok(Join::Space),
            "none" => Ok(Join::None),
            _ => Err(DataError::UnknownJoin(s.to_string())),
        }
    }
}
