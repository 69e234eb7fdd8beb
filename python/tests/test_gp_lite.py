"""gp_lite from Python against the real build: train, load, predict, evaluate, errors, and
predict equal to the command line's output on CLUENER dev lines."""
import json
import os
import subprocess

import pytest

import gp_lite

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "fixtures", "cluener-sample")
TRAIN, DEV = os.path.join(SAMPLE, "train.json"), os.path.join(SAMPLE, "dev.json")
BIN = os.environ.get("GP_LITE_BIN", os.path.join(ROOT, "target", "release", "gp-lite"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    events = []
    record = gp_lite.train(TRAIN, out, DEV, epochs=30, threads=2, progress=events.append)
    kinds = {e["event"] for e in events}
    assert {"info", "epoch_start", "step", "epoch_end"} <= kinds
    assert len(record["epochs"]) == 30
    assert record["best_dev_f1"] > 0.2
    assert record["epochs"][-1]["train_loss"] < record["epochs"][0]["train_loss"]
    assert [e["epoch"] for e in events if e["event"] == "epoch_end"] == list(range(1, 31))
    return out


def dev_texts(n):
    with open(DEV, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f][:n]


def test_predict_matches_the_command_line(model_dir):
    texts = dev_texts(60)
    model = gp_lite.Model.load(model_dir, threads=1)
    assert model.labels == json.load(open(os.path.join(model_dir, "config.json")))["labels"]
    ours = model.predict(texts)
    cli = subprocess.run([BIN, "predict", "--model", str(model_dir), "--threads", "1"],
                         input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
    theirs = [json.loads(line)["entities"] for line in cli.stdout.splitlines()]
    assert len(theirs) == len(texts)
    assert sum(len(e) for e in theirs) > 0, "the model found nothing: the comparison would be empty"
    for text, a, b in zip(texts, ours, theirs):
        got = [e.to_dict() for e in a]
        for e in got:
            assert e["text"] == text[e["start"]:e["end"]]
        assert [(e["start"], e["end"], e["type"]) for e in got] == [(e["start"], e["end"], e["type"]) for e in b]
        assert [round(e["score"], 4) for e in got] == [round(e["score"], 4) for e in b]


def test_flat_nested_and_threshold(model_dir):
    model = gp_lite.Model.load(model_dir)
    texts = dev_texts(40)
    nested = model.predict(texts, flat=False, threshold=-2.0)
    flat = model.predict(texts, flat=True, threshold=-2.0)
    assert sum(map(len, flat)) <= sum(map(len, nested))
    for ents in flat:
        spans = sorted((e.start, e.end) for e in ents)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "flat output overlaps"
    assert sum(map(len, model.predict(texts, threshold=1e9))) == 0


def test_int8_precision_matches_the_command_line(model_dir):
    texts = dev_texts(30)
    ours = gp_lite.Model.load(model_dir, threads=1, precision="int8").predict(texts, threshold=-2.0)
    cli = subprocess.run([BIN, "predict", "--model", str(model_dir), "--threads", "1", "--precision", "int8",
                          "--threshold=-2"],
                         input="\n".join(texts) + "\n", capture_output=True, text=True, check=True)
    theirs = [json.loads(line)["entities"] for line in cli.stdout.splitlines()]
    assert sum(len(e) for e in theirs) > 0
    for a, b in zip(ours, theirs):
        assert [(e.start, e.end, e.label, round(e.score, 4)) for e in a] == \
            [(e["start"], e["end"], e["type"], round(e["score"], 4)) for e in b]
    with pytest.raises(ValueError, match="f32, int8 or bf16"):
        gp_lite.Model.load(model_dir, precision="fp16")


def test_evaluate_matches_the_command_line(model_dir):
    report = gp_lite.evaluate(model_dir, DEV, threads=1)
    cli = subprocess.run([BIN, "eval", "--model", str(model_dir), "--data", DEV, "--json", "--threads", "1"],
                         capture_output=True, text=True, check=True)
    theirs = json.loads(cli.stdout)
    for key in ("precision", "recall", "f1", "gold", "predicted", "correct"):
        assert report[key] == pytest.approx(theirs[key]), key
    assert set(report["per_type"]) == set(gp_lite.Model.load(model_dir).labels)
    for label, p in report["per_type"].items():
        assert p["f1"] == pytest.approx(theirs["per_type"][label]["f1"]), label


def test_errors_carry_the_rust_message(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"text": "abc", "label": {"name": {"xyz": [[0, 1]]}}}\n', encoding="utf-8")
    with pytest.raises(gp_lite.GpLiteError, match=r"bad\.json:1: `label\.name\.xyz\[0\]`"):
        gp_lite.train(bad, tmp_path / "out", epochs=1)
    with pytest.raises(gp_lite.GpLiteError, match="nowhere"):
        gp_lite.Model.load(tmp_path / "nowhere")
    with pytest.raises(gp_lite.GpLiteError, match="exists and is not empty"):
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        gp_lite.train(TRAIN, tmp_path / "full", epochs=1)


def test_a_callback_exception_is_raised_after_training(tmp_path):
    def boom(event):
        raise ValueError("from the callback")
    with pytest.raises(ValueError, match="from the callback"):
        gp_lite.train(TRAIN, tmp_path / "m", epochs=1, threads=1, progress=boom)


def test_bf16_training_is_recorded_and_int8_training_refused(tmp_path):
    record = gp_lite.train(TRAIN, tmp_path / "bf16", epochs=2, threads=1, precision="bf16")
    assert record["precision"] == "bf16"
    assert record["epochs"][-1]["train_loss"] < record["epochs"][0]["train_loss"]
    with pytest.raises(Exception, match="f32 or bf16"):
        gp_lite.train(TRAIN, tmp_path / "int8", epochs=1, threads=1, precision="int8")
