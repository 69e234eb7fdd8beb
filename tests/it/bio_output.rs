//! `predict --format bio`: tags that seqeval and conlleval read, the same entities as the JSON
//! output, and (with CoNLL-2003 and a Python with seqeval) seqeval's F1 equal to `eval --flat`.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use gp_lite::data::bio;
use gp_lite::data::Join;

use crate::common::cli::{json_file, ok, ok_json_lines, run_stdin, s, stdout, succeeded, train_args};
use crate::common::{fixture, TempDir};

type Spans = Vec<(usize, usize, String)>;

/// A column file of `sentences` sentences over words of fixtures/tiny-vocab, tab-separated
/// like some exports, with a `-DOCSTART-` line.
fn column_file(path: &Path, sentences: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    writeln!(f, "-DOCSTART-\tO\n").unwrap();
    let words = ["the", "game", "playing", "unplayable", "games", "play", "!"];
    for i in 0..sentences {
        for k in 0..6 {
            let w = words[(i * 7 + k * 3) % words.len()];
            let tag = match (w, k % 2) {
                ("unplayable", _) => "B-X",
                ("games", 0) => "B-Y",
                _ => "O",
            };
            writeln!(f, "{w}\tNN\t{tag}").unwrap();
        }
        writeln!(f).unwrap();
    }
}

/// The entities of each JSON output line.
fn json_spans(lines: &[serde_json::Value]) -> Vec<Spans> {
    lines
        .iter()
        .map(|l| {
            l["entities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let at = |k: &str| e[k].as_u64().unwrap() as usize;
                    (at("start"), at("end"), e["type"].as_str().unwrap().to_string())
                })
                .collect()
        })
        .collect()
}

