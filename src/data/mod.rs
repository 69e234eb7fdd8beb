//! Training and evaluation data: one reader per format, all producing [`Example`]s with character
//! spans, and format detection by content.
//!
//! Every problem in a file is a [`DataError`] naming `FILE:LINE`; nothing is dropped silently.
//!
//! A format is one file that defines its [`FormatKind`] (name, aliases, help line, content
//! sniffer, reader) in a `kind()` function, plus a `Variant => module` entry in the `formats!`
//! line below: `--format`'s values and help, parsing of format names and detection by content
//! follow from the registry.

mod dataset;
mod error;
mod json;
mod kind;

pub(crate) use dataset::read_text;
pub use dataset::{AnswerCounts, Dataset, Entity, Example, Question};
pub use error::{DataError, Problem};
pub use kind::{FormatKind, Join, Sample, Verdict};

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Declares the format modules and the [`Format`] enum, one variant a module, in the order
/// detection asks them.
macro_rules! formats {
    ($($variant:ident => $module:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// A data format: one of the registry's.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Format {
            $(
                #[doc = concat!("The format of [`", stringify!($module), "`].")]
                $variant,
            )*
        }

        impl Format {
            /// Every registered format, in the registry's order.
            pub const ALL: &'static [Format] = &[$(Format::$variant),*];

            /// The format's definition (names, help, sniffer, reader).
            pub fn kind(self) -> FormatKind {
                match self {
                    $(Format::$variant => $module::kind(),)*
                }
            }
        }
    };
}

// The registry: one `Variant => module` a format, in the order detection asks them.
formats!(Squad => squad, Cluener => cluener, Cmeee => cmeee, Conll => bio, Jsonl => jsonl);

impl FromStr for Format {
    type Err = DataError;

    /// A format's name or one of its aliases, in any case (`cluener`, `cmeee`, `conll` or
    /// `bio`, `jsonl` or `gp`).
    fn from_str(s: &str) -> Result<Format, DataError> {
        let lower = s.to_ascii_lowercase();
        Format::ALL
            .iter()
            .copied()
            .find(|f| names(*f).any(|n| n == lower))
            .ok_or_else(|| DataError::UnknownFormat {
                name: s.to_string(),
                known: known_names(),
            })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind().name)
    }
}

/// A format's name, then its aliases.
fn names(f: Format) -> impl Iterator<Item = &'static str> {
    let k = f.kind();
    std::iter::once(k.name).chain(k.aliases.iter().copied())
}

/// Every name and alias, as a list for a person: `cluener, cmeee, conll, bio, jsonl or gp`.
fn known_names() -> String {
    let all: Vec<&str> = Format::ALL.iter().flat_map(|&f| names(f)).collect();
    match all.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => all.join(""),
    }
}

/// How to read a data file.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// The format; `None`: detected from the content.
    pub format: Option<Format>,
    /// How a column file's tokens are joined into text.
    pub join: Join,
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
    let path = path.as_ref();
    let text = read_text(path)?;
    let format = match opts.format {
        Some(f) => f,
        None => detect_text(path, &text)?,
    };
    (format.kind().read)(path, &text, opts.join)
}

/// The format of a file, from its content, as the registered sniffers say: a file whose first
/// non-blank line starts with `{` is JSON lines, shown to them line by line until one says
/// [`Verdict::Yes`] (a malformed line before that is an error); any other file is shown its
/// first non-blank line. The first `Yes` decides, else the first `Maybe` (see [`Verdict`]).
pub fn detect(path: impl AsRef<Path>) -> Result<Format, DataError> {
    let path = path.as_ref();
    detect_text(path, &read_text(path)?)
}

