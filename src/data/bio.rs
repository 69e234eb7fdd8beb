//! Column files (CoNLL-2003 and the like): one token a line, whitespace-separated columns, the
//! tag in the last column; a blank line ends a sentence; `-DOCSTART-` lines separate documents.
//!
//! Tags are `O` or `P-TYPE` with `P` one of B, I, E, S (BIOES) or L, U (BILOU, read as E, S).
//! One decoder reads IOB2 (BIO), IOB1 and BIOES: `B` always starts an entity; `I` continues an
//! entity of the same type, and otherwise starts one (IOB1's rule; for IOB2 an `I-X` after `O` or
//! after another type is the common lenient reading: a start); `E` ends one (starting it when
//! there is none of its type); `S` is a one-token entity. The sentence text is the tokens joined
//! by single spaces; entity spans are character offsets into it.

use std::path::Path;

use super::{DataError, Dataset, Entity, Example, Problem};

/// Reads a column file.
pub fn read(path: &Path) -> Result<Dataset, DataError> {
    parse(path, &super::read_text(path)?)
}

/// Parses column text; `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Dataset, DataError> {
    let mut examples = Vec::new();
    let mut lines = Vec::new();
    let mut sentence = Sentence::default();
    for (i, line) in text.lines().enumerate() {
        let mut cols = line.split_whitespace();
        let Some(token) = cols.next() else {
            sentence.flush(&mut examples, &mut lines);
            continue;
        };
        if token == "-DOCSTART-" {
            sentence.flush(&mut examples, &mut lines);
            continue;
        }
        let Some(tag) = cols.last() else {
            let problem = Problem::MissingTag(line.trim().to_string());
            return Err(DataError::at(path, i + 1, problem));
        };
        let tag =
            Tag::parse(tag).ok_or_else(|| DataError::at(path, i + 1, Problem::BadTag(tag.to_string())))?;
        sentence.push(i + 1, token, tag);
    }
    sentence.flush(&mut examples, &mut lines);
    Dataset::new(path, examples, lines)
}

/// A parsed tag: `O`, or a position in an entity and its type.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tag {
    Outside,
    Begin(String),
    Inside(String),
    End(String),
    Single(String),
}

impl Tag {
    fn parse(tag: &str) -> Option<Tag> {
        if tag == "O" {
            return Some(Tag::Outside);
        }
        let (prefix, ty) = tag.split_once('-')?;
        if ty.is_empty() {
            return None;
        }
        let ty = ty.to_string();
        Some(match prefix {
            "B" => Tag::Begin(ty),
            "I" => Tag::Inside(ty),
            "E" | "L" => Tag::End(ty),
            "S" | "U" => Tag::Single(ty),
            _ => return None,
        })
    }
}

/// The sentence being read.
#[derive(Default)]
struct Sentence {
    first_line: usize,
    text: String,
    /// Per token, its characters `[start, end)` in `text`.
    spans: Vec<(usize, usize)>,
    tags: Vec<Tag>,
    chars: usize,
}

impl Sentence {
    fn push(&mut self, line: usize, token: &str, tag: Tag) {
        if self.spans.is_empty() {
            self.first_line = line;
        } else {
            self.text.push(' ');
            self.chars += 1;
        }
        let len = token.chars().count();
        self.text.push_str(token);
        self.spans.push((self.chars, self.chars + len));
        self.chars += len;
        self.tags.push(tag);
    }

    /// Ends the sentence (if any) and appends it as an example.
    fn flush(&mut self, examples: &mut Vec<Example>, lines: &mut Vec<usize>) {
        if self.spans.is_empty() {
            return;
        }
        let s = std::mem::take(self);
        let entities = decode(&s.tags, &s.spans);
        examples.push(Example {
            text: s.text,
            entities,
        });
        lines.push(s.first_line);
    }
}

/// Entities of a tag sequence (see the module documentation for the rules).
fn decode(tags: &[Tag], spans: &[(usize, usize)]) -> Vec<Entity> {
    let mut out = Vec::new();
    // the open entity: its type and first token
    let mut open: Option<(&str, usize)> = None;
    let close = |open: &mut Option<(&str, usize)>, last: usize, out: &mut Vec<Entity>| {
        if let Some((ty, first)) = open.take() {
            out.push(Entity {
                start: spans[first].0,
                end: spans[last].1,
                label: ty.to_string(),
            });
        }
    };
    for (i, tag) in tags.iter().enumerate() {
        let continues = |ty: &str| matches!(open, Some((t, _)) if t == ty);
        match tag {
            Tag::Outside => close(&mut open, i.wrapping_sub(1), &mut out),
            Tag::Begin(ty) => {
                close(&mut open, i.wrapping_sub(1), &mut out);
                open = Some((ty, i));
            }
            Tag::Inside(ty) if continues(ty) => {}
            Tag::Inside(ty) => {
                close(&mut open, i.wrapping_sub(1), &mut out);
                open = Some((ty, i));
            }
            Tag::End(ty) => {
                if !continues(ty) {
                    close(&mut open, i.wrapping_sub(1), &mut out);
                    open = Some((ty, i));
                }
                close(&mut open, i, &mut out);
            }
            Tag::Single(ty) => {
                close(&mut open, i.wrapping_sub(1), &mut out);
                open = Some((ty, i));
                close(&mut open, i, &mut out);
            }
        }
    }
    close(&mut open, tags.len().wrapping_sub(1), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(s: &str) -> Vec<Tag> {
        s.split(' ').map(|t| Tag::parse(t).unwrap()).collect()
    }

    /// Token i covers characters [10 i, 10 i + 5).
    fn decoded(s: &str) -> Vec<(usize, usize, String)> {
        let t = tags(s);
        let spans: Vec<_> = (0..t.len()).map(|i| (10 * i, 10 * i + 5)).collect();
        decode(&t, &spans)
            .into_iter()
            .map(|e| (e.start / 10, (e.end - 5) / 10, e.label))
            .collect()
    }

    fn ents(v: &[(usize, usize, &str)]) -> Vec<(usize, usize, String)> {
        v.iter().map(|&(a, b, l)| (a, b, l.to_string())).collect()
    }

    #[test]
    fn iob2() {
        let got = decoded("B-PER I-PER O B-LOC B-LOC I-LOC");
        assert_eq!(got, ents(&[(0, 1, "PER"), (3, 3, "LOC"), (4, 5, "LOC")]));
    }

    #[test]
    fn iob1_and_lenient_inside() {
        // IOB1: I starts an entity; B separates two adjacent entities of one type.
        let got = decoded("I-PER I-PER B-PER O I-LOC I-ORG");
        let want = [(0, 1, "PER"), (2, 2, "PER"), (4, 4, "LOC"), (5, 5, "ORG")];
        assert_eq!(got, ents(&want));
    }

    #[test]
    fn bioes_and_bilou() {
        let got = decoded("B-PER E-PER S-LOC O B-ORG I-ORG L-ORG U-MISC E-LOC");
        let want = [
            (0, 1, "PER"),
            (2, 2, "LOC"),
            (4, 6, "ORG"),
            (7, 7, "MISC"),
            (8, 8, "LOC"),
        ];
        assert_eq!(got, ents(&want));
    }

    #[test]
    fn malformed_tags_are_refused() {
        for bad in ["Q-PER", "B-", "BPER", "o", "B_PER"] {
            assert_eq!(Tag::parse(bad), None, "{bad}");
        }
    }
}
