//! examples/spark/gp_lite_spark.py with a real Apache Spark in local mode (`local[2]`): a few
//! thousand CLUENER lines from ../shared, with bad lines, an empty line, a plain-text line and a
//! long text mixed in, go through the job, and every output line must equal what `gp-lite
//! predict` run directly on the same input answers for that line: same entities, same order,
//! nothing lost, bad lines answered in place.
//!
//! Needs Java and a Python with pyspark (`GP_LITE_PYTHON`, default `python3`). Without them the
//! test prints SKIPPED; with `GP_LITE_REQUIRE_SPARK=1` (set by .ci/run) it fails instead.

use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::common::{fixture, TempDir, BIN};

const TEST: &str = "spark_job_matches_direct_predict";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    std::env::var_os("GP_LITE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into())
}

/// Why Spark cannot run here, if it cannot.
fn spark_missing(python: &Path) -> Option<String> {
    let quiet = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !quiet(Command::new("java").arg("-version")) {
        return Some("java is not installed".into());
    }
    if !quiet(Command::new(python).args(["-c", "import pyspark"])) {
        return Some(format!("{} cannot import pyspark", python.display()));
    }
    None
}

/// Skips (printing SKIPPED) or, under GP_LITE_REQUIRE_SPARK=1, fails when Spark is missing.
fn spark_python(test: &str) -> Option<PathBuf> {
    let py = python();
    let Some(why) = spark_missing(&py) else {
        return Some(py);
    };
    assert!(
        std::env::var("GP_LITE_REQUIRE_SPARK").as_deref() != Ok("1"),
        "{why} and GP_LITE_REQUIRE_SPARK=1 (set GP_LITE_PYTHON to a Python with pyspark)"
    );
    // Not through println!, which the harness captures: the skip must show by name.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} (set GP_LITE_REQUIRE_SPARK=1 to fail instead)"
    );
    None
}