/// [`detect`] of `text`, the content of the file at `path`.
fn detect_text(path: &Path, text: &str) -> Result<Format, DataError> {
    let Some((first_line, first)) = json::numbered_lines(text).next() else {
        return Err(DataError::at(path, 1, Problem::Empty));
    };
    let first = first.trim_start();
    let mut maybe = None;
    if first.starts_with('{') && serde_json::from_str::<serde_json::Value>(first).is_err() {
        // Not a complete object on its first line: one JSON document over the whole file.
        if let Ok(serde_json::Value::Object(doc)) = serde_json::from_str(text) {
            if let (Some(f), _) | (None, Some(f)) = ask(&Sample::Document(&doc)) {
                return Ok(f);
            }
        }
    }
    if first.starts_with('{') {
        for (line, s) in json::numbered_lines(text) {
            let obj = json::parse_object_line(json::At { path, line }, s)?;
            match ask(&Sample::JsonLine(&obj)) {
                (Some(yes), _) => return Ok(yes),
                (None, m) => maybe = maybe.or(m),
            }
        }
        return maybe.ok_or_else(|| {
            DataError::at(
                path,
                first_line,
                Problem::Undetected("JSON lines of no known format"),
            )
        });
    }
    match ask(&Sample::FirstLine(first)) {
        (Some(f), _) | (None, Some(f)) => Ok(f),
        (None, None) => {
            let problem = Problem::Undetected("neither JSON nor a column file");
            Err(DataError::at(path, first_line, problem))
        }
    }
}

/// The first format that says `Yes` to `sample`, and the first that says `Maybe`.
fn ask(sample: &Sample) -> (Option<Format>, Option<Format>) {
    let mut maybe = None;
    for &f in Format::ALL {
        match (f.kind().sniff)(sample) {
            Verdict::Yes => return (Some(f), maybe),
            Verdict::Maybe => maybe = maybe.or(Some(f)),
            Verdict::No => {}
        }
    }
    (None, maybe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_and_alias_parses_back_to_its_format() {
        let mut seen = std::collections::BTreeSet::new();
        for &f in Format::ALL {
            assert_eq!(f.to_string(), f.kind().name);
            for n in names(f) {
                assert!(seen.insert(n), "`{n}` names two formats");
                assert_eq!(n.parse::<Format>().unwrap(), f);
                assert_eq!(n.to_uppercase().parse::<Format>().unwrap(), f);
            }
        }
        assert_eq!(
            known_names(),
            "squad, mrc, cluener, cmeee, conll, bio, jsonl or gp"
        );
    }

    #[test]
    fn detection_asks_the_registry() {
        let path = Path::new("f");
        let detect = |text: &str| detect_text(path, text).map_err(|e| e.to_string());
        // No line decides: gp-lite JSON lines (the one Maybe).
        let plain = "{\"text\": \"a\"}\n{\"text\": \"b\", \"entities\": []}\n";
        assert_eq!(detect(plain), Ok(Format::Jsonl));
        // The first deciding line wins, in the registry's order within a line.
        let cmeee = "{\"text\": \"a\"}\n{\"text\": \"ab\", \"entities\": [{\"start_idx\": 0}]}\n";
        assert_eq!(detect(cmeee), Ok(Format::Cmeee));
        let both = "{\"text\": \"a\", \"label\": {}, \"entities\": [{\"start\": 0}]}\n";
        assert_eq!(detect(both), Ok(Format::Cluener));
        // A malformed line before the deciding one is an error at its line.
        let bad = "{\"text\": \"a\"}\n{oops\n{\"text\": \"a\", \"label\": {}}\n";
        assert!(detect(bad).unwrap_err().starts_with("f:2: "));
        assert_eq!(detect("\n  [\n]"), Ok(Format::Cmeee));
        assert_eq!(detect("EU B-ORG\n"), Ok(Format::Conll));
        // A JSON document over several lines: shown whole (SQuAD), or a line at a time.
        assert_eq!(detect("{\n \"data\": []\n}\n"), Ok(Format::Squad));
        assert_eq!(detect("{\"data\": [], \"version\": 1}\n"), Ok(Format::Squad));
        assert!(detect("{\n \"other\": []\n}\n").unwrap_err().starts_with("f:1: "));
        let one_column = detect("\nword\n").unwrap_err();
        assert!(one_column.starts_with("f:2: "), "{one_column}");
        assert!(
            one_column.contains("neither JSON nor a column file"),
            "{one_column}"
        );
    }
}
