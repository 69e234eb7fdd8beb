//! Data readers: the tiny fixtures by hand, detection, exact error messages, and the counts of
//! the real datasets in ../shared (skipped by name without it).

use std::path::{Path, PathBuf};

use crate::common::shared::shared_file;
use gp_lite::data::{detect, read_dataset, DataError, Dataset, Entity, Format};
use gp_lite::tokenize::{char_span_to_tokens, CharVocab, Tokenizer};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

fn ent(start: usize, end: usize, label: &str) -> Entity {
    Entity {
        start,
        end,
        label: label.to_string(),
    }
}

fn read(rel: &str) -> Dataset {
    read_dataset(fixture(rel), None).unwrap()
}

/// The characters `[start, end)` of a text.
fn chars(text: &str, e: &Entity) -> String {
    text.chars().skip(e.start).take(e.end - e.start).collect()
}

#[test]
fn cluener_fixture() {
    let d = read("formats/cluener.json");
    assert_eq!(d.examples.len(), 3);
    assert_eq!(d.lines, vec![1, 2, 4]);
    let e = &d.examples[0];
    assert_eq!(
        e.entities,
        vec![ent(0, 4, "company"), ent(4, 7, "name"), ent(11, 14, "name")]
    );
    assert_eq!(chars(&e.text, &e.entities[2]), "叶老桂");
    assert!(d.examples[1].entities.is_empty());
    assert_eq!(d.examples[2].entities, vec![ent(1, 7, "game")]);
    assert_eq!(d.labels, vec!["company", "game", "name"]);
}

#[test]
fn cmeee_fixture_array_and_lines() {
    let d = read("formats/cmeee.json");
    assert_eq!(d.examples.len(), 2);
    assert_eq!(d.lines, vec![2, 10]);
    let e = &d.examples[0];
    assert_eq!(
        e.entities,
        vec![ent(3, 6, "dis"), ent(5, 6, "sym"), ent(9, 13, "dru")]
    );
    assert_eq!(chars(&e.text, &e.entities[2]), "二甲双胍");
    let d = read("formats/cmeee-lines.jsonl");
    assert_eq!(d.examples[0].entities, vec![ent(0, 2, "sym")]);
}

#[test]
fn conll_fixture() {
    let d = read("formats/conll.txt");
    assert_eq!(d.lines, vec![3, 9]);
    assert_eq!(d.examples[0].text, "EU rejects German call .");
    assert_eq!(
        d.examples[0].entities,
        vec![ent(0, 2, "ORG"), ent(11, 17, "MISC")]
    );
    assert_eq!(d.examples[1].text, "Peter Blackburn in New York");
    // "I-LOC" after "O" starts an entity (IOB1 / lenient IOB2)
    assert_eq!(
        d.examples[1].entities,
        vec![ent(0, 15, "PER"), ent(19, 27, "LOC")]
    );
    assert_eq!(d.labels, vec!["LOC", "MISC", "ORG", "PER"]);
}

#[test]
fn bioes_fixture() {
    let d = read("formats/bioes.tsv");
    assert_eq!(d.examples.len(), 1);
    let e = &d.examples[0];
    assert_eq!(e.text, "U.N. official Ekéus Ekéus");
    assert_eq!(e.entities, vec![ent(0, 4, "ORG"), ent(14, 25, "PER")]);
}

#[test]
fn gp_jsonl_fixture_nested() {
    let d = read("formats/gp.jsonl");
    let e = &d.examples[0];
    assert_eq!(
        e.entities,
        vec![ent(0, 4, "protein"), ent(0, 9, "DNA"), ent(24, 31, "cell_type")]
    );
    assert_eq!(chars(&e.text, &e.entities[1]), "IL-2 gene");
    assert!(d.examples[1].entities.is_empty());
}

#[test]
fn detection_by_content() {
    let cases = [
        ("formats/cluener.json", Format::Cluener),
        ("formats/cmeee.json", Format::Cmeee),
        ("formats/cmeee-lines.jsonl", Format::Cmeee),
        ("formats/conll.txt", Format::Conll),
        ("formats/bioes.tsv", Format::Conll),
        ("formats/gp.jsonl", Format::Jsonl),
        ("cluener-sample/dev.json", Format::Cluener),
    ];
    for (rel, want) in cases {
        assert_eq!(detect(fixture(rel)).unwrap(), want, "{rel}");
    }
}

#[test]
fn explicit_format_overrides_detection() {
    // CLUENER lines read as gp-lite JSON lines: `label` is not a gp-lite field, so no entities.
    let d = read_dataset(fixture("formats/cluener.json"), Some(Format::Jsonl)).unwrap();
    assert_eq!(d.examples.len(), 3);
    assert_eq!(d.entity_count(), 0);
    assert_eq!("bio".parse::<Format>().unwrap(), Format::Conll);
    assert_eq!("GP".parse::<Format>().unwrap(), Format::Jsonl);
    assert_eq!(
        "xml".parse::<Format>().unwrap_err().to_string(),
        "unknown data format `xml` (expected squad, mrc, cluener, cmeee, conll, bio, jsonl or gp)"
    );
}

