//! Generated and mutated inputs for every entry point that reads something gp-lite did not write
//! itself: the data readers, the tokenizers, model directories, prediction and the C API.
//!
//! Each test draws a bounded number of cases from a seeded generator (ChaCha8, seed
//! `GP_LITE_FUZZ_SEED`, default 12) and prints `fuzz NAME: N cases, F failures`. The expected
//! outcome of every case is a clear error or a correct answer: never a panic, offsets outside the
//! text, or an error that does not say where. `GP_LITE_FUZZ_CASES=K` multiplies every count by K
//! (the long run of the README). A failing case prints its seed, index and input; each bug found
//! this way has a regression test of its own with the smallest input (tests/hostile.rs).

use crate::common;
use gp_lite::data::{self, DataError, Dataset};
use gp_lite::tokenize::{char_span_to_tokens, CharVocab, Encoding, Tokenizer};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// The harness

fn multiplier() -> usize {
    std::env::var("GP_LITE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1)
}

fn seed() -> u64 {
    std::env::var("GP_LITE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

/// Runs `cases x multiplier` cases of `check(rng, i)`; a case fails when it returns an error or
/// panics. Panics at the end with the first failures.
fn fuzz(name: &str, cases: usize, check: impl FnMut(&mut ChaCha8Rng, usize) -> Result<(), String>) {
    exhaustive(name, cases * multiplier(), check)
}

/// Exactly `n` cases (a list gone through once: not multiplied by `GP_LITE_FUZZ_CASES`).
fn exhaustive(name: &str, n: usize, mut check: impl FnMut(&mut ChaCha8Rng, usize) -> Result<(), String>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed() ^ fxhash(name));
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..n {
        let r = catch_unwind(AssertUnwindSafe(|| check(&mut rng, i)));
        let failure = match r {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            Err(p) => format!(
                "PANIC: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ),
        };
        failures.push(format!("case {i} (seed {}): {failure}", seed()));
    }
    std::panic::set_hook(hook);
    // Written to stderr itself so that the counts show even when the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "fuzz {name}: {n} cases, {} failures ({:.1} s)",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {n} cases failed; first:\n{}",
        failures.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Generators

/// Characters that break naive text handling: CJK, combining marks, emoji with joiners and
/// modifiers, right-to-left scripts and marks, zero-width characters, controls, odd whitespace.
const HOSTILE_CHARS: &[char] = &[
    '北',
    '京',
    '欢',
    '迎',
    '你',
    '医',
    '院',
    'a',
    'B',
    'z',
    '0',
    '9',
    '.',
    ',',
    '-',
    '\'',
    '"',
    '\\',
    '/',
    '{',
    '}',
    '[',
    ']',
    ':',
    'é',
    'ß',
    'İ',
    'ﬁ',
    '\u{301}',
    '\u{308}',
    '\u{20DD}',
    '\u{1F600}',
    '\u{1F468}',
    '\u{200D}',
    '\u{1F469}',
    '\u{1F3FD}',
    '\u{FE0F}',
    '\u{1F1EF}',
    '\u{1F1F5}',
    'ש',
    'ל',
    'ו',
    'م',
    'ر',
    'ح',
    '\u{200F}',
    '\u{202E}',
    '\u{200B}',
    '\u{200C}',
    '\u{FEFF}',
    '\u{2060}',
    '\0',
    '\u{1}',
    '\u{7}',
    '\u{1B}',
    '\u{7F}',
    '\u{85}',
    '\u{9F}',
    ' ',
    '\t',
    '\u{A0}',
    '\u{3000}',
    '\u{2028}',
    '\u{2029}',
    '\r',
    '\u{FFFD}',
    '\u{FFFF}',
    '\u{E000}',
    '\u{10FFFF}',
    '한',
    'ア',
    'ｶ',
    '𠀀',
    'Ω',
    'ॐ',
    'ก',
    '\u{E01}',
    '\u{E48}',
];

fn hostile_char(rng: &mut ChaCha8Rng) -> char {
    if rng.gen_bool(0.1) {
        // any scalar value
        loop {
            if let Some(c) = char::from_u32(rng.gen_range(0..0x11_0000)) {
                return c;
            }
        }
    }
    *HOSTILE_CHARS.choose(rng).unwrap()
}

fn hostile_text(rng: &mut ChaCha8Rng, max_len: usize) -> String {
    let n = rng.gen_range(0..=max_len);
    (0..n).map(|_| hostile_char(rng)).collect()
}

/// A hostile JSON value to put in place of a field.
fn hostile_value(rng: &mut ChaCha8Rng) -> Value {
    match rng.gen_range(0..16) {
        0 => json!(null),
        1 => json!(true),
        2 => json!(-1),
        3 => json!(i64::MIN),
        4 => json!(u64::MAX),
        5 => json!(1e300),
        6 => json!(-0.5),
        7 => json!(1_000_000_000_000u64),
        8 => json!(""),
        9 => json!("\u{0}\u{1}"),
        10 => json!([]),
        11 => json!({}),
        12 => json!([[1, 0]]),
        13 => json!(rng.gen_range(0..40)),
        14 => json!(hostile_text(rng, 6)),
        _ => json!([rng.gen_range(-3..40), rng.gen_range(-3..40)]),
    }
}

/// Replaces one random node of `v` (an object field, an array element, or `v` itself).
fn mutate_value(rng: &mut ChaCha8Rng, v: &mut Value) {
    let depth_stop = rng.gen_bool(0.25);
    match v {
        Value::Object(m) if !m.is_empty() && !depth_stop => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = keys.choose(rng).unwrap().clone();
            match rng.gen_range(0..5) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    let val = m.remove(&k).unwrap();
                    m.insert(format!("{k}\u{0}"), val);
                }
                _ => mutate_value(rng, m.get_mut(&k).unwrap()),
            }
        }
        Value::Array(a) if !a.is_empty() && !depth_stop => {
            let i = rng.gen_range(0..a.len());
            if rng.gen_bool(0.2) {
                a.swap(0, i);
                a.reverse();
            } else {
                mutate_value(rng, &mut a[i]);
            }
        }
        _ => *v = hostile_value(rng),
    }
}

/// Byte-level damage: flips, deletions, insertions, truncation, a line duplicated.
fn mutate_bytes(rng: &mut ChaCha8Rng, b: &mut Vec<u8>) {
    for _ in 0..rng.gen_range(1..4) {
        if b.is_empty() {
            b.push(rng.gen());
            continue;
        }
        let i = rng.gen_range(0..b.len());
        match rng.gen_range(0..6) {
            0 => b[i] = rng.gen(),
            1 => {
                b.remove(i);
            }
            2 => b.insert(
                i,
                *[b'"', b'\\', b'{', b'[', b'\n', 0, 0xff, 0xc3, b'\t']
                    .choose(rng)
                    .unwrap(),
            ),
            3 => b.truncate(i),
            4 => {
                let chunk = b[i..].to_vec();
                b.extend_from_slice(&chunk[..chunk.len().min(64)]);
            }
            _ => b[i] ^= 0x80,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data readers

/// A valid example: a text and entities `[start, end)` in characters.
fn example(rng: &mut ChaCha8Rng) -> (String, Vec<(usize, usize, String)>) {
    let text: String = (0..rng.gen_range(1..24)).map(|_| hostile_char(rng)).collect();
    let n = text.chars().count();
    let mut ents = Vec::new();
    for _ in 0..rng.gen_range(0..4) {
        let s = rng.gen_range(0..n);
        let e = rng.gen_range(s + 1..=n);
        ents.push((
            s,
            e,
            ["PER", "LOC", "x y", "类型"].choose(rng).unwrap().to_string(),
        ));
    }
    (text, ents)
}

fn chars(text: &str, s: usize, e: usize) -> String {
    text.chars().skip(s).take(e - s).collect()
}

fn cluener_line(rng: &mut ChaCha8Rng) -> Value {
    let (text, ents) = example(rng);
    let mut label = serde_json::Map::new();
    for (s, e, t) in ents {
        let by_type = label.entry(t).or_insert_with(|| json!({}));
        let mention = chars(&text, s, e);
        let spans = by_type
            .as_object_mut()
            .unwrap()
            .entry(mention)
            .or_insert_with(|| json!([]));
        spans.as_array_mut().unwrap().push(json!([s, e - 1]));
    }
    json!({"text": text, "label": label})
}

fn cmeee_record(rng: &mut ChaCha8Rng) -> Value {
    let (text, ents) = example(rng);
    let ents: Vec<Value> = ents
        .iter()
        .map(|(s, e, t)| json!({"start_idx": s, "end_idx": e - 1, "type": t, "entity": chars(&text, *s, *e)}))
        .collect();
    json!({"text": text, "entities": ents})
}

fn gp_line(rng: &mut ChaCha8Rng) -> Value {
    let (text, ents) = example(rng);
    let ents: Vec<Value> = ents
        .iter()
        .map(|(s, e, t)| json!({"start": s, "end": e, "type": t}))
        .collect();
    json!({"text": text, "entities": ents})
}

fn bio_file(rng: &mut ChaCha8Rng) -> String {
    let mut out = String::new();
    for _ in 0..rng.gen_range(1..4) {
        for _ in 0..rng.gen_range(1..6) {
            let word: String = (0..rng.gen_range(1..4))
                .map(|_| hostile_char(rng))
                .filter(|c| !c.is_whitespace())
                .collect();
            let word = if word.is_empty() { "w".into() } else { word };
            let tag = ["O", "B-PER", "I-PER", "E-LOC", "S-LOC", "B-LOC", "I-X"]
                .choose(rng)
                .unwrap();
            let sep = if rng.gen_bool(0.5) { "\t" } else { " NN " };
            out.push_str(&format!("{word}{sep}{tag}\n"));
        }
        out.push('\n');
    }
    out
}

/// Checks one reader outcome: entities inside their text, or an error naming the file and a line
/// of it.
fn check_outcome(r: Result<Dataset, DataError>, path: &Path, lines: usize) -> Result<(), String> {
    match r {
        Ok(d) => {
            for (x, &line) in d.examples.iter().zip(&d.lines) {
                let n = x.text.chars().count();
                for e in &x.entities {
                    if !(e.start < e.end && e.end <= n) {
                        return Err(format!("entity {e:?} outside text of {n} chars {:?}", x.text));
                    }
                }
                if line == 0 || line > lines + 1 {
                    return Err(format!("example line {line} outside the file's {lines} lines"));
                }
            }
            Ok(())
        }
        Err(e) => {
            let msg = e.to_string();
            let prefix = format!("{}:", path.display());
            if !msg.starts_with(&prefix) {
                return Err(format!("error does not name the file: {msg}"));
            }
            Ok(())
        }
    }
}

#[test]
fn fuzz_data_readers() {
    let path = PathBuf::from("fuzz-input");
    type Gen = fn(&mut ChaCha8Rng) -> String;
    type Parse = fn(&Path, &str) -> Result<Dataset, DataError>;
    let formats: [(&str, Gen, Parse); 5] = [
        (
            "cluener",
            |r| {
                (0..r.gen_range(1..4))
                    .map(|_| cluener_line(r).to_string() + "\n")
                    .collect()
            },
            data::cluener::parse,
        ),
        (
            "cmeee-array",
            |r| Value::Array((0..r.gen_range(1..4)).map(|_| cmeee_record(r)).collect()).to_string(),
            data::cmeee::parse,
        ),
        (
            "cmeee-lines",
            |r| {
                (0..r.gen_range(1..4))
                    .map(|_| cmeee_record(r).to_string() + "\n")
                    .collect()
            },
            data::cmeee::parse,
        ),
        (
            "gp-jsonl",
            |r| {
                (0..r.gen_range(1..4))
                    .map(|_| gp_line(r).to_string() + "\n")
                    .collect()
            },
            data::jsonl::parse,
        ),
        ("bio", bio_file, data::bio::parse),
    ];
    for (name, generate, parse) in formats {
        fuzz(&format!("data reader {name}"), 1500, |rng, _| {
            let text = generate(rng);
            // The unmutated file must parse.
            if rng.gen_bool(0.1) {
                let lines = text.lines().count();
                return match parse(&path, &text) {
                    Ok(d) => check_outcome(Ok(d), &path, lines),
                    Err(e) => Err(format!("valid input refused: {e}\n{text:?}")),
                };
            }
            let damaged = if name != "bio" && rng.gen_bool(0.6) {
                // structural: one field of one record
                let mut lines: Vec<String> = if name == "cmeee-array" {
                    vec![text.clone()]
                } else {
                    text.lines().map(String::from).collect()
                };
                let i = rng.gen_range(0..lines.len());
                let mut v: Value = serde_json::from_str(&lines[i]).unwrap();
                mutate_value(rng, &mut v);
                lines[i] = v.to_string();
                lines.join("\n")
            } else {
                let mut b = text.clone().into_bytes();
                mutate_bytes(rng, &mut b);
                String::from_utf8_lossy(&b).into_owned()
            };
            let lines = damaged.lines().count();
            check_outcome(parse(&path, &damaged), &path, lines)
                .map_err(|e| format!("{e}\ninput: {damaged:?}"))
        });
    }
}

#[test]
fn fuzz_data_files_with_invalid_utf8_and_random_bytes() {
    let dir = common::TempDir::new("fuzz-data");
    let path = dir.join("input.txt");
    fuzz("data files (random bytes, invalid UTF-8)", 300, |rng, i| {
        let mut b: Vec<u8> = if i % 2 == 0 {
            (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect()
        } else {
            (gp_line(rng).to_string() + "\n").into_bytes()
        };
        let at = rng.gen_range(0..=b.len());
        b.insert(at, *[0xff, 0xc0, 0x80, 0xed].choose(rng).unwrap());
        std::fs::write(&path, &b).unwrap();
        let format = [
            None,
            Some(data::Format::Cluener),
            Some(data::Format::Cmeee),
            Some(data::Format::Conll),
            Some(data::Format::Jsonl),
        ]
        .choose(rng)
        .unwrap()
        .to_owned();
        let lines = b.split(|&c| c == b'\n').count();
        check_outcome(data::read_dataset(&path, format), &path, lines)
    });
}

// ---------------------------------------------------------------------------------------------
// Tokenizers

/// Offsets inside the text, never decreasing, specials around the content; a content token's
/// character span maps back to that token (the round trip the trainer and predictor rely on).
fn check_encoding(text: &str, enc: &Encoding) -> Result<(), String> {
    let n = text.chars().count();
    let len = enc.len();
    if len < 2 || !enc.special[0] || !enc.special[len - 1] {
        return Err("no [CLS] ... [SEP]".into());
    }
    if enc.ids.len() != enc.offsets.len() || enc.ids.len() != enc.special.len() {
        return Err("ids, offsets and special differ in length".into());
    }
    let mut last = (0, 0);
    for i in 1..len - 1 {
        if enc.special[i] {
            continue;
        }
        let (s, e) = enc.offsets[i];
        if s > e || e > n {
            return Err(format!("token {i} offsets ({s}, {e}) outside text of {n} chars"));
        }
        if s < last.0 || e < last.1 {
            return Err(format!("token {i} offsets ({s}, {e}) decrease after {last:?}"));
        }
        last = (s, e);
        // A token whose span no other token overlaps maps back to itself alone. (HF tokenizers
        // may give overlapping spans: Unigram's metaspace `▁` shares the first character of the
        // unknown token after it.)
        // (Offsets never decrease, so only the neighbours can overlap; on long texts, where
        // char_span_to_tokens's scan would make this quadratic, every 97th token is checked.)
        let apart = |j: usize| enc.special[j] || enc.offsets[j].1 <= s || enc.offsets[j].0 >= e;
        let alone = apart(i - 1) && apart(i + 1);
        let sampled = len < 2000 || i % 97 == 0;
        if s < e && alone && sampled && char_span_to_tokens(enc, s, e) != Some((i, i)) {
            return Err(format!(
                "token {i} span ({s}, {e}) maps back to {:?}",
                char_span_to_tokens(enc, s, e)
            ));
        }
    }
    Ok(())
}

fn fuzz_tokenizer(name: &str, tok: &Tokenizer, cases: usize, exact_chars: bool) {
    fuzz(&format!("tokenizer {name}"), cases, |rng, i| {
        // Every 200th case is a 100k-character line.
        let text = if i % 200 == 199 {
            hostile_text(rng, 100_000)
        } else {
            hostile_text(rng, 40)
        };
        let enc = tok
            .encode(&text)
            .map_err(|e| format!("encode failed: {e} on {text:?}"))?;
        check_encoding(&text, &enc).map_err(|e| format!("{e}\ntext: {text:?}"))?;
        if exact_chars {
            // one token per non-whitespace character, in order: the offsets give the text back
            let chars: Vec<char> = text.chars().collect();
            let back: String = enc.offsets[1..enc.len() - 1]
                .iter()
                .map(|&(s, e)| chars[s..e].iter().collect::<String>())
                .collect();
            let want: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            if back != want {
                return Err(format!("round trip {back:?} != {want:?}"));
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_char_vocab_tokenizer() {
    let train = std::fs::read_to_string(common::fixture("cluener-sample/train.json")).unwrap();
    let vocab = CharVocab::build(train.lines(), 1);
    fuzz_tokenizer("char vocab", &Tokenizer::new(vocab), 3000, true);
}

#[test]
fn fuzz_wordpiece_tokenizers() {
    let vocab = common::fixture("tiny-vocab/vocab.txt");
    let per_char = Tokenizer::load_as(common::fixture("tiny-vocab"), "chars").unwrap();
    fuzz_tokenizer(
        "one token per character (WordPiece vocab.txt)",
        &per_char,
        1000,
        false,
    );
    for lowercase in [true, false] {
        let tok = Tokenizer::from_vocab_txt(&vocab, lowercase).unwrap();
        fuzz_tokenizer(
            &format!("WordPiece vocab.txt lowercase={lowercase}"),
            &tok,
            1500,
            false,
        );
        // the same tokenizer written as tokenizer.json and read back
        let dir = common::TempDir::new("fuzz-wp");
        tok.save(&dir.0).unwrap();
        let json = Tokenizer::from_tokenizer_json(dir.join("tokenizer.json")).unwrap();
        fuzz_tokenizer(
            &format!("WordPiece tokenizer.json lowercase={lowercase}"),
            &json,
            1000,
            false,
        );
    }
}

#[test]
fn fuzz_unigram_tokenizer_json() {
    let Some(path) = crate::common::shared::shared_file(
        "models/e5-small-zh/tokenizer.json",
        "fuzz::fuzz_unigram_tokenizer_json",
    ) else {
        return;
    };
    let tok = Tokenizer::from_tokenizer_json(&path).unwrap();
    fuzz_tokenizer("Unigram tokenizer.json (e5-small-zh)", &tok, 1500, false);
    let per_char = Tokenizer::load_as(path.parent().unwrap(), "chars").unwrap();
    fuzz_tokenizer("one token per character (e5-small-zh)", &per_char, 1500, false);
}

// ---------------------------------------------------------------------------------------------
// Model directories, prediction and the C API

use gp_lite::bert::BertConfig;
use gp_lite::decode::DecodeMode;
use gp_lite::head::{CrfConfig, GlobalPointerConfig, HeadConfig};
use gp_lite::infer::Workspace;
use gp_lite::model::{ModelConfig, NerModel};
use gp_lite::model_dir::{load_model, save_model};
use gp_lite::predict::{PredictOptions, Predictor};

/// A randomly initialised micro model (1 layer, hidden 32, max_len 16, GlobalPointer) with a
/// character vocabulary of the CLUENER sample, saved in a fresh directory.
fn micro_model_dir(tag: &str) -> common::TempDir {
    micro_model_dir_with(
        tag,
        HeadConfig::new(
            "gp",
            &GlobalPointerConfig {
                head_size: 8,
                rope: true,
            },
        ),
    )
}

fn micro_model_dir_with(tag: &str, head: HeadConfig) -> common::TempDir {
    let mut encoder = BertConfig::preset("tiny", 0).unwrap();
    encoder.hidden_size = 32;
    encoder.num_hidden_layers = 1;
    encoder.intermediate_size = 64;
    encoder.max_position_embeddings = 64;
    let train = std::fs::read_to_string(common::fixture("cluener-sample/train.json")).unwrap();
    let vocab = CharVocab::build(train.lines(), 1);
    encoder.vocab_size = vocab.len();
    let config = ModelConfig {
        encoder,
        head,
        labels: vec!["name".into(), "place".into(), "thing".into()],
        max_len: 16,
        tokenization: None,
        boundaries: Default::default(),
        decode: Default::default(),
        precision: Default::default(),
    };
    let model = NerModel::<f32>::new(config, &mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let dir = common::TempDir::new(tag);
    save_model(&dir.0, &model, &Tokenizer::new(vocab)).unwrap();
    dir
}

/// Entities inside their text and in order.
fn check_predictions(texts: &[&str], preds: &[Vec<gp_lite::predict::PredEntity>]) -> Result<(), String> {
    if preds.len() != texts.len() {
        return Err(format!("{} answers for {} texts", preds.len(), texts.len()));
    }
    for (t, ents) in texts.iter().zip(preds) {
        let n = t.chars().count();
        for e in ents {
            if !(e.start < e.end && e.end <= n) {
                return Err(format!(
                    "entity {}..{} outside a text of {n} characters",
                    e.start, e.end
                ));
            }
        }
        if ents
            .windows(2)
            .any(|w| (w[0].start, w[0].end) > (w[1].start, w[1].end))
        {
            return Err("entities out of order".into());
        }
    }
    Ok(())
}

fn predict_some(p: &Predictor<f32>, texts: &[&str], threshold: f64) -> Result<(), String> {
    let opts = PredictOptions {
        threshold,
        ..PredictOptions::default()
    };
    match p.predict(texts, &opts, &mut Workspace::new()) {
        Ok(preds) => check_predictions(texts, &preds),
        Err(e) => Err(format!("prediction failed: {e}")),
    }
}

/// The parts of a safetensors file: header length, header JSON, data.
fn split_safetensors(b: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&b[8..8 + n]).unwrap(), b[8 + n..].to_vec())
}

fn join_safetensors(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// An error that names a file of the model directory.
fn names_a_file(msg: &str) -> bool {
    ["config.json", "model.safetensors", "vocab.txt", "tokenizer"]
        .iter()
        .any(|f| msg.contains(f))
}

#[test]
fn fuzz_model_directories() {
    let good = micro_model_dir("fuzz-model-good");
    let config = std::fs::read_to_string(good.join("config.json")).unwrap();
    let weights = std::fs::read(good.join("model.safetensors")).unwrap();
    let case = common::TempDir::new("fuzz-model-case");
    std::fs::copy(good.join("vocab.txt"), case.join("vocab.txt")).unwrap();
    let (header, data) = split_safetensors(&weights);
    let header_end = weights.len() - data.len();
    // Section boundaries: the length prefix, the header, each tensor's start and end.
    let mut cuts: Vec<usize> = (0..=header_end.min(64)).collect();
    cuts.extend([header_end - 1, header_end, header_end + 1]);
    for (name, t) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let o = t["data_offsets"].as_array().unwrap();
        for off in o {
            let at = header_end + off.as_u64().unwrap() as usize;
            cuts.extend([at.saturating_sub(1), at, at + 1]);
        }
    }
    cuts.retain(|&c| c < weights.len());
    cuts.sort();
    cuts.dedup();
    let load = |what: &str| -> Result<(), String> {
        match load_model::<f32>(&case.0) {
            Ok(p) => predict_some(&p, &["北京欢迎你", "", " "], 0.0).map_err(|e| format!("{what}: {e}")),
            Err(e) if names_a_file(&e.to_string()) => Ok(()),
            Err(e) => Err(format!("{what}: error names no file: {e}")),
        }
    };
    std::fs::write(case.join("config.json"), &config).unwrap();
    // Every cut of the weights must be refused (the file lacks tensors).
    let mut cut_iter = cuts.clone().into_iter();
    exhaustive(
        "model.safetensors truncated at every section boundary",
        cuts.len(),
        |_, _| {
            let at = cut_iter.next().unwrap();
            std::fs::write(case.join("model.safetensors"), &weights[..at]).unwrap();
            match load_model::<f32>(&case.0) {
                Ok(_) => Err(format!("truncated at {at} of {} bytes but loaded", weights.len())),
                Err(e) if names_a_file(&e.to_string()) => Ok(()),
                Err(e) => Err(format!("cut at {at}: error names no file: {e}")),
            }
        },
    );
    fuzz("model.safetensors with a lying header", 600, |rng, _| {
        let mut h = header.clone();
        let bytes = match rng.gen_range(0..4) {
            0 => {
                mutate_value(rng, &mut h);
                join_safetensors(&h, &data)
            }
            1 => {
                // one tensor's shape, offsets or dtype
                let names: Vec<String> = h
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|k| *k != "__metadata__")
                    .cloned()
                    .collect();
                let t = &mut h[names.choose(rng).unwrap().as_str()];
                match rng.gen_range(0..4) {
                    0 => {
                        t["dtype"] = json!(["F16", "BF16", "F64", "I8", "BOOL", "U8", "F8_E4M3", "XX", "I32"]
                            .choose(rng)
                            .unwrap())
                    }
                    1 => {
                        let s = t["shape"].as_array_mut().unwrap();
                        if s.is_empty() {
                            s.push(json!(2));
                        } else {
                            let i = rng.gen_range(0..s.len());
                            s[i] = json!([0u64, 1, 3, 1 << 20, 1 << 40, u64::MAX].choose(rng).unwrap());
                        }
                    }
                    2 => t["shape"].as_array_mut().unwrap().reverse(),
                    _ => {
                        let o = t["data_offsets"].as_array_mut().unwrap();
                        let i = rng.gen_range(0..2);
                        o[i] = json!([0u64, 4, u64::MAX, 1 << 33, data.len() as u64 + 4]
                            .choose(rng)
                            .unwrap());
                    }
                }
                join_safetensors(&h, &data)
            }
            2 => {
                // the declared header length
                let mut b = weights.clone();
                let n = [
                    u64::MAX,
                    1 << 40,
                    100_000_001,
                    header_end as u64,
                    (header_end - 9) as u64,
                    0,
                    1,
                    7,
                ];
                b[..8].copy_from_slice(&n.choose(rng).unwrap().to_le_bytes());
                b
            }
            _ => {
                let mut b = weights.clone();
                mutate_bytes(rng, &mut b);
                b
            }
        };
        std::fs::write(case.join("model.safetensors"), &bytes).unwrap();
        load("lying header")
    });
    std::fs::write(case.join("model.safetensors"), &weights).unwrap();
    let config_value: Value = serde_json::from_str(&config).unwrap();
    fuzz("config.json with absurd and mistyped fields", 600, |rng, _| {
        let mut c = config_value.clone();
        if rng.gen_bool(0.5) {
            // a size field set to an absurd number
            let fields = [
                "/encoder/vocab_size",
                "/encoder/hidden_size",
                "/encoder/num_hidden_layers",
                "/encoder/num_attention_heads",
                "/encoder/intermediate_size",
                "/encoder/max_position_embeddings",
                "/encoder/type_vocab_size",
                "/head/head_size",
                "/max_len",
                "/encoder/layer_norm_eps",
                "/encoder/hidden_dropout_prob",
            ];
            let v = [
                json!(0),
                json!(1),
                json!(3),
                json!(-1),
                json!(1e12),
                json!(1_000_000_000_000u64),
                json!(1_000_000_000),
                json!(u64::MAX),
                json!(usize::MAX / 2),
                json!(1e300),
                json!("64"),
            ]
            .choose(rng)
            .unwrap()
            .clone();
            *c.pointer_mut(fields.choose(rng).unwrap()).unwrap() = v;
        } else {
            mutate_value(rng, &mut c);
        }
        std::fs::write(case.join("config.json"), c.to_string()).unwrap();
        load(&format!("config {c}"))
    });
}

#[test]
fn fuzz_predict_texts() {
    let dir = micro_model_dir("fuzz-predict");
    let p: Predictor<f32> = load_model(&dir.0).unwrap();
    for head in [
        HeadConfig::new(
            "egp",
            &GlobalPointerConfig {
                head_size: 8,
                rope: false,
            },
        ),
        HeadConfig::new(
            "crf",
            &CrfConfig {
                transition_lr_multiplier: 1.0,
            },
        ),
        HeadConfig::new(
            "additive",
            &GlobalPointerConfig {
                head_size: 8,
                rope: true,
            },
        ),
    ] {
        let name = head.kind.clone();
        let other = micro_model_dir_with("fuzz-predict-head", head);
        let q: Predictor<f32> = load_model(&other.0).unwrap();
        fuzz(
            &format!("predict on hostile texts ({name} head)"),
            300,
            |rng, i| {
                let texts: Vec<String> = (0..rng.gen_range(1..4)).map(|_| hostile_text(rng, 60)).collect();
                let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
                let threshold = if i % 3 == 0 { f64::NEG_INFINITY } else { 0.0 };
                predict_some(&q, &refs, threshold).map_err(|e| format!("{e}\ntexts: {texts:?}"))
            },
        );
    }
    fuzz("predict on hostile texts", 1500, |rng, i| {
        let texts: Vec<String> = (0..rng.gen_range(1..5))
            .map(|_| match rng.gen_range(0..5) {
                0 => String::new(),
                1 => " \t\u{3000}\u{A0}".repeat(rng.gen_range(1..30)),
                2 => "\u{1F600}\u{1F468}\u{200D}\u{1F469}".repeat(rng.gen_range(1..30)),
                _ => hostile_text(rng, 60),
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        // every span reported on some cases: offsets of all of them are checked
        let threshold = if i % 3 == 0 { f64::NEG_INFINITY } else { 0.0 };
        predict_some(&p, &refs, threshold).map_err(|e| format!("{e}\ntexts: {texts:?}"))
    });
    // One text of 1 MB (half that without GP_LITE_FUZZ_CASES): windows all along it.
    let big: String = {
        let mut rng = ChaCha8Rng::seed_from_u64(seed());
        let target = if multiplier() > 1 { 1 << 20 } else { 1 << 19 };
        let mut s = String::with_capacity(target + 8);
        while s.len() < target {
            s.push(hostile_char(&mut rng));
        }
        s
    };
    let flat = PredictOptions {
        mode: Some(DecodeMode::Flat),
        ..PredictOptions::default()
    };
    let started = std::time::Instant::now();
    let preds = p.predict(&[&big], &flat, &mut Workspace::new()).unwrap();
    check_predictions(&[&big], &preds).unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "fuzz predict: one text of {} bytes, {} entities ({:.1} s)",
        big.len(),
        preds[0].len(),
        started.elapsed().as_secs_f64()
    );
}

mod c_api {
    use super::*;
    use gp_lite::ffi::*;
    use std::ffi::{CStr, CString};

    /// Predicts `text` through the C API: Ok(entities as byte spans) or Err(message).
    fn c_predict(m: *const GpModel, text: &[u8]) -> Result<Vec<(usize, usize)>, String> {
        let mut out: *mut GpEntities = std::ptr::null_mut();
        let mut err: *mut GpError = std::ptr::null_mut();
        // SAFETY: `m` is a live model, `text` is valid for its length, out/err are writable.
        unsafe {
            let rc = gp_predict(m, text.as_ptr() as *const _, text.len(), &mut out, &mut err);
            if rc != GP_OK {
                let msg = CStr::from_ptr(gp_error_message(err))
                    .to_string_lossy()
                    .into_owned();
                gp_error_free(err);
                assert!(out.is_null());
                return Err(msg);
            }
            let spans = (0..gp_entities_len(out))
                .map(|i| {
                    let e = &*gp_entities_get(out, i);
                    (e.start, e.end)
                })
                .collect();
            gp_entities_free(out);
            Ok(spans)
        }
    }

    #[test]
    fn fuzz_c_api_texts() {
        let dir = micro_model_dir("fuzz-c");
        let path = CString::new(dir.0.to_str().unwrap()).unwrap();
        let mut err: *mut GpError = std::ptr::null_mut();
        // SAFETY: a NUL-terminated path and a writable error pointer.
        let m = unsafe { gp_model_load_threads(path.as_ptr(), 2, &mut err) };
        assert!(!m.is_null());
        let base = "北京欢迎你 to the café 😀!".as_bytes().to_vec();
        let mut cases = Vec::new();
        for i in 0..base.len() {
            for bad in [0x80u8, 0xc0, 0xff, 0xed] {
                let mut b = base.clone();
                b[i] = bad;
                cases.push((i, b));
            }
        }
        let mut it = cases.into_iter();
        let n = it.len();
        exhaustive("C gp_predict with invalid UTF-8 at every position", n, |_, _| {
            let (i, b) = it.next().unwrap();
            match (std::str::from_utf8(&b), c_predict(m, &b)) {
                (Err(e), Err(msg)) => {
                    let want = format!("invalid byte at position {}", e.valid_up_to());
                    if msg.contains(&want) {
                        Ok(())
                    } else {
                        Err(format!("byte {i}: message {msg:?} lacks {want:?}"))
                    }
                }
                (Ok(t), Ok(spans)) => check_byte_spans(t, &spans),
                (Ok(_), Err(msg)) => Err(format!("valid text refused: {msg}")),
                (Err(_), Ok(_)) => Err(format!("invalid UTF-8 (byte {i}) accepted")),
            }
        });
        fuzz("C gp_predict on hostile texts", 600, |rng, _| {
            let t = match rng.gen_range(0..4) {
                0 => String::new(),
                1 => " \n\t\u{3000}".repeat(rng.gen_range(1..50)),
                _ => hostile_text(rng, 80),
            };
            let spans = c_predict(m, t.as_bytes()).map_err(|e| format!("{e} on {t:?}"))?;
            check_byte_spans(&t, &spans)
        });
        let big = "患者有糖尿病，服用二甲双胍。 ".repeat(40_000);
        let spans = c_predict(m, big.as_bytes()).unwrap();
        check_byte_spans(&big, &spans).unwrap();
        let _ = writeln!(
            std::io::stderr(),
            "fuzz C gp_predict: one text of {} bytes, {} entities",
            big.len(),
            spans.len()
        );
        // SAFETY: `m` came from gp_model_load_threads and is not used afterwards.
        unsafe { gp_model_free(m) };
    }

    fn check_byte_spans(t: &str, spans: &[(usize, usize)]) -> Result<(), String> {
        for &(s, e) in spans {
            if !(s < e && e <= t.len() && t.is_char_boundary(s) && t.is_char_boundary(e)) {
                return Err(format!("byte span {s}..{e} is not a span of characters of {t:?}"));
            }
        }
        Ok(())
    }
}

/// Regression: `num_hidden_layers: 1000000000` in config.json made `gp-lite predict` abort
/// (exit 134, an allocation failure) instead of refusing the directory.
#[test]
fn a_billion_layers_is_refused_not_an_abort() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let dir = micro_model_dir("billion-layers");
    let path = dir.join("config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    c["encoder"]["num_hidden_layers"] = json!(1_000_000_000u64);
    std::fs::write(&path, c.to_string()).unwrap();
    let mut child = Command::new(common::BIN)
        .args(["predict", "--model"])
        .arg(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all("北京欢迎你\n".as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("model.safetensors") && err.contains("config.json declares"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// The caching allocator the gp-lite binary installs is this test binary's too (tests/it/main.rs):
// every case above runs on it, and the tests below need it global.

/// Regression: the free lists were `Vec`s pushed under their lock. The 8,193rd cached block of
/// one class grew its list's buffer to 128 KiB, a request of that same class: the allocator
/// waited for the lock its own thread held, and the free never returned. 12,000 blocks of
/// 128 KiB are freed (the list crosses 8,192 even if other tests evict some meanwhile) on a
/// thread watched from here; a hang ends the test binary with a message instead of hanging CI.
#[test]
fn freeing_thousands_of_cached_blocks_does_not_deadlock() {
    const BLOCKS: usize = 12_000;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|_| Vec::with_capacity(128 << 10)).collect();
        drop(blocks);
        // Reused from the cache, each block once.
        let again: Vec<Vec<u8>> = (0..BLOCKS).map(|_| Vec::with_capacity(128 << 10)).collect();
        let distinct: std::collections::BTreeSet<usize> = again.iter().map(|v| v.as_ptr() as usize).collect();
        assert_eq!(distinct.len(), BLOCKS, "a block was handed out twice");
        let _ = done_tx.send(());
    });
    // Not a timing assertion: the work takes well under a second; two minutes means a hang.
    match done_rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            // The worker holds a free list's lock forever, and so would every later allocation
            // of that size: end the whole binary.
            let _ = writeln!(
                std::io::stderr(),
                "freeing_thousands_of_cached_blocks_does_not_deadlock: {BLOCKS} frees of 128 KiB \
                 did not finish in 2 minutes (the caching allocator deadlocked)"
            );
            std::process::exit(1);
        }
    }
}

/// Regression: requests above the last size class (about 1.75 * 2^47 bytes) indexed past the
/// free lists and panicked inside the allocator, which aborted the process ("failed to initiate
/// panic") where the system allocator refuses: `try_reserve` must return an error.
#[test]
fn huge_requests_are_refused_not_an_abort() {
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve_exact(1 << 48).is_err());
    assert!(v.try_reserve_exact(isize::MAX as usize - 64).is_err());
    let mut s = String::from("kept");
    assert!(s.try_reserve(7 << 46).is_err());
    assert_eq!(s, "kept");
    // Grown from a cached size past the classes: refused, the buffer intact.
    let mut w = vec![3u8; 300_000];
    assert!(w.try_reserve_exact(1 << 48).is_err());
    assert!(w.iter().all(|&b| b == 3) && w.len() == 300_000);
}

/// A sparse file of 300 TiB (nothing on disk) named `name` in a fresh directory, where a
/// filesystem allows one (ext4 stops at 16 TiB; tmpfs does not): the temporary directory, else
/// /dev/shm. None (the test prints SKIPPED) when neither does.
fn sparse_300_tib(tag: &str, name: &str) -> Option<(common::TempDir, PathBuf)> {
    let candidates = [std::env::temp_dir(), PathBuf::from("/dev/shm")];
    for base in candidates {
        let dir = base.join(format!("gp-lite-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        let dir = common::TempDir(dir);
        let path = dir.join(name);
        let ok = std::fs::File::create(&path)
            .and_then(|f| f.set_len(300 << 40))
            .is_ok();
        if ok {
            return Some((dir, path));
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {tag}: no filesystem here holds a sparse 300 TiB file"
    );
    None
}

/// Regression: a 300 TiB (sparse) config.json or training file made `gp-lite` exit 101 with a
/// panic inside the allocator; reading it must fail with an error naming the file (exit 1),
/// as with the system allocator, in process and through the binary.
#[test]
fn a_300_tib_input_file_is_an_error_naming_it() {
    use std::process::Command;
    let Some((model, config)) = sparse_300_tib("sparse-config", "config.json") else {
        return;
    };
    let e = gp_lite::model_dir::load_model::<f32>(&model.0)
        .err()
        .expect("a 300 TiB config.json loaded");
    assert!(e.to_string().contains("config.json"), "{e}");
    let input = model.join("in.txt");
    std::fs::write(&input, "北京欢迎你\n").unwrap();
    let out = Command::new(common::BIN)
        .args(["predict", "--model"])
        .arg(&model.0)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "predict: {err}");
    assert!(err.contains(&*config.to_string_lossy()), "predict: {err}");
    let Some((data, train)) = sparse_300_tib("sparse-train", "train.json") else {
        return;
    };
    let out = Command::new(common::BIN)
        .arg("train")
        .arg("--train")
        .arg(&train)
        .arg("--dev")
        .arg(common::dev_file())
        .arg("--out")
        .arg(data.join("model"))
        .args(["--epochs", "1", "--quiet"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "train: {err}");
    assert!(err.contains("train.json"), "train: {err}");
    println!("300 TiB files: {}", err.trim());
}
