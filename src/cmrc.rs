//! CMRC 2018's official exact match and F1 (`cmrc2018_evaluate.py`), as
//! `../shared/data/mrc/README.md` states them:
//!
//! - normalise: lower-case, strip, drop the punctuation characters [`PUNCTUATION`];
//! - segment: every CJK character (U+4E00-U+9FA5) is one segment; runs of other characters are
//!   split into words ([`words`]);
//! - F1 = 2PR/(P+R), the overlap being the longest common *substring* of the two segment lists,
//!   P = overlap / prediction segments, R = overlap / reference segments (0 without overlap);
//! - EM = 1 when the normalised prediction equals a normalised reference;
//! - the best over a question's references; averages over all questions, an unanswered
//!   question scoring 0.
//!
//! The official script splits the runs with NLTK's `word_tokenize`; [`words`] is its rule for
//! what these answers hold (English words, numbers, symbols): whitespace separates, a run of
//! letters and digits (with `.` or `,` inside a number) is one word, any other character is a
//! word of its own.

use serde::Serialize;

/// The characters the official script drops. Its list also holds `……` (two characters), which
/// never equals the single character it is compared with, so a lone `…` is kept, as there.
pub const PUNCTUATION: &[char] = &[
    '-', ':', '_', '*', '^', '/', '\\', '~', '`', '+', '=', '，', '。', '：', '？', '！', '“', '”', '；',
    '’', '《', '》', '·', '、', '「', '」', '（', '）', '－', '～', '『', '』',
];

/// Whether `c` is a CJK character the metric counts alone (U+4E00-U+9FA5).
fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fa5}').contains(&c)
}

/// Lower-cased and stripped, punctuation dropped: what EM compares.
pub fn normalise(s: &str) -> String {
    s.to_lowercase()
        .trim()
        .chars()
        .filter(|c| !PUNCTUATION.contains(c))
        .collect()
}

/// The segments F1 counts: each CJK character alone, the rest split by [`words`].
pub fn segments(s: &str) -> Vec<String> {
    let (mut out, mut run) = (Vec::new(), String::new());
    for c in normalise(s).chars() {
        if is_cjk(c) {
            out.extend(words(&run));
            run.clear();
            out.push(c.to_string());
        } else {
            run.push(c);
        }
    }
    out.extend(words(&run));
    out
}

