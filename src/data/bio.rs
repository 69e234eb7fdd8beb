//! Column files (CoNLL-2003 and the like): one token a line, whitespace-separated columns, the
//! tag in the last column; a blank line ends a sentence; `-DOCSTART-` lines separate documents.
//!
//! Tags are `O` or `P-TYPE` with `P` one of B, I, E, S (BIOES) or L, U (BILOU, read as E, S).
//! One decoder reads IOB2 (BIO), IOB1 and BIOES: `B` always starts an entity; `I` continues an
//! entity of the same type, and otherwise starts one (IOB1's rule; for IOB2 an `I-X` after `O` or
//! after another type is the common lenient reading: a start); `E` ends one (starting it when
//! there is none of its type); `S` is a one-token entity.
//!
//! The sentence text is its tokens joined ([`Join`]): by single spaces for words (CoNLL), with
//! nothing between them for a character-per-line file of a script written without spaces
//! (People's Daily gives back its sentences exactly as written). [`Join::Auto`] decides from the
//! whole file: no separator when more than half of its token characters are CJK or every token
//! is a single character, a space otherwise. Entity spans are character offsets into the text.

use std::path::Path;

use super::kind::{FormatKind, Sample, Verdict};
use super::{DataError, Dataset, Entity, Example, Problem};
use crate::tokenize::mostly_cjk;

pub use super::kind::Join;

/// The column format: a file whose first line has two or more columns.
pub fn kind() -> FormatKind {
    FormatKind {
        name: "conll",
        aliases: &["bio"],
        help: "column file (CoNLL-2003, People's Daily): a token a line, its BIO/IOB1/BIOES tag in \
               the last column, a blank line between sentences",
        sniff: |sample| match sample {
            Sample::FirstLine(line) if line.split_whitespace().count() >= 2 => Verdict::Yes,
            _ => Verdict::No,
        },
        read: parse_with,
    }
}

/// Reads a column file.
pub fn read(path: &Path) -> Result<Dataset, DataError> {
    parse(path, &super::read_text(path)?)
}

/// Parses column text, joining tokens as [`Join::Auto`] decides; `path` names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Dataset, DataError> {
    parse_with(path, text, Join::Auto)
}

/// Parses column text with tokens joined as `join` says.
pub fn parse_with(path: &Path, text: &str, join: Join) -> Result<Dataset, DataError> {
    let (lines, examples) = sentences(path, text, join)?
        .into_iter()
        .map(|s| (s.lines[0], s.example))
        .unzip();
    Dataset::new(path, examples, lines)
}

/// A sentence of a column file as read.
#[derive(Clone, Debug)]
pub struct ColumnSentence {
    /// The 1-based line of each token.
    pub lines: Vec<usize>,
    /// The character span `[start, end)` of each token in the example's text.
    pub spans: Vec<(usize, usize)>,
    /// The tokens joined, with the entities of their tags.
    pub example: Example,
}