/// The message of reading a fixture, without its `FILE:` prefix (checked).
fn error(rel: &str) -> String {
    let path = fixture(rel);
    let err: DataError = read_dataset(&path, None).unwrap_err();
    let msg = err.to_string();
    let prefix = format!("{}:", path.display());
    assert!(msg.starts_with(&prefix), "{msg}");
    msg[prefix.len()..].to_string()
}

#[test]
fn bad_inputs_give_file_line_messages() {
    let cases = [
        (
            "bad/malformed.json",
            "2: malformed JSON: EOF while parsing an object (column 45)",
        ),
        (
            "bad/span-outside.json",
            "2: `label.name.cd[0]`: span [2, 3] is outside the text (3 characters)",
        ),
        (
            "bad/mention-mismatch.json",
            "2: `label.address.上海[0]`: the text at [0, 1] is \"北京\", not \"上海\"",
        ),
        (
            "bad/cmeee-mismatch.json",
            "3: `entities[0]`: the text at [0, 1] is \"ab\", not \"ax\"",
        ),
        ("bad/empty.json", "1: no examples"),
        ("bad/blank.jsonl", "1: no examples"),
        ("bad/start-after-end.jsonl", "1: `entities[0]`: start 2 > end 1"),
        (
            "bad/wrong-type.jsonl",
            "1: field `entities[0].end` must be a non-negative integer",
        ),
        ("bad/missing-text.jsonl", "1: missing field `text`"),
        (
            "bad/bad-tag.txt",
            "4: malformed tag `Q-PER` (expected O, or B-, I-, E-, S-, L- or U- and a type)",
        ),
        (
            "bad/missing-tag.txt",
            "2: expected at least two columns (token ... tag), found `rejects`",
        ),
    ];
    for (rel, want) in cases {
        assert_eq!(error(rel), want, "{rel}");
    }
}

#[test]
fn unknown_label_names_its_line() {
    let path = fixture("formats/labels-gpe.jsonl");
    let d = read_dataset(&path, None).unwrap();
    d.check_labels(&["GPE".into(), "PER".into()]).unwrap();
    let err = d.check_labels(&["LOC".into(), "PER".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: label `GPE` is not one of the known labels (LOC, PER)",
            path.display()
        )
    );
}

#[test]
fn cluener_sample_fixture_counts() {
    let train = read("cluener-sample/train.json");
    let dev = read("cluener-sample/dev.json");
    assert_eq!((train.examples.len(), train.entity_count()), (800, 1826));
    assert_eq!((dev.examples.len(), dev.entity_count()), (200, 471));
    assert_eq!(train.labels.len(), 10);
}

fn shared_dataset(rel: &str, test: &str) -> Option<Dataset> {
    let path = shared_file(rel, test)?;
    Some(read_dataset(path, None).unwrap())
}

#[test]
fn cluener_real_counts() {
    let test = "cluener_real_counts";
    let Some(train) = shared_dataset("data/cluener/train.json", test) else {
        return;
    };
    let Some(dev) = shared_dataset("data/cluener/dev.json", test) else {
        return;
    };
    assert_eq!((train.examples.len(), train.entity_count()), (10748, 23972));
    assert_eq!((dev.examples.len(), dev.entity_count()), (1343, 3072));
    let counts = train.label_counts();
    assert_eq!(counts["name"], 3756);
    assert_eq!(counts["movie"], 1123);
    // a per-character vocabulary built on train aligns every entity of train and dev
    let vocab = CharVocab::build(train.examples.iter().map(|e| e.text.as_str()), 1);
    let tok = Tokenizer::new(vocab);
    assert_eq!(misaligned(&tok, &train), 0);
    assert_eq!(misaligned(&tok, &dev), 0);
}

#[test]
fn conll_real_counts_and_alignment() {
    let test = "conll_real_counts_and_alignment";
    let Some(train) = shared_dataset("data/conll2003/train.txt", test) else {
        return;
    };
    let Some(tok_path) = shared_file("models/minilm-l6/tokenizer.json", test) else {
        return;
    };
    assert_eq!(train.examples.len(), 14041);
    let counts = train.label_counts();
    let got: Vec<(&str, usize)> = counts.iter().map(|(k, &v)| (k.as_str(), v)).collect();
    assert_eq!(
        got,
        vec![("LOC", 7140), ("MISC", 3438), ("ORG", 6321), ("PER", 6600)]
    );
    let tok = Tokenizer::from_tokenizer_json(tok_path).unwrap();
    assert_eq!(misaligned(&tok, &train), 0);
}

