//! gp-lite from Python (PyO3, no subprocess): `Model.load(dir)`, `model.predict(texts)`,
//! `model.labels`, `train(...)` with the command line's options and a progress callback, and
//! `evaluate(...)`. The GIL is released while Rust works; a Rust error becomes `GpLiteError`
//! carrying its message (file, line and field where the error has them).

use gp_lite::decode::DecodeMode;
use gp_lite::evaluate::evaluate_dataset;
use gp_lite::head::{self, HeadOptions};
use gp_lite::out_dir::{is_nonempty_dir, Replacement};
use gp_lite::train::{EncoderSource, Event, TokenizationChoice, TrainOptions, TrainingRecord};
use gp_lite::{load_model, read_dataset, PredictOptions, Predictor, Workspace};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::Mutex;

create_exception!(
    _gp_lite,
    GpLiteError,
    PyException,
    "An error gp-lite reported (its message names the file, line and field)."
);

/// Any displayable error as a `GpLiteError` (the full chain of sources in the message).
fn err(e: impl std::fmt::Display) -> PyErr {
    GpLiteError::new_err(e.to_string())
}

fn pool(threads: usize) -> PyResult<rayon::ThreadPool> {
    gp_lite::matmul::thread_pool(threads).map_err(err)
}

/// One entity found in a text: character offsets (`text[start:end]`), its type and score.
#[pyclass(frozen, get_all, module = "gp_lite")]
#[derive(Clone)]
struct Entity {
    /// First character (inclusive).
    start: usize,
    /// One past the last character.
    end: usize,
    /// The entity type.
    label: String,
    /// The characters `text[start:end]`.
    text: String,
    /// The head's score (a logit for the pointer heads, a probability for the CRF).
    score: f64,
}

#[pymethods]
impl Entity {
    fn __repr__(&self) -> String {
        format!(
            "Entity(start={}, end={}, label={:?}, text={:?}, score={:.4})",
            self.start, self.end, self.label, self.text, self.score
        )
    }

    fn __eq__(&self, other: &Entity) -> bool {
        (self.start, self.end, &self.label, &self.text) == (other.start, other.end, &other.label, &other.text)
            && self.score == other.score
    }

    /// As the command line's `predict` writes it: `{"start", "end", "type", "text", "score"}`.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("start", self.start)?;
        d.set_item("end", self.end)?;
        d.set_item("type", &self.label)?;
        d.set_item("text", &self.text)?;
        d.set_item("score", self.score)?;
        Ok(d)
    }
}

/// A trained gp-lite model directory, loaded once and shared between calls.
#[pyclass(frozen, module = "gp_lite")]
struct Model {
    predictor: Predictor<f32>,
    workspace: Mutex<Workspace>,
    pool: rayon::ThreadPool,
}

#[pymethods]
impl Model {
    /// Loads a model directory written by `gp-lite train` (or `gp_lite.train`, or `gp-lite
    /// quantize`); `threads` = 0 uses every core; `precision` "f32", "int8" or "bf16" runs the
    /// encoder's products in that precision (None: the directory's own).
    #[staticmethod]
    #[pyo3(signature = (path, threads = 0, precision = None))]
    fn load(py: Python<'_>, path: PathBuf, threads: usize, precision: Option<&str>) -> PyResult<Model> {
        let precision = precision
            .map(|p| p.parse::<gp_lite::precision::Precision>())
            .transpose()
            .map_err(PyValueError::new_err)?;
        let mut predictor = py.detach(|| load_model::<f32>(&path)).map_err(err)?;
        if let Some(p) = precision {
            py.detach(|| predictor.set_precision(p));
        }
        Ok(Model {
            predictor,
            workspace: Mutex::new(Workspace::default()),
            pool: pool(threads)?,
        })
    }

    /// The entity types, in the model's order.
    #[getter]
    fn labels(&self) -> Vec<String> {
        self.predictor.model.config.labels.clone()
    }

    /// Entities of each text. `flat`: True for non-overlapping entities, False for nested, None
    /// for the model's default; `threshold`: the span score above which a span is an entity
    /// (default 0; the CRF ignores it).
    #[pyo3(signature = (texts, flat = None, threshold = None, batch_size = 32))]
    fn predict(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        flat: Option<bool>,
        threshold: Option<f64>,
        batch_size: usize,
    ) -> PyResult<Vec<Vec<Entity>>> {
        let opts = predict_options(flat, threshold, batch_size)?;
        py.detach(|| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let mut guard = self.workspace.lock().unwrap_or_else(|p| p.into_inner());
            let ws: &mut Workspace = &mut guard;
            let found = self
                .pool
                .install(|| self.predictor.predict(&refs, &opts, ws))
                .map_err(err)?;
            Ok(found
                .into_iter()
                .zip(&texts)
                .map(|(ents, text)| {
                    let chars: Vec<char> = text.chars().collect();
                    ents.into_iter()
                        .map(|e| Entity {
                            text: chars[e.start..e.end].iter().collect(),
                            start: e.start,
                            end: e.end,
                            label: e.label,
                            score: e.score,
                        })
                        .collect()
                })
                .collect())
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(head={:?}, labels={:?})",
            self.predictor.model.config.head.kind, self.predictor.model.config.labels
        )
    }
}

