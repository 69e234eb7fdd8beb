//! What every reader produces: examples (a text and its entities in character offsets) of one
//! file, with their line numbers and label set.

use super::error::{DataError, Problem};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// An entity: characters `[start, end)` of its text (Unicode code points) and its type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entity {
    /// First character of the entity (inclusive), in code points.
    pub start: usize,
    /// One past its last character (exclusive), in code points.
    pub end: usize,
    /// The entity type, e.g. `PER`.
    pub label: String,
}

/// A text and its entities (empty for unlabeled data), sorted by (start, end, label). A
/// reading-comprehension example is a context (`text`), its [`Question`] and the answers located
/// in the context as entities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// The raw text (a reading-comprehension example's context).
    pub text: String,
    /// Its entities, sorted by (start, end, label); empty for unlabeled data.
    pub entities: Vec<Entity>,
    /// The question asked of the text (reading comprehension only).
    pub question: Option<Question>,
}

/// A reading-comprehension question about an example's text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The question's id in its file.
    pub id: String,
    /// The question.
    pub text: String,
    /// Every reference answer's text as published (also those not found in the context): what
    /// the metric compares a prediction with.
    pub answers: Vec<String>,
}

/// What a reading-comprehension reader did with the published answers: each is kept where its
/// `answer_start` points at its text, moved to the occurrence of its text nearest to
/// `answer_start` (repaired), or left out when its text is not in the context (skipped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnswerCounts {
    /// Answers whose `answer_start` is right.
    pub kept: usize,
    /// Answers moved to the nearest occurrence of their text.
    pub repaired: usize,
    /// Answers whose text is not in the context (or empty).
    pub skipped: usize,
}

/// The examples of one file.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The file read.
    pub path: PathBuf,
    /// The examples, in file order.
    pub examples: Vec<Example>,
    /// For each example, the 1-based line of the file where it starts.
    pub lines: Vec<usize>,
    /// Every entity label used, sorted.
    pub labels: Vec<String>,
    /// Reading comprehension: what was done with the published answers (None for NER data).
    pub answers: Option<AnswerCounts>,
}

impl Dataset {
    /// Collects the label set; a file without examples is an error.
    pub fn new(path: &Path, mut examples: Vec<Example>, lines: Vec<usize>) -> Result<Dataset, DataError> {
        if examples.is_empty() {
            return Err(DataError::at(path, 1, Problem::Empty));
        }
        for e in &mut examples {
            e.entities.sort();
        }
        let labels: BTreeSet<&str> = examples
            .iter()
            .flat_map(|e| e.entities.iter().map(|x| x.label.as_str()))
            .collect();
        Ok(Dataset {
            path: path.to_path_buf(),
            labels: labels.into_iter().map(String::from).collect(),
            examples,
            lines,
            answers: None,
        })
    }

    /// The examples of several files as one data set (e.g. repeated `--train`): the path names
    /// them all (`A + B`), `lines` stay each file's own, answer counts add up.
    pub fn concat(parts: Vec<Dataset>) -> Result<Dataset, DataError> {
        let path = parts
            .iter()
            .map(|d| d.path.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ");
        let answers = parts
            .iter()
            .filter_map(|d| d.answers)
            .reduce(|a, b| AnswerCounts {
                kept: a.kept + b.kept,
                repaired: a.repaired + b.repaired,
                skipped: a.skipped + b.skipped,
            });
        let (mut examples, mut lines) = (Vec::new(), Vec::new());
        for d in parts {
            examples.extend(d.examples);
            lines.extend(d.lines);
        }
        let mut out = Dataset::new(Path::new(&path), examples, lines)?;
        out.answers = answers;
        Ok(out)
    }

    /// Total number of entities.
    pub fn entity_count(&self) -> usize {
        self.examples.iter().map(|e| e.entities.len()).sum()
    }

    /// Number of entities of each label.
    pub fn label_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for x in self.examples.iter().flat_map(|e| &e.entities) {
            *counts.entry(x.label.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Fails on the first entity whose label is not in `known` (e.g. evaluation data with a type
    /// the model was not trained on), naming its line.
    pub fn check_labels(&self, known: &[String]) -> Result<(), DataError> {
        for (example, &line) in self.examples.iter().zip(&self.lines) {
            if let Some(x) = example.entities.iter().find(|x| !known.contains(&x.label)) {
                let problem = Problem::UnknownLabel {
                    label: x.label.clone(),
                    known: known.join(", "),
                };
                return Err(DataError::at(&self.path, line, problem));
            }
        }
        Ok(())
    }
}

/// Reads a whole file as text (without a leading byte-order mark).
pub(crate) fn read_text(path: &Path) -> Result<String, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}
