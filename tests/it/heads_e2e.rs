//! End to end through the binary for what issue 9 added: the CRF head on flat and nested data,
//! word boundaries learned from column files, and one token per character on a pretrained
//! Chinese encoder (../shared/models/e5-small-zh), also through the C API; and the additive head
//! of issue 23 trained, saved, evaluated and used for prediction.

use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::io::Write;

use crate::common::cli::{json_file, ok, ok_json_lines, s, train_args};
use crate::common::{dev_file, fixture, TempDir};

/// Every entity's `text` is the characters at its offsets; returns (start, end, type) per line.
fn check_entities(lines: &[Value], texts: &[&str]) -> Vec<Vec<(usize, usize, String)>> {
    assert_eq!(lines.len(), texts.len());
    lines
        .iter()
        .zip(texts)
        .map(|(l, t)| {
            let chars: Vec<char> = t.chars().collect();
            l["entities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let (a, b) = (
                        e["start"].as_u64().unwrap() as usize,
                        e["end"].as_u64().unwrap() as usize,
                    );
                    assert!(a < b && b <= chars.len(), "{e} in {t:?}");
                    assert_eq!(
                        e["text"].as_str().unwrap(),
                        chars[a..b].iter().collect::<String>()
                    );
                    (a, b, e["type"].as_str().unwrap().to_string())
                })
                .collect()
        })
        .collect()
}

fn no_overlaps(spans: &[(usize, usize, String)]) -> bool {
    spans.windows(2).all(|w| w[0].1 <= w[1].0)
}