fn check(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tiny model trained in seconds; with 4 epochs it finds entities (about one in two CLUENER
/// lines).
fn train(out: &Path, epochs: usize) {
    let train = fixture("cluener-sample/train.json");
    let out = Command::new(BIN)
        .args(["train", "--train"])
        .arg(&train)
        .arg("--out")
        .arg(out)
        .args([
            "--epochs",
            &epochs.to_string(),
            "--batch-size",
            "8",
            "--max-len",
            "64",
        ])
        .args(["--threads", "2", "--quiet"])
        .output()
        .unwrap();
    check(&out, "gp-lite train");
}

fn texts(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

/// CLUENER dev and the start of train as JSON lines, with the special lines at fixed places.
/// Returns the corpus and the 0-based indices of the lines gp-lite must answer with errors.
fn corpus(dev: &Path, train: &Path) -> (String, Vec<usize>) {
    let dev_texts = texts(dev);
    let mut lines: Vec<String> = std::fs::read_to_string(dev)
        .unwrap()
        .lines()
        .chain(std::fs::read_to_string(train).unwrap().lines().take(1600))
        .map(String::from)
        .collect();
    let long = serde_json::json!({ "text": dev_texts[..8].concat() }).to_string();
    let special: [(usize, String, bool); 8] = [
        (0, "{\"text\": \"北京".into(), true),
        (5, String::new(), false),
        (700, "{\"id\": 7}".into(), true),
        (701, "张三在上海的北京大学工作。".into(), false),
        (1500, "{\"text\": 3}".into(), true),
        (1501, long, false),
        (
            2200,
            "{\"text\": \"第一行\\n第二行\\t北京\", \"id\": 9}".into(),
            false,
        ),
        (2943, "{not json".into(), true),
    ];
    let mut bad = Vec::new();
    for (at, line, is_bad) in special {
        lines.insert(at, line);
        if is_bad {
            bad.push(at);
        }
    }
    (lines.join("\n") + "\n", bad)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

/// Same entities (offsets, type, text; scores within 1e-5) in the same order.
fn same_entities(a: &Value, b: &Value) -> bool {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            ["start", "end", "type", "text"].iter().all(|k| x[k] == y[k])
                && (x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() <= 1e-5
        })
}

#[test]
fn spark_job_matches_direct_predict() {
    let Some(py) = spark_python(TEST) else { return };
    let (Some(dev), Some(train_file)) = (
        crate::common::shared::shared_file("data/cluener/dev.json", TEST),
        crate::common::shared::shared_file("data/cluener/train.json", TEST),
    ) else {
        return;
    };
    let dir = TempDir::new("spark");
    let model = dir.join("model");
    train(&model, 4);
    let (text, bad) = corpus(&dev, &train_file);
    let input = dir.join("corpus.jsonl");
    std::fs::write(&input, &text).unwrap();
    let n = text.lines().count();

    let direct = Command::new(BIN)
        .args(["predict", "--model"])
        .arg(&model)
        .arg("--input")
        .arg(&input)
        .args(["--threads", "2"])
        .output()
        .unwrap();
    check(&direct, "gp-lite predict");
    let direct = json_lines(&String::from_utf8(direct.stdout).unwrap());
    assert_eq!(direct.len(), n, "direct predict lost lines");
    let errors: Vec<usize> = (0..n).filter(|&i| direct[i].get("error").is_some()).collect();
    assert_eq!(
        errors, bad,
        "direct predict: error records not where the bad lines are"
    );
    let found: usize = direct
        .iter()
        .filter_map(|v| v["entities"].as_array())
        .map(|e| e.len())
        .sum();
    assert!(
        found >= 300,
        "the model finds too few entities ({found}) for a useful comparison"
    );

    // Four splits over local[2]: two gp-lite processes at a time, one thread each.
    let output = dir.join("tagged");
    let job = Command::new(&py)
        .arg(root().join("examples/spark/gp_lite_spark.py"))
        .args(["--master", "local[2]", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .arg("--binary")
        .arg(BIN)
        .arg("--model")
        .arg(&model)
        .args(["--ship", "--threads", "1", "--partitions", "4"])
        .env("PYSPARK_PYTHON", &py)
        .env("PYSPARK_DRIVER_PYTHON", &py)
        .output()
        .unwrap();
    check(&job, "the Spark job");
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("part-"))
        .collect();
    parts.sort();
    assert!(parts.len() >= 4, "expected at least 4 part files, got {parts:?}");
    let tagged: String = parts
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let tagged = json_lines(&tagged);
    assert_eq!(
        tagged.len(),
        n,
        "the Spark job answered {} of {n} lines",
        tagged.len()
    );
    for (i, (s, d)) in tagged.iter().zip(&direct).enumerate() {
        assert_eq!(
            s["line"],
            i + 1,
            "output line {} is not input line {}",
            i + 1,
            i + 1
        );
        let same = match d.get("error") {
            Some(e) => s.get("error") == Some(e) && s.get("entities").is_none(),
            None => s["text"] == d["text"] && same_entities(&s["entities"], &d["entities"]),
        };
        assert!(same, "line {}: Spark gave\n{s}\ndirect predict gave\n{d}", i + 1);
    }
    println!(
        "{n} lines, {found} entities, {} error records: identical",
        bad.len()
    );
}

/// The partition function fails the task, with gp-lite's exit code and message, when gp-lite
/// fails, so Spark retries or stops instead of keeping a short partition. Runs without a JVM.
#[test]
fn spark_partition_fails_when_gp_lite_fails() {
    let Some(py) = spark_python("spark_partition_fails_when_gp_lite_fails") else {
        return;
    };
    let dir = TempDir::new("spark-fail");
    let model = dir.join("model");
    let missing = dir.join("no-model");
    let script = format!(
        r#"
import sys
sys.path.insert(0, {examples:?})
import gp_lite_spark as g
lines = [(1, "北京"), (2, "{{bad"), (3, "上海")]
for model, args in [({missing:?}, []), ({model:?}, ["--on-error", "fail"]), ({model:?}, [])]:
    try:
        out = list(g.predict_partition({bin:?}, model, args + ["--threads", "1"], iter(lines)))
        print("ok", len(out), [l[:30] for l in out])
    except RuntimeError as e:
        print("failed", str(e).splitlines()[0], "|", " ".join(str(e).splitlines()[1:]))
"#,
        examples = root().join("examples/spark").display().to_string(),
        missing = missing.display().to_string(),
        model = model.display().to_string(),
        bin = BIN,
    );
    train(&model, 1);
    let out = Command::new(&py).args(["-c", &script]).output().unwrap();
    check(&out, "python");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("failed gp-lite predict exited with 1:") && lines[0].contains("no-model"),
        "a missing model: {}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("failed gp-lite predict exited with 3:")
            && lines[1].contains("<stdin>:2: malformed JSON"),
        "--on-error fail: {}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("ok 3 ") && lines[2].contains(r#"{"line": 2, "error""#),
        "--on-error record: {}",
        lines[2]
    );
}
