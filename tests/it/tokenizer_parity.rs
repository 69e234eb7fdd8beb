//! Tokenizer parity with the Python `tokenizers` package on ../shared/reference/encoder.json, for
//! minilm-l6's tokenizer.json and for WordPiece built from its vocab.txt.

use crate::common::shared::{reference_file, shared_file};
use gp_lite::tokenize::{windows, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    text: String,
    ids: Vec<u32>,
    tokens: Vec<String>,
    offsets: Vec<(usize, usize)>,
}

fn references(test: &str) -> Option<Vec<Reference>> {
    let path = reference_file("encoder.json", test)?;
    let text = std::fs::read_to_string(path).unwrap();
    Some(serde_json::from_str(&text).unwrap())
}

fn check(tok: &Tokenizer, refs: &[Reference]) {
    for r in refs {
        let e = tok.encode(&r.text).unwrap();
        assert_eq!(e.ids, r.ids, "ids of {:?} ({:?})", r.text, r.tokens);
        assert_eq!(e.offsets, r.offsets, "offsets of {:?}", r.text);
        let specials: Vec<bool> = r.tokens.iter().map(|t| t == "[CLS]" || t == "[SEP]").collect();
        assert_eq!(e.special, specials, "special mask of {:?}", r.text);
    }
}

#[test]
fn tokenizer_json_matches_reference() {
    let test = "tokenizer_json_matches_reference";
    let (Some(refs), Some(path)) = (
        references(test),
        shared_file("models/minilm-l6/tokenizer.json", test),
    ) else {
        return;
    };
    let tok = Tokenizer::from_tokenizer_json(path).unwrap();
    check(&tok, &refs);
    assert_eq!(tok.vocab_size(), 30522);
    assert_eq!(tok.pad_id(), 0);
}

#[test]
fn vocab_txt_wordpiece_matches_reference() {
    let test = "vocab_txt_wordpiece_matches_reference";
    let (Some(refs), Some(path)) = (references(test), shared_file("models/minilm-l6/vocab.txt", test)) else {
        return;
    };
    let tok = Tokenizer::from_vocab_txt(path, true).unwrap();
    check(&tok, &refs);
    assert_eq!(tok.vocab_size(), 30522);
}

#[test]
fn model_dir_loads_tokenizer_json_without_padding() {
    let test = "model_dir_loads_tokenizer_json_without_padding";
    let Some(dir) = shared_file("models/minilm-l6", test) else {
        return;
    };
    let tok = Tokenizer::load(dir).unwrap();
    // the file asks for padding to 128: a 3-token text must stay 3 tokens
    assert_eq!(tok.encode("hello").unwrap().ids, vec![101, 7592, 102]);
    // and for truncation to 128: a long text must not be cut
    let long = "word ".repeat(300);
    let e = tok.encode(&long).unwrap();
    assert_eq!(e.len(), 302);
    let ws = windows(&e, 128, 64).unwrap();
    assert!(ws.iter().all(|w| w.encoding.len() <= 128));
    assert_eq!(ws.first().unwrap().tokens.start, 1);
    assert_eq!(ws.last().unwrap().tokens.end, 301);
    for pair in ws.windows(2) {
        assert!(pair[1].tokens.start < pair[0].tokens.end, "windows must overlap");
    }
}

/// One token per character on e5-small-zh (Unigram tokenizer.json): every non-whitespace
/// character of every CLUENER training text is one token covering exactly it, between `<s>` and
/// `</s>`, and (SOURCE.md there) all but about 0.02% are pieces of the vocabulary, not `<unk>`.
#[test]
fn per_character_e5_on_cluener() {
    let test = "per_character_e5_on_cluener";
    let Some(tok) = crate::common::shared::shared_file("models/e5-small-zh/tokenizer.json", test) else {
        return;
    };
    let Some(data) = crate::common::shared::shared_file("data/cluener/train.json", test) else {
        return;
    };
    let t = Tokenizer::from_tokenizer_json(tok).unwrap().per_char().unwrap();
    let d = gp_lite::data::read_dataset(data, None).unwrap();
    let (mut chars, mut unk) = (0usize, 0usize);
    for ex in &d.examples {
        let e = t.encode(&ex.text).unwrap();
        let want: Vec<(usize, usize)> = ex
            .text
            .chars()
            .enumerate()
            .filter(|(_, c)| !c.is_whitespace())
            .map(|(i, _)| (i, i + 1))
            .collect();
        assert_eq!(&e.offsets[1..e.len() - 1], &want[..], "{}", ex.text);
        assert_eq!((e.ids[0], e.ids[e.len() - 1]), (0, 2), "<s> and </s>");
        chars += want.len();
        unk += e.ids.iter().filter(|&&i| i == 3).count();
    }
    let rate = unk as f64 / chars as f64;
    eprintln!(
        "e5 per character: {unk} <unk> of {chars} characters ({:.4}%)",
        100.0 * rate
    );
    assert!(rate < 5e-4, "{rate}");
}