/// The words of a run of non-CJK characters (see the module documentation).
pub fn words(run: &str) -> Vec<String> {
    let chars: Vec<char> = run.chars().collect();
    let (mut out, mut word) = (Vec::new(), String::new());
    for (i, &c) in chars.iter().enumerate() {
        let digit_around =
            |k: Option<usize>| k.and_then(|k| chars.get(k)).is_some_and(|c| c.is_ascii_digit());
        let in_number = (c == '.' || c == ',') && digit_around(i.checked_sub(1)) && digit_around(Some(i + 1));
        if c.is_alphanumeric() || in_number {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Length of the longest common contiguous run of `a` and `b`.
pub fn longest_common_substring<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    // row[j + 1] = length of the common run ending at a[i], b[j]
    let (mut best, mut prev, mut row) = (0, vec![0; b.len() + 1], vec![0; b.len() + 1]);
    for x in a {
        for (j, y) in b.iter().enumerate() {
            row[j + 1] = if x == y { prev[j] + 1 } else { 0 };
            best = best.max(row[j + 1]);
        }
        std::mem::swap(&mut prev, &mut row);
    }
    best
}

/// F1 of `prediction` against one reference.
pub fn f1_one(reference: &str, prediction: &str) -> f64 {
    let (r, p) = (segments(reference), segments(prediction));
    let overlap = longest_common_substring(&r, &p);
    if overlap == 0 {
        return 0.0;
    }
    let (precision, recall) = (overlap as f64 / p.len() as f64, overlap as f64 / r.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// The best F1 of `prediction` over `references` (0 without references).
pub fn f1(references: &[String], prediction: &str) -> f64 {
    references
        .iter()
        .map(|r| f1_one(r, prediction))
        .fold(0.0, f64::max)
}

/// 1 when `prediction` equals a reference once normalised, else 0.
pub fn exact_match(references: &[String], prediction: &str) -> f64 {
    let p = normalise(prediction);
    f64::from(u8::from(references.iter().any(|r| normalise(r) == p)))
}

/// EM and F1 over a set of questions, times 100.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct MrcScores {
    /// Mean exact match, times 100.
    pub em: f64,
    /// Mean F1, times 100.
    pub f1: f64,
    /// Questions scored.
    pub questions: usize,
    /// Questions without a prediction (each scored 0).
    pub unanswered: usize,
}

/// The scores of `(references, prediction)` pairs, `None` for an unanswered question.
pub fn score<'a>(pairs: impl IntoIterator<Item = (&'a [String], Option<&'a str>)>) -> MrcScores {
    let (mut em, mut f, mut out) = (0.0, 0.0, MrcScores::default());
    for (refs, pred) in pairs {
        out.questions += 1;
        match pred {
            Some(p) => {
                em += exact_match(refs, p);
                f += f1(refs, p);
            }
            None => out.unanswered += 1,
        }
    }
    if out.questions > 0 {
        out.em = 100.0 * em / out.questions as f64;
        out.f1 = 100.0 * f / out.questions as f64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normalisation_and_segmentation() {
        assert_eq!(normalise(" 《战国无双3》 "), "战国无双3");
        assert_eq!(normalise("A-B：c…"), "abc…");
        assert_eq!(segments("光荣和ω-force"), vec!["光", "荣", "和", "ωforce"]);
        assert_eq!(segments("1,036 km 3.5"), vec!["1,036", "km", "3.5"]);
        assert_eq!(segments("iPhone 4S发布"), vec!["iphone", "4s", "发", "布"]);
        assert_eq!(words("a, b."), vec!["a", ",", "b", "."]);
    }

    #[test]
    fn f1_is_over_the_longest_common_substring() {
        // 北京大学 vs 北京: overlap 2, P = 1, R = 2/4: F1 = 2·0.5/1.5 = 2/3.
        assert!((f1_one("北京大学", "北京") - 2.0 / 3.0).abs() < 1e-12);
        // 甲乙丙丁 vs 甲乙X丙丁: longest common substring 2 (not the subsequence 4):
        // P = 2/5, R = 2/4: F1 = 2·0.2/0.9 = 4/9.
        assert!((f1_one("甲乙丙丁", "甲乙戊丙丁") - 4.0 / 9.0).abs() < 1e-12);
        assert_eq!(f1_one("北京", "上海"), 0.0);
        // Words: "the 1990 world cup" vs "1990 world": 2 of 2 predicted, 2 of 4 referenced.
        assert!((f1_one("the 1990 World Cup", "1990 world") - 2.0 / 3.0).abs() < 1e-12);
        // The best reference counts.
        assert_eq!(f1(&refs(&["上海", "北京"]), "北京"), 1.0);
        assert_eq!(f1(&[], "北京"), 0.0);
        assert_eq!(f1(&refs(&["北京"]), ""), 0.0);
    }

    #[test]
    fn exact_match_after_normalisation() {
        assert_eq!(exact_match(&refs(&["《北京》"]), "北京"), 1.0);
        assert_eq!(exact_match(&refs(&["Beijing "]), " beijing"), 1.0);
        assert_eq!(exact_match(&refs(&["北京市"]), "北京"), 0.0);
    }

    #[test]
    fn averages_count_unanswered_questions_as_zero() {
        let (a, b, c) = (refs(&["北京"]), refs(&["北京大学"]), refs(&["上海"]));
        let s = score([(&a[..], Some("北京")), (&b[..], Some("北京")), (&c[..], None)]);
        assert_eq!((s.questions, s.unanswered), (3, 1));
        assert!((s.em - 100.0 / 3.0).abs() < 1e-9);
        assert!((s.f1 - 100.0 * (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-9);
    }
}