fn predict_options(
    flat: Option<bool>,
    threshold: Option<f64>,
    batch_size: usize,
) -> PyResult<PredictOptions> {
    if batch_size == 0 {
        return Err(err("batch_size must be positive"));
    }
    let mut opts = PredictOptions {
        mode: flat.map(|f| if f { DecodeMode::Flat } else { DecodeMode::Nested }),
        batch_size,
        ..PredictOptions::default()
    };
    if let Some(t) = threshold {
        if !t.is_finite() {
            return Err(err(format!("threshold = {t}: must be finite")));
        }
        opts.threshold = t;
    }
    Ok(opts)
}

/// P/R/F1 of a model on a labelled file (format detected from its content): a dict with
/// `precision`, `recall`, `f1`, `gold`, `predicted`, `correct` and `per_type` (the same per type).
#[pyfunction]
#[pyo3(signature = (model, data, flat = None, threshold = None, threads = 0))]
fn evaluate<'py>(
    py: Python<'py>,
    model: PathBuf,
    data: PathBuf,
    flat: Option<bool>,
    threshold: Option<f64>,
    threads: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let opts = predict_options(flat, threshold, 32)?;
    let pool = pool(threads)?;
    let (labels, report) = py.detach(|| -> PyResult<_> {
        let p = load_model::<f32>(&model).map_err(err)?;
        let data = read_dataset(&data, None).map_err(err)?;
        let report = pool
            .install(|| evaluate_dataset(&p.model, &p.tokenizer, &data, &opts))
            .map_err(err)?;
        Ok((p.model.config.labels.clone(), report))
    })?;
    let prf = |p: &gp_lite::metrics::Prf| -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("precision", p.precision)?;
        d.set_item("recall", p.recall)?;
        d.set_item("f1", p.f1)?;
        d.set_item("gold", p.gold)?;
        d.set_item("predicted", p.predicted)?;
        d.set_item("correct", p.correct)?;
        Ok(d)
    };
    let out = prf(&report.micro)?;
    let per_type = PyDict::new(py);
    for (label, p) in labels.iter().zip(&report.per_type) {
        per_type.set_item(label, prf(p)?)?;
    }
    out.set_item("per_type", per_type)?;
    Ok(out)
}

/// What the progress callback receives: a dict per event.
fn event_dict<'py>(py: Python<'py>, e: &Event) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match e {
        Event::Info(message) => {
            d.set_item("event", "info")?;
            d.set_item("message", message)?;
        }
        Event::EpochStart { epoch, steps } => {
            d.set_item("event", "epoch_start")?;
            d.set_item("epoch", epoch)?;
            d.set_item("steps", steps)?;
        }
        Event::Step {
            epoch,
            step,
            steps,
            loss,
            tokens,
            lr,
        } => {
            d.set_item("event", "step")?;
            d.set_item("epoch", epoch)?;
            d.set_item("step", step)?;
            d.set_item("steps", steps)?;
            d.set_item("loss", loss)?;
            d.set_item("tokens", tokens)?;
            d.set_item("lr", lr)?;
        }
        Event::Checkpoint { epoch, step, steps } => {
            d.set_item("event", "checkpoint")?;
            d.set_item("epoch", epoch)?;
            d.set_item("step", step)?;
            d.set_item("steps", steps)?;
        }
        Event::EpochEnd { record, best } => {
            d.set_item("event", "epoch_end")?;
            d.set_item("epoch", record.epoch)?;
            d.set_item("train_loss", record.train_loss)?;
            d.set_item("seconds", record.seconds)?;
            d.set_item("dev_f1", record.dev_f1)?;
            d.set_item("dev_precision", record.dev_precision)?;
            d.set_item("dev_recall", record.dev_recall)?;
            d.set_item("best", best)?;
        }
    }
    Ok(d)
}