/// The sentences of column text, tokens joined as `join` says ([`Join::Auto`] decides from the
/// whole text); `path` names the file in errors. Every line is either a token of a sentence, a
/// blank line or a `-DOCSTART-` line.
pub fn sentences(path: &Path, text: &str, join: Join) -> Result<Vec<ColumnSentence>, DataError> {
    let mut sentences: Vec<Sentence> = Vec::new();
    let mut sentence = Sentence::default();
    for (i, line) in text.lines().enumerate() {
        let mut cols = line.split_whitespace();
        let Some(token) = cols.next() else {
            sentence.flush(&mut sentences);
            continue;
        };
        if token == "-DOCSTART-" {
            sentence.flush(&mut sentences);
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
    sentence.flush(&mut sentences);
    let sep = match join {
        Join::Space => " ",
        Join::None => "",
        Join::Auto => {
            let tokens = || sentences.iter().flat_map(|s| s.tokens.iter().map(String::as_str));
            if mostly_cjk(tokens()) || tokens().all(|t| t.chars().count() == 1) {
                ""
            } else {
                " "
            }
        }
    };
    Ok(sentences.into_iter().map(|s| s.read(sep)).collect())
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

/// A sentence: its tokens and tags.
#[derive(Default)]
struct Sentence {
    lines: Vec<usize>,
    tokens: Vec<String>,
    tags: Vec<Tag>,
}

impl Sentence {
    fn push(&mut self, line: usize, token: &str, tag: Tag) {
        self.lines.push(line);
        self.tokens.push(token.to_string());
        self.tags.push(tag);
    }

    /// Ends the sentence (if any) and appends it.
    fn flush(&mut self, sentences: &mut Vec<Sentence>) {
        if !self.tokens.is_empty() {
            sentences.push(std::mem::take(self));
        }
    }

    /// The tokens joined by `sep`, with the entities of the tags as character spans.
    fn read(self, sep: &str) -> ColumnSentence {
        let sep_chars = sep.chars().count();
        let (mut text, mut spans, mut chars) = (String::new(), Vec::with_capacity(self.tokens.len()), 0);
        for (k, token) in self.tokens.iter().enumerate() {
            if k > 0 {
                text.push_str(sep);
                chars += sep_chars;
            }
            let len = token.chars().count();
            text.push_str(token);
            spans.push((chars, chars + len));
            chars += len;
        }
        ColumnSentence {
            example: Example {
                entities: decode(&self.tags, &spans),
                text,
                question: None,
            },
            spans,
            lines: self.lines,
        }
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

/// The tags [`encode`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scheme {
    /// IOB2: `B-X` starts an entity, `I-X` continues it.
    #[default]
    Bio,
    /// BIOES: `S-X` a one-token entity, `E-X` the last token of a longer one.
    Bioes,
}

/// The tag of each token (character spans `tokens`, in order, not overlapping) for `entities`
/// (`(start, end, type)` in characters, not overlapping): an entity tags the tokens it overlaps
/// (a token it covers in part included), and a token two entities overlap keeps the first's.
/// The inverse of the column reader's decoding wherever entities start and end on token
/// boundaries.
pub fn encode<'a>(
    entities: impl IntoIterator<Item = (usize, usize, &'a str)>,
    tokens: &[(usize, usize)],
    scheme: Scheme,
) -> Vec<String> {
    let mut tags = vec![String::from("O"); tokens.len()];
    let mut taken = vec![false; tokens.len()];
    for (start, end, label) in entities {
        // the first run of free tokens the entity overlaps
        let first = tokens.partition_point(|t| t.1 <= start);
        let run: Vec<usize> = (first..tokens.len())
            .take_while(|&k| tokens[k].0 < end)
            .skip_while(|&k| taken[k])
            .take_while(|&k| !taken[k])
            .collect();
        let (Some(&a), Some(&b)) = (run.first(), run.last()) else {
            continue;
        };
        for k in a..=b {
            taken[k] = true;
            let prefix = match (scheme, k == a, k == b) {
                (Scheme::Bioes, true, true) => "S",
                (Scheme::Bioes, false, true) => "E",
                (_, true, _) => "B",
                _ => "I",
            };
            tags[k] = format!("{prefix}-{label}");
        }
    }
    tags
}

/// The tokens a text is written as in columns, each `(first char, one past the last char,
/// token)`: its whitespace-separated words, or every character but whitespace in a text written
/// mostly in CJK characters (no spaces between its words), as the column reader joins them.
pub fn text_tokens(text: &str) -> Vec<(usize, usize, &str)> {
    let per_char = mostly_cjk([text]);
    let mut out = Vec::new();
    // the open word: its first char and byte
    let mut open: Option<(usize, usize)> = None;
    let mut chars = 0;
    for (b, c) in text.char_indices() {
        if c.is_whitespace() || per_char {
            if let Some((c0, b0)) = open.take() {
                out.push((c0, chars, &text[b0..b]));
            }
        }
        if !c.is_whitespace() {
            if per_char {
                out.push((chars, chars + 1, &text[b..b + c.len_utf8()]));
            } else if open.is_none() {
                open = Some((chars, b));
            }
        }
        chars += 1;
    }
    if let Some((c0, b0)) = open {
        out.push((c0, chars, &text[b0..]));
    }
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
    fn join_follows_the_data() {
        let p = Path::new("x.bio");
        let zh = "中 B-LOC\n国 I-LOC\n人 O\n\n北 B-LOC\n京 I-LOC\n";
        let d = parse(p, zh).unwrap();
        assert_eq!(d.examples[0].text, "中国人");
        assert_eq!(d.examples[1].text, "北京");
        assert_eq!(
            (d.examples[0].entities[0].start, d.examples[0].entities[0].end),
            (0, 2)
        );
        let en = "EU B-ORG\nrejects O\nGerman B-MISC\n";
        let d = parse(p, en).unwrap();
        assert_eq!(d.examples[0].text, "EU rejects German");
        assert_eq!(
            (d.examples[0].entities[1].start, d.examples[0].entities[1].end),
            (11, 17)
        );
        // The override.
        assert_eq!(
            parse_with(p, zh, Join::Space).unwrap().examples[0].text,
            "中 国 人"
        );
        assert_eq!(
            parse_with(p, en, Join::None).unwrap().examples[0].text,
            "EUrejectsGerman"
        );
        assert_eq!("none".parse::<Join>().unwrap(), Join::None);
        assert!("tab".parse::<Join>().is_err());
    }

    #[test]
    fn malformed_tags_are_refused() {
        for bad in ["Q-PER", "B-", "BPER", "o", "B_PER"] {
            assert_eq!(Tag::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn encode_writes_what_decode_reads() {
        let spans: Vec<_> = (0..8).map(|i| (10 * i, 10 * i + 5)).collect();
        let ents = [(0, 15, "PER"), (20, 25, "LOC"), (30, 75, "ORG")];
        let bio = encode(ents, &spans, Scheme::Bio);
        assert_eq!(bio.join(" "), "B-PER I-PER B-LOC B-ORG I-ORG I-ORG I-ORG I-ORG");
        let bioes = encode(ents, &spans, Scheme::Bioes);
        assert_eq!(bioes.join(" "), "B-PER E-PER S-LOC B-ORG I-ORG I-ORG I-ORG E-ORG");
        for tags in [bio, bioes] {
            let parsed: Vec<Tag> = tags.iter().map(|t| Tag::parse(t).unwrap()).collect();
            let back: Vec<_> = decode(&parsed, &spans)
                .into_iter()
                .map(|e| (e.start, e.end, e.label))
                .collect();
            let want: Vec<_> = ents.iter().map(|&(a, b, l)| (a, b, l.to_string())).collect();
            assert_eq!(back, want);
        }
    }

    #[test]
    fn encode_widens_to_tokens_and_keeps_the_first_of_two() {
        let spans = [(0, 5), (6, 10), (11, 20)];
        // "Obama" in part, then two entities inside the third token: the first keeps it.
        let tags = encode(
            [(1, 3, "PER"), (12, 14, "LOC"), (15, 18, "ORG")],
            &spans,
            Scheme::Bio,
        );
        assert_eq!(tags, ["B-PER", "O", "B-LOC"]);
        // An entity over no token (between tokens) writes nothing.
        assert_eq!(encode([(5, 6, "X")], &spans, Scheme::Bioes), ["O", "O", "O"]);
        // A later entity whose first token is taken keeps the free run after it.
        let tags = encode([(6, 10, "A"), (7, 20, "B")], &spans, Scheme::Bioes);
        assert_eq!(tags, ["O", "S-A", "S-B"]);
    }

    #[test]
    fn text_tokens_are_words_or_characters() {
        assert_eq!(
            text_tokens(" EU  rejects\tGerman "),
            [(1, 3, "EU"), (5, 12, "rejects"), (13, 19, "German")]
        );
        assert_eq!(
            text_tokens("中国 人a"),
            [(0, 1, "中"), (1, 2, "国"), (3, 4, "人"), (4, 5, "a")]
        );
        assert!(text_tokens("").is_empty());
        // what the column reader makes of a column file, text_tokens reads back
        let p = Path::new("x.bio");
        for file in [
            "EU B-ORG\nrejects O\nGerman B-MISC\n",
            "中 B-LOC\n国 I-LOC\n人 O\n",
        ] {
            let s = &sentences(p, file, Join::Auto).unwrap()[0];
            let spans: Vec<_> = text_tokens(&s.example.text).iter().map(|t| (t.0, t.1)).collect();
            assert_eq!(spans, s.spans);
        }
    }
}