/// The texts and entities of column output, its tags read from the last column.
fn read_columns(text: &str) -> Vec<(String, Spans)> {
    let last_two: String = text
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.as_slice() {
                [] => String::new(),
                [token, .., tag] => format!("{token} {tag}"),
                [only] => panic!("a line without a tag: {only:?}"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    bio::sentences(Path::new("<output>"), &last_two, Join::Space)
        .unwrap()
        .into_iter()
        .map(|s| {
            let spans = s
                .example
                .entities
                .into_iter()
                .map(|e| (e.start, e.end, e.label))
                .collect();
            (s.example.text, spans)
        })
        .collect()
}

#[test]
fn bio_output_holds_the_entities_of_the_json_output() {
    let dir = TempDir::new("bio-output");
    let data = dir.join("train.conll");
    column_file(&data, 40);
    let model = dir.join("model");
    let vocab = fixture("tiny-vocab/vocab.txt");
    let mut args = train_args(&data, None, &model, "1");
    args.extend(["--config", "tiny", "--vocab", s(&vocab)]);
    ok(&args);
    assert_eq!(json_file(&model.join("config.json"))["boundaries"], "words");
    let m = s(&model);
    // A threshold below every score: flat output then tags most words, of both types.
    let low = "--threshold=-1e9";
    let texts: Vec<String> = bio::sentences(&data, &std::fs::read_to_string(&data).unwrap(), Join::Auto)
        .unwrap()
        .into_iter()
        .map(|s| s.example.text)
        .collect();
    let input = texts.join("\n") + "\n";
    let json = json_spans(&ok_json_lines(&["predict", "--model", m, "--flat", low], &input));
    assert!(json.iter().all(|e| !e.is_empty()));

    for scheme in ["bio", "bioes"] {
        let args = [
            "predict", "--model", m, low, "--format", "bio", "--scheme", scheme,
        ];
        let out = stdout(&succeeded(&args, run_stdin(&args, &input)));
        let back = read_columns(&out);
        assert_eq!(back.len(), texts.len(), "a block a text");
        for ((text, spans), (want_text, want)) in back.iter().zip(texts.iter().zip(&json)) {
            assert_eq!(text, want_text);
            assert_eq!(spans, want, "{scheme}: {text}");
        }
        let used = |p: &str| {
            out.lines()
                .any(|l| l.split(' ').nth(1).is_some_and(|t| t.starts_with(p)))
        };
        assert_eq!(used("S-") || used("E-"), scheme == "bioes");
    }

    // A column file in: each line back with the predicted tag appended, in its own separator.
    let args = [
        "predict",
        "--model",
        m,
        low,
        "--input",
        s(&data),
        "--input-format",
        "conll",
        "--format",
        "bio",
    ];
    let out = stdout(&ok(&args));
    let input_lines = std::fs::read_to_string(&data).unwrap();
    assert_eq!(out.lines().count(), input_lines.lines().count());
    for (o, i) in out.lines().zip(input_lines.lines()) {
        if i.is_empty() || i.starts_with("-DOCSTART-") {
            assert_eq!(o, i);
        } else {
            let tag = o.strip_prefix(i).and_then(|t| t.strip_prefix('\t'));
            assert!(
                tag.is_some_and(|t| !t.contains(char::is_whitespace)),
                "{o:?} from {i:?}"
            );
        }
    }
    let back = read_columns(&out);
    assert_eq!(back.iter().map(|b| b.1.clone()).collect::<Vec<_>>(), json);
    // ... and as JSON: a line a sentence, its text as eval joins it.
    let args = [
        "predict",
        "--model",
        m,
        low,
        "--flat",
        "--input",
        s(&data),
        "--input-format",
        "conll",
    ];
    let lines = crate::common::cli::json_lines(&ok(&args).stdout);
    assert_eq!(json_spans(&lines), json);
    assert!(lines.iter().zip(&texts).all(|(l, t)| l["text"] == t.as_str()));

    // Bad lines keep their place (an empty block); nested output cannot be tags.
    let args = ["predict", "--model", m, "--format", "bio"];
    let out = run_stdin(&args, "the game\n{\"text\": 3}\nplay\n");
    assert!(out.status.success());
    let text = stdout(&out);
    // a block a text, each ended by a blank line
    let mut blocks: Vec<Vec<&str>> = vec![vec![]];
    for line in text.lines() {
        match line {
            "" => blocks.push(vec![]),
            _ => blocks.last_mut().unwrap().push(line),
        }
    }
    assert_eq!(blocks.pop(), Some(vec![]), "{text:?}");
    assert_eq!(blocks.len(), 3, "{text:?}");
    assert_eq!(blocks[0].len(), 2);
    assert!(blocks[1].is_empty());
    assert!(
        blocks[2].len() == 1 && blocks[2][0].starts_with("play "),
        "{text:?}"
    );
    let out = run_stdin(
        &["predict", "--model", m, "--format", "bio", "--nested"],
        "the game\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nested"));
}

/// seqeval's entity F1 on `predict --format bio` output for a CoNLL-2003 slice equals `eval
/// --flat` on it: a model trained on 1,200 training sentences for two epochs, the first 400
/// test sentences. Needs the shared data and a Python with seqeval (`GP_LITE_PYTHON_PACKAGE`, as
/// tests/it/python.rs; `.ci/run` installs it and sets `GP_LITE_REQUIRE_PYTHON_PACKAGE=1`).
#[test]
fn seqeval_f1_equals_eval_flat_on_conll() {
    let test = "seqeval_f1_equals_eval_flat_on_conll";
    use crate::common::shared::shared_file;
    let (Some(train), Some(test_file), Some(minilm)) = (
        shared_file("data/conll2003/train.txt", test),
        shared_file("data/conll2003/test.txt", test),
        shared_file("models/minilm-l6", test),
    ) else {
        return;
    };
    let Some(py) = crate::common::python_with("seqeval", test) else {
        return;
    };
    let dir = TempDir::new("seqeval");
    let head = |from: &Path, sentences: usize, to: &Path| {
        let text = std::fs::read_to_string(from).unwrap();
        let mut out = String::new();
        let mut seen = 0;
        for line in text.lines() {
            out.push_str(line);
            out.push('\n');
            seen += line.trim().is_empty() as usize;
            if seen > sentences {
                break;
            }
        }
        std::fs::write(to, out).unwrap();
    };
    let (train_slice, test_slice) = (dir.join("train.txt"), dir.join("test.txt"));
    head(&train, 1200, &train_slice);
    head(&test_file, 400, &test_slice);
    let model = dir.join("model");
    let mut args = train_args(&train_slice, None, &model, "2");
    args.extend(["--init", s(&minilm), "--lr", "3e-4", "--head-lr", "3e-3"]);
    ok(&args);
    let m = s(&model);
    let eval = ok(&["eval", "--model", m, "--data", s(&test_slice), "--flat", "--json"]);
    let eval: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let args = [
        "predict",
        "--model",
        m,
        "--input",
        s(&test_slice),
        "--input-format",
        "conll",
        "--format",
        "bio",
    ];
    let tagged = dir.join("tagged.txt");
    std::fs::write(&tagged, ok(&args).stdout).unwrap();
    let script = r#"
import sys
from seqeval.metrics import f1_score
gold, pred, g, p = [], [], [], []
for line in open(sys.argv[1], encoding="utf-8"):
    cols = line.split()
    if not cols or cols[0] == "-DOCSTART-":
        if g:
            gold.append(g); pred.append(p); g, p = [], []
        continue
    g.append(cols[-2]); p.append(cols[-1])
if g:
    gold.append(g); pred.append(p)
print(repr(float(f1_score(gold, pred))))
"#;
    let out = Command::new(&py)
        .args(["-c", script, s(&tagged)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seqeval: f64 = stdout(&out).trim().parse().unwrap();
    let ours = eval["f1"].as_f64().unwrap();
    eprintln!("{test}: seqeval F1 {seqeval}, eval --flat F1 {ours}");
    assert!(
        ours > 0.5,
        "the model learned too little for the check to mean much: F1 {ours}"
    );
    assert!(
        (seqeval - ours).abs() < 1e-12,
        "seqeval {seqeval} vs eval --flat {ours}"
    );
}