#[test]
fn crf_head_on_flat_data() {
    let dir = TempDir::new("crf-flat");
    let out = dir.join("model");
    let train = fixture("cluener-sample/train.json");
    let dev = dev_file();
    let mut args = train_args(&train, Some(&dev), &out, "4");
    args.extend(["--head", "crf"]);
    ok(&args);
    let config = json_file(&out.join("config.json"));
    assert_eq!(config["head"]["kind"], "crf");
    assert_eq!(config["head"]["transition_lr_multiplier"], 100.0);
    assert_eq!(config["decode"], "flat");
    let record = json_file(&out.join("training.json"));
    assert_eq!(record["head_left_out_spans"], 0);
    let f1s: Vec<f64> = record["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["dev_f1"].as_f64().unwrap())
        .collect();
    // It learns: the best epoch finds entities.
    assert!(f1s.iter().cloned().fold(0.0, f64::max) > 0.02, "{f1s:?}");

    let ev = ok(&["eval", "--model", s(&out), "--data", s(&dev_file()), "--json"]);
    let ev: Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(ev["gold"], 471);
    assert!((ev["f1"].as_f64().unwrap() - record["best_dev_f1"].as_f64().unwrap()).abs() < 1e-12);

    let texts = ["北京大学的张三在上海工作", "", "中国人民银行发布了公告"];
    let lines = ok_json_lines(
        &["predict", "--model", s(&out), "--nested"],
        &(texts.join("\n") + "\n"),
    );
    for spans in check_entities(&lines, &texts) {
        // A tag sequence cannot nest, even when nested output is asked for.
        assert!(no_overlaps(&spans), "{spans:?}");
    }
}

/// The additive head (issue 23): `--head additive` on the bundled sample; its settings from
/// `--head-size` / `--no-rope`, its tensors under `head.`, the saved model evaluated to the
/// training run's best dev F1 and predicting spans inside the text, nested on request.
#[test]
fn additive_head_end_to_end() {
    let dir = TempDir::new("additive");
    let train = fixture("cluener-sample/train.json");
    let out = dir.join("model");
    let dev = dev_file();
    let mut args = train_args(&train, Some(&dev), &out, "6");
    args.extend(["--head", "additive", "--head-size", "32"]);
    ok(&args);
    let config = json_file(&out.join("config.json"));
    assert_eq!(config["head"]["kind"], "additive");
    assert_eq!(config["head"]["head_size"], 32);
    assert_eq!(config["head"]["rope"], true);
    // A head that can nest, on data that does not: flat output by default.
    assert_eq!(config["decode"], "flat");
    let hidden = config["encoder"]["hidden_size"].as_u64().unwrap();
    let types = config["labels"].as_array().unwrap().len() as u64;
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let shape = |name: &str| -> Vec<u64> {
        st.tensor(name)
            .unwrap()
            .shape()
            .iter()
            .map(|&d| d as u64)
            .collect()
    };
    assert_eq!(shape("head.hidden.weight"), [32, 2 * hidden]);
    assert_eq!(shape("head.hidden.bias"), [32]);
    assert_eq!(shape("head.out.weight"), [types, 32]);
    assert_eq!(shape("head.out.bias"), [types]);

    // It learns: the loss falls and the best epoch finds entities (about 4 F1 after 6 epochs
    // of the tiny encoder; 22 after the sample's 30, docs/results.md).
    let record = json_file(&out.join("training.json"));
    let epochs = record["epochs"].as_array().unwrap();
    let loss = |e: &Value| e["train_loss"].as_f64().unwrap();
    assert!(loss(&epochs[5]) < 0.75 * loss(&epochs[0]), "{epochs:?}");
    let best = record["best_dev_f1"].as_f64().unwrap();
    assert!(best > 0.01, "best dev F1 {best}");
    let best_epoch = epochs
        .iter()
        .find(|e| e["dev_f1"].as_f64() == Some(best))
        .unwrap();
    // Saved and loaded: eval on the dev file gives the best epoch's precision and recall.
    let ev = ok(&["eval", "--model", s(&out), "--data", s(&dev_file()), "--json"]);
    let ev: Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(ev["gold"], 471);
    for (got, want) in [
        ("f1", "dev_f1"),
        ("precision", "dev_precision"),
        ("recall", "dev_recall"),
    ] {
        let (g, w) = (ev[got].as_f64().unwrap(), best_epoch[want].as_f64().unwrap());
        assert!((g - w).abs() < 1e-12, "{got}: {ev} vs {best_epoch}");
    }

    let texts = ["北京大学的张三在上海工作", "", "中国人民银行发布了公告"];
    let lines = ok_json_lines(&["predict", "--model", s(&out)], &(texts.join("\n") + "\n"));
    check_entities(&lines, &texts);
    // Nested, at a threshold every span passes: every span of every type (one token per
    // character).
    let all = ok_json_lines(
        &["predict", "--model", s(&out), "--nested", "--threshold=-1e9"],
        &(texts[0].to_string() + "\n"),
    );
    let n = texts[0].chars().count() as u64;
    assert_eq!(
        check_entities(&all, &texts[..1])[0].len() as u64,
        n * (n + 1) / 2 * types
    );

    // Without RoPE, from the command line's flags.
    let plain = dir.join("plain");
    let mut args = train_args(&train, None, &plain, "1");
    args.extend(["--head", "additive", "--no-rope", "--head-size", "16"]);
    ok(&args);
    let config = json_file(&plain.join("config.json"));
    assert_eq!(config["head"]["rope"], false);
    assert_eq!(config["head"]["head_size"], 16);
    ok(&["eval", "--model", s(&plain), "--data", s(&dev_file())]);
}

/// A small nested corpus: "X of Y" names where the whole and its parts are entities.
fn nested_corpus(dir: &TempDir) -> (std::path::PathBuf, usize, usize) {
    let path = dir.join("nested.jsonl");
    let mut f = std::fs::File::create(&path).unwrap();
    let (mut total, mut inner) = (0, 0);
    let places = ["paris", "rome", "oslo", "lima", "kyiv", "bern"];
    let orgs = ["bank", "museum", "school", "court"];
    for i in 0..120 {
        let (o, p) = (orgs[i % orgs.len()], places[i % places.len()]);
        let name = format!("{o} of {p}");
        let text = format!("we met at the {name} on day {i}");
        let start = 14;
        let mut ents = vec![
            serde_json::json!({"start": start, "end": start + name.len(), "type": "ORG"}),
            serde_json::json!({"start": start + o.len() + 4, "end": start + name.len(), "type": "LOC"}),
        ];
        total += 2;
        inner += 1;
        if i % 3 == 0 {
            ents.push(serde_json::json!({"start": start, "end": start + o.len(), "type": "ORG"}));
            total += 1;
            inner += 1;
        }
        writeln!(f, "{}", serde_json::json!({"text": text, "entities": ents})).unwrap();
    }
    (path, total, inner)
}

#[test]
fn crf_head_on_nested_data() {
    let dir = TempDir::new("crf-nested");
    let (data, total, inner) = nested_corpus(&dir);
    let out = dir.join("model");
    let mut args = train_args(&data, Some(&data), &out, "3");
    // not --quiet: the run's summary on stderr is checked
    args.retain(|&a| a != "--quiet");
    args.extend(["--head", "crf"]);
    let log = ok(&args);
    // The outermost span of each nest is kept; the others are counted and reported.
    let record = json_file(&out.join("training.json"));
    assert_eq!(record["head_left_out_spans"], inner as u64);
    let stderr = String::from_utf8_lossy(&log.stderr);
    assert!(
        stderr.contains(&format!("{inner} the crf head cannot learn")),
        "{stderr}"
    );
    // Evaluation still scores against every gold span.
    let ev = ok(&["eval", "--model", s(&out), "--data", s(&data), "--json"]);
    let ev: Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(ev["gold"], total as u64);
    assert!(ev["recall"].as_f64().unwrap() <= (total - inner) as f64 / total as f64 + 1e-12);
    // The same data under GlobalPointer keeps every span and decodes nested by default.
    let gp = dir.join("gp");
    ok(&train_args(&data, None, &gp, "1"));
    assert_eq!(json_file(&gp.join("config.json"))["decode"], "nested");
    assert_eq!(json_file(&gp.join("training.json"))["head_left_out_spans"], 0);
}

#[test]
fn word_boundaries_from_column_data() {
    let dir = TempDir::new("words");
    // Words of fixtures/tiny-vocab that WordPiece splits: playing = play ##ing, games = game ##s,
    // unplayable = un ##play ##able.
    let path = dir.join("train.txt");
    let mut f = std::fs::File::create(&path).unwrap();
    let words = ["the", "game", "playing", "unplayable", "games", "play", "!"];
    for i in 0..60 {
        for k in 0..6 {
            let w = words[(i * 7 + k * 3) % words.len()];
            let tag = match (w, k % 2) {
                ("unplayable", _) => "B-X",
                ("games", 0) => "B-Y",
                _ => "O",
            };
            writeln!(f, "{w} {tag}").unwrap();
        }
        writeln!(f).unwrap();
    }
    drop(f);
    let out = dir.join("model");
    let vocab = fixture("tiny-vocab/vocab.txt");
    let mut args = train_args(&path, None, &out, "1");
    args.extend(["--config", "tiny", "--vocab", s(&vocab)]);
    ok(&args);
    let config = json_file(&out.join("config.json"));
    assert_eq!(config["boundaries"], "words");
    assert_eq!(config["tokenization"], "subwords");
    // Every span the model can output, at a threshold below every score: none starts or ends
    // inside a word.
    let texts = ["playing unplayable games", "the games! unplayable"];
    let lines = ok_json_lines(
        &["predict", "--model", s(&out), "--nested", "--threshold=-1e9"],
        &(texts.join("\n") + "\n"),
    );
    for (spans, text) in check_entities(&lines, &texts).iter().zip(texts) {
        let chars: Vec<char> = text.chars().collect();
        assert!(!spans.is_empty());
        for (a, b, _) in spans {
            assert!(*a == 0 || chars[a - 1] == ' ', "{text:?} [{a}, {b})");
            assert!(*b == chars.len() || chars[*b] == ' ', "{text:?} [{a}, {b})");
        }
    }
    // With --boundaries tokens the same data can end an entity inside a word ("play" of "playing").
    let tok = dir.join("tokens");
    let mut args = train_args(&path, None, &tok, "1");
    args.extend(["--config", "tiny", "--vocab", s(&vocab), "--boundaries", "tokens"]);
    ok(&args);
    let lines = ok_json_lines(
        &["predict", "--model", s(&tok), "--nested", "--threshold=-1e9"],
        "playing\n",
    );
    let spans: BTreeSet<(usize, usize)> = check_entities(&lines, &["playing"])[0]
        .iter()
        .map(|(a, b, _)| (*a, *b))
        .collect();
    assert!(spans.contains(&(0, 4)), "{spans:?}");
}

/// Trains one token per character on e5-small-zh (12 layers) for one short epoch and checks
/// predict (CLI and C API) on Chinese text with whitespace and unusual characters.
#[test]
fn one_token_per_character_on_a_pretrained_chinese_encoder() {
    let test = "one_token_per_character_on_a_pretrained_chinese_encoder";
    let Some(e5) = crate::common::shared::shared_file("models/e5-small-zh", test) else {
        return;
    };
    let Some(cluener) = crate::common::shared::shared_file("data/cluener/train.json", test) else {
        return;
    };
    let dir = TempDir::new("e5");
    let train = dir.join("train.json");
    let lines: Vec<String> = std::fs::read_to_string(&cluener)
        .unwrap()
        .lines()
        .take(48)
        .map(String::from)
        .collect();
    std::fs::write(&train, lines.join("\n") + "\n").unwrap();
    let out = dir.join("model");
    let mut args = train_args(&train, None, &out, "1");
    args.extend(["--init", s(&e5), "--batch-size", "16", "--max-len", "64"]);
    ok(&args);
    let config = json_file(&out.join("config.json"));
    assert_eq!(
        config["tokenization"], "chars",
        "chosen because the texts are Chinese"
    );
    assert_eq!(config["boundaries"], "tokens");
    // No gold span is lost to tokenization.
    assert_eq!(json_file(&out.join("training.json"))["unaligned_spans"], 0);

    let texts = [
        "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。",
        "北京 大学\u{3000}的\u{200b}张三😀在Ｇｏｏｇｌｅ工作\t，e\u{301}t 上海。",
        "",
        " \u{3000} ",
    ];
    let input = texts.join("\n") + "\n";
    let low = ok_json_lines(
        &["predict", "--model", s(&out), "--nested", "--threshold=-1e9"],
        &input,
    );
    let spans = check_entities(&low, &texts);
    // Every span of non-whitespace characters of text 0 is scored (one token per character).
    let n0 = texts[0].chars().count();
    assert_eq!(
        spans[0].len(),
        n0 * (n0 + 1) / 2 * config["labels"].as_array().unwrap().len()
    );
    // Text 1: no span starts or ends on whitespace; spans cover single characters of the
    // full-width and emoji characters exactly.
    let chars1: Vec<char> = texts[1].chars().collect();
    for (a, b, _) in &spans[1] {
        assert!(!chars1[*a].is_whitespace() && !chars1[b - 1].is_whitespace());
    }
    assert!(spans[1].iter().any(|(a, b, _)| chars1[*a..*b] == ['😀']));
    assert!(spans[2].is_empty() && spans[3].is_empty());

    // The C API loads the same directory and tokenizes as training did: the same entities as the
    // CLI at a threshold every span passes (the model's default output, flat or nested).
    let cli = ok_json_lines(&["predict", "--model", s(&out), "--threshold=-1e9"], &input);
    let want = check_entities(&cli, &texts);
    let dir_c = CString::new(s(&out)).unwrap();
    unsafe {
        let mut err = std::ptr::null_mut();
        let m = gp_lite::ffi::gp_model_load_threads(dir_c.as_ptr(), 2, &mut err);
        assert!(!m.is_null(), "gp_model_load failed");
        for (text, want) in texts.iter().zip(&want) {
            let mut opts = gp_lite::ffi::gp_predict_options_default();
            opts.threshold = -1e9;
            let (ptr, len) = (text.as_ptr() as *const std::ffi::c_char, text.len());
            let mut ents = std::ptr::null_mut();
            let rc = gp_lite::ffi::gp_predict_batch(m, &ptr, &len, 1, &opts, &mut ents, &mut err);
            assert_eq!(rc, 0);
            assert!(!want.is_empty() || text.trim().is_empty());
            let n = gp_lite::ffi::gp_entities_len(ents);
            let mut got = Vec::new();
            for i in 0..n {
                let e = &*gp_lite::ffi::gp_entities_get(ents, i);
                let (a, b) = (e.start, e.end);
                let label = CStr::from_ptr(e.ty).to_str().unwrap().to_string();
                // Byte offsets in C: map back to characters.
                let ca = text[..a].chars().count();
                let cb = text[..b].chars().count();
                got.push((ca, cb, label));
            }
            gp_lite::ffi::gp_entities_free(ents);
            assert_eq!(&got, want, "C API vs CLI on {text:?}");
        }
        gp_lite::ffi::gp_model_free(m);
    }
}