#[test]
fn genia_real_counts() {
    let test = "genia_real_counts";
    let Some(train) = shared_dataset("data/genia-sample/train.jsonl", test) else {
        return;
    };
    let Some(dev) = shared_dataset("data/genia-sample/dev.jsonl", test) else {
        return;
    };
    assert_eq!((train.examples.len(), train.entity_count()), (1484, 4379));
    assert_eq!((dev.examples.len(), dev.entity_count()), (370, 1127));
}

/// Entities whose boundaries fall inside a token.
fn misaligned(tok: &Tokenizer, d: &Dataset) -> usize {
    let mut bad = 0;
    for ex in &d.examples {
        let enc = tok.encode(&ex.text).unwrap();
        for x in &ex.entities {
            if char_span_to_tokens(&enc, x.start, x.end).is_none() {
                bad += 1;
            }
        }
    }
    bad
}

/// Number of (contained or crossing) overlapping entity pairs, per text.
fn overlapping_pairs(d: &Dataset) -> usize {
    d.examples
        .iter()
        .map(|ex| {
            let e = &ex.entities;
            (0..e.len())
                .flat_map(|i| (i + 1..e.len()).map(move |j| (i, j)))
                .filter(|&(i, j)| e[i].start < e[j].end && e[j].start < e[i].end)
                .count()
        })
        .sum()
}

#[test]
fn peoples_daily_counts_and_text_as_written() {
    let test = "peoples_daily_counts_and_text_as_written";
    let mut sets = Vec::new();
    for split in ["train", "dev", "test"] {
        let Some(d) = shared_dataset(&format!("data/peoples-daily/example.{split}"), test) else {
            return;
        };
        sets.push(d);
    }
    // SOURCE.md: sentences, characters, LOC, ORG, PER.
    let want = [
        (20864, 979180, 16571, 9277, 8144),
        (2318, 109870, 1951, 984, 884),
        (4636, 219197, 3658, 2185, 1864),
    ];
    for (d, w) in sets.iter().zip(want) {
        let chars: usize = d.examples.iter().map(|e| e.text.chars().count()).sum();
        let c = d.label_counts();
        assert_eq!(
            (d.examples.len(), chars, c["LOC"], c["ORG"], c["PER"]),
            w,
            "{}",
            d.path.display()
        );
        assert_eq!(overlapping_pairs(d), 0);
    }
    // A sentence comes back exactly as written: its characters in order, no spaces added.
    let path = shared_file("data/peoples-daily/example.test", test).unwrap();
    let raw = std::fs::read_to_string(path).unwrap();
    let first: String = raw
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(sets[2].examples[0].text, first);
    assert!(!sets[2].examples.iter().any(|e| e.text.contains(' ')));
    // Entities are the characters their BIO tags cover.
    let e = &sets[2].examples[0];
    for x in &e.entities {
        assert!(!chars(&e.text, x).is_empty());
    }
}

#[test]
fn cmeee_counts_indented_array() {
    let test = "cmeee_counts_indented_array";
    let Some(train) = shared_dataset("data/cmeee/CMeEE_train.json", test) else {
        return;
    };
    let Some(dev) = shared_dataset("data/cmeee/CMeEE_dev.json", test) else {
        return;
    };
    // The files are the original indented JSON arrays.
    let raw = std::fs::read_to_string(&dev.path).unwrap();
    assert!(raw.starts_with('[') && raw.lines().count() > 5000);
    assert_eq!((train.examples.len(), train.entity_count()), (15000, 61794));
    assert_eq!((dev.examples.len(), dev.entity_count()), (5000, 20300));
    let c = train.label_counts();
    let got: Vec<usize> = ["bod", "dis", "sym", "pro", "dru", "ite", "mic", "equ", "dep"]
        .iter()
        .map(|t| c[*t])
        .collect();
    assert_eq!(got, [17697, 15843, 12269, 6331, 3930, 2581, 1907, 888, 348]);
    let contained = |d: &Dataset| -> usize {
        d.examples
            .iter()
            .map(|ex| {
                let e = &ex.entities;
                (0..e.len())
                    .flat_map(|i| (0..e.len()).map(move |j| (i, j)))
                    .filter(|&(i, j)| {
                        i != j
                            && e[i].start <= e[j].start
                            && e[j].end <= e[i].end
                            && (e[i].start, e[i].end) != (e[j].start, e[j].end)
                    })
                    .count()
            })
            .sum()
    };
    assert_eq!(contained(&train), 3645);
    assert_eq!(contained(&dev), 1209);
}

#[test]
fn genia_full_counts() {
    let test = "genia_full_counts";
    let mut got = Vec::new();
    for split in ["train", "dev", "test"] {
        let Some(d) = shared_dataset(&format!("data/genia/{split}.jsonl"), test) else {
            return;
        };
        got.push((d.examples.len(), d.entity_count(), d.labels.len()));
        if split == "train" {
            assert_eq!(overlapping_pairs(&d), 4555);
        }
    }
    assert_eq!(got, [(15021, 47005, 5), (1668, 4458, 5), (1854, 5585, 5)]);
}