/// Trains a model as `gp-lite train` does, with its options as keyword arguments, and writes it
/// to `out`; returns training.json's record as a dict. `progress`, if given, is called with one
/// dict per event (`event`: info, epoch_start, step, checkpoint, epoch_end); an exception it
/// raises stops nothing but is raised again when training ends.
#[pyfunction]
#[pyo3(signature = (
    train, out, dev = None, *, init = None, config = None, vocab = None, head = "gp",
    epochs = None, batch_size = None, lr = None, head_lr = None, warmup = 0.1,
    weight_decay = 0.01, max_grad_norm = 1.0, max_len = 256, dropout = None, seed = 42,
    threads = 0, tokenization = "auto", head_size = 64, rope = true, min_char_count = 1,
    stop_after = None, checkpoint_every = None, resume = false, overwrite = false, progress = None,
    precision = "f32"
))]
#[allow(clippy::too_many_arguments)]
fn train<'py>(
    py: Python<'py>,
    train: PathBuf,
    out: PathBuf,
    dev: Option<PathBuf>,
    init: Option<PathBuf>,
    config: Option<String>,
    vocab: Option<PathBuf>,
    head: &str,
    epochs: Option<usize>,
    batch_size: Option<usize>,
    lr: Option<f64>,
    head_lr: Option<f64>,
    warmup: f64,
    weight_decay: f64,
    max_grad_norm: f64,
    max_len: usize,
    dropout: Option<f64>,
    seed: u64,
    threads: usize,
    tokenization: &str,
    head_size: usize,
    rope: bool,
    min_char_count: usize,
    stop_after: Option<usize>,
    checkpoint_every: Option<usize>,
    resume: bool,
    overwrite: bool,
    progress: Option<Py<PyAny>>,
    precision: &str,
) -> PyResult<Bound<'py, PyAny>> {
    if init.is_some() && config.is_some() {
        return Err(err(
            "init and config are exclusive (fine-tune a pretrained encoder, or train one from scratch)",
        ));
    }
    let defaults = match &init {
        Some(dir) => TrainOptions::fine_tune(dir),
        None => TrainOptions::default(),
    };
    let head_options = HeadOptions {
        head_size,
        rope,
        ..HeadOptions::default()
    };
    let opts = TrainOptions {
        encoder: match &init {
            Some(dir) => EncoderSource::Pretrained(dir.clone()),
            None => EncoderSource::Scratch {
                config: config.unwrap_or_else(|| "tiny".into()),
                vocab,
            },
        },
        head: head::from_options(head, &head_options).map_err(err)?,
        tokenization: match tokenization {
            "auto" => TokenizationChoice::Auto,
            other => TokenizationChoice::Fixed(other.to_string()),
        },
        epochs: epochs.unwrap_or(defaults.epochs),
        batch_size: batch_size.unwrap_or(defaults.batch_size),
        lr: lr.unwrap_or(defaults.lr),
        head_lr,
        warmup,
        weight_decay,
        max_grad_norm: (max_grad_norm > 0.0).then_some(max_grad_norm),
        max_len,
        dropout,
        seed,
        min_char_count,
        stop_after,
        checkpoint_every,
        precision: precision.parse().map_err(err)?,
        ..defaults
    };
    let pool = pool(threads)?;
    let mut callback_error: Option<PyErr> = None;
    let record = py.detach(|| -> PyResult<TrainingRecord> {
        let train_data = read_dataset(&train, None).map_err(err)?;
        let dev_data = dev
            .as_ref()
            .map(|d| read_dataset(d, None))
            .transpose()
            .map_err(err)?;
        let mut replaced = None;
        if !resume && is_nonempty_dir(&out).map_err(err)? {
            if !overwrite {
                return Err(err(format!(
                    "{} exists and is not empty (overwrite=True replaces it, resume=True continues it)",
                    out.display()
                )));
            }
            replaced = Some(Replacement::begin(&out).map_err(err)?);
        }
        let record = TrainingRecord {
            command: vec!["gp_lite.train".into()],
            seed,
            threads: pool.current_num_threads(),
            train_file: train_data.path.display().to_string(),
            dev_file: dev_data.as_ref().map(|d| d.path.display().to_string()),
            ..Default::default()
        };
        let mut on_event = |e: Event| {
            let Some(cb) = &progress else { return };
            if callback_error.is_some() {
                return;
            }
            Python::attach(|py| {
                let result = event_dict(py, &e).and_then(|d| cb.call1(py, (d,)).map(|_| ()));
                if let Err(e) = result {
                    callback_error = Some(e);
                }
            });
        };
        let result = pool.install(|| {
            gp_lite::train(
                &opts,
                &train_data,
                dev_data.as_ref(),
                &out,
                resume,
                record,
                &mut on_event,
            )
        });
        if let Some(r) = replaced {
            if result.is_ok() {
                r.commit().map_err(err)?;
            } else {
                r.roll_back().map_err(err)?;
            }
        }
        result.map_err(err)
    })?;
    if let Some(e) = callback_error {
        return Err(e);
    }
    let json = serde_json::to_string(&record).map_err(err)?;
    py.import("json")?.call_method1("loads", (json,))
}

/// The extension module `gp_lite._gp_lite` (re-exported by the `gp_lite` package).
#[pymodule]
fn _gp_lite(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Entity>()?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(evaluate, m)?)?;
    m.add("GpLiteError", m.py().get_type::<GpLiteError>())?;
    Ok(())
}
