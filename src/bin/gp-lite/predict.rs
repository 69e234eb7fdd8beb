//! `gp-lite predict`: a filter from lines of text (or JSON lines with "text") to JSON lines of
//! entities, in input order, one chunk in memory at a time.

use crate::args::{ModeArgs, PrecisionArgs, WindowArgs};
use crate::{pool, Res};
use clap::{Args, ValueEnum};
use gp_lite::data::bio::{self, Scheme};
use gp_lite::decode::DecodeMode;
use gp_lite::infer::Workspace;
use gp_lite::predict::{PredEntity, PredictError, PredictOptions, Predictor};
use std::io::{BufRead, BufWriter, Read, Write};
use std::path::PathBuf;

/// `gp-lite predict --help`: how it behaves as a filter.
pub const PREDICT_HELP: &str = "\
A filter (Spark RDD.pipe, Hadoop Streaming, shell pipes): output line k answers input line k,
in input order, flushed after each chunk of --batch-size lines; stdout carries only results
and error records, messages go to stderr as FILE:LINE: what; memory holds one chunk.

Exit codes: 0 every line answered (bad lines with error records under --on-error record);
1 a failure that is not one line's (model directory, input or output file, read or write
error), after the results of the lines read so far; 2 a bad command line; 3 a bad input line
under --on-error fail, after the results of every line before it.";

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    model: PathBuf,
    /// Input file [default: stdin]
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output file [default: stdout]
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    mode: ModeArgs,
    /// Score above which a span is an entity.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    threshold: f64,
    /// Texts per forward pass (and per chunk read from the input).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    windows: WindowArgs,
    /// Worker threads (0: all cores); under a task scheduler, the cores one task owns.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// What a bad input line (invalid UTF-8, malformed JSON, no string "text") does.
    #[arg(long, value_enum, default_value = "record")]
    on_error: OnError,
    /// What is written for each text.
    #[arg(long, value_enum, default_value = "json")]
    format: OutputFormat,
    /// The tags of --format bio.
    #[arg(long, value_enum, default_value = "bio")]
    scheme: SchemeArg,
    /// What the input is.
    #[arg(long, value_enum, default_value = "text")]
    input_format: InputFormat,
    #[command(flatten)]
    precision: PrecisionArgs,
}

/// `--format`.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum OutputFormat {
    /// A JSON line a text: {"entities": [{"end", "score", "start", "text", "type"}], "text"}
    Json,
    /// Columns for seqeval and conlleval: a token and its tag a line, a blank line after each
    /// text (flat output: overlapping spans keep the best); with --input-format conll, each
    /// input line with the predicted tag appended
    Bio,
}

/// `--scheme`.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum SchemeArg {
    /// IOB2 tags: B-X, I-X, O
    Bio,
    /// B-X, I-X, E-X, S-X, O
    Bioes,
}

/// `--input-format`.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum InputFormat {
    /// A text a line, or a JSON line with a string "text"; streamed
    Text,
    /// A column file (CoNLL: the token in the first column, a blank line between sentences),
    /// read whole; its sentences are the texts, joined as `eval` joins them
    Conll,
}

impl SchemeArg {
    fn scheme(self) -> Scheme {
        match self {
            SchemeArg::Bio => Scheme::Bio,
            SchemeArg::Bioes => Scheme::Bioes,
        }
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum OnError {
    /// Answer it in its place with {"error", "line"}, report FILE:LINE on stderr, go on (exit 0)
    Record,
    /// Stop there, after the results of every line before it (exit 3; no --output file)
    Fail,
}

/// A text from an input line: a JSON object with a string "text", or the line itself.
/// Err: what is wrong with the line.
fn input_text(line: &[u8]) -> Result<String, String> {
    let line = std::str::from_utf8(line).map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    if !line.trim_start().starts_with('{') {
        return Ok(line.to_string());
    }
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    match v.get("text").and_then(|t| t.as_str()) {
        Some(t) => Ok(t.to_string()),
        None => Err("missing string field `text`".into()),
    }
}

/// One output line of `predict`, serialized straight from the text and its entities (no copy of
/// either: a 1 MB text with its entities costs no more than its own size to write). Keys in
/// alphabetical order.
#[derive(serde::Serialize)]
struct OutputLine<'a> {
    entities: Vec<OutputEntity<'a>>,
    text: &'a str,
}

#[derive(serde::Serialize)]
struct OutputEntity<'a> {
    end: usize,
    score: f64,
    start: usize,
    text: &'a str,
    #[serde(rename = "type")]
    label: &'a str,
}

impl<'a> OutputLine<'a> {
    fn new(text: &'a str, ents: &'a [PredEntity]) -> Self {
        // byte offset of every character offset an entity names, in one pass over the text
        let mut marks: Vec<usize> = ents.iter().flat_map(|e| [e.start, e.end]).collect();
        marks.sort_unstable();
        marks.dedup();
        let mut bytes = Vec::with_capacity(marks.len());
        let mut at = marks.iter().peekable();
        for (c, (b, _)) in text
            .char_indices()
            .chain(std::iter::once((text.len(), ' ')))
            .enumerate()
        {
            while at.next_if(|&&m| m == c).is_some() {
                bytes.push(b);
            }
        }
        let byte = |c: usize| bytes[marks.binary_search(&c).expect("marked above")];
        let entities = ents
            .iter()
            .map(|e| OutputEntity {
                end: e.end,
                score: e.score,
                start: e.start,
                text: &text[byte(e.start)..byte(e.end)],
                label: &e.label,
            })
            .collect();
        OutputLine { entities, text }
    }
}

/// A bad input line under `--on-error fail`: the run stops with exit code 3.
#[derive(Debug)]
pub struct BadLine(String);

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadLine {}

/// `gp-lite predict`.
pub fn run(a: PredictArgs) -> Res<()> {
    if a.format == OutputFormat::Bio && a.mode.nested {
        let what = "--format bio writes one tag a token, which cannot hold overlapping entities: \
                    drop --nested\n";
        clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, what).exit();
    }
    let pool = pool(a.threads)?;
    let mut predictor: Predictor<f32> = gp_lite::model_dir::load_model(&a.model)?;
    a.precision.apply(&mut predictor);
    if predictor.model.config.head.kind == "reader" {
        return crate::answer::run(&predictor, &pool, a.input.as_deref(), a.output.as_deref());
    }
    let (reader, source): (Box<dyn BufRead>, String) = match &a.input {
        Some(p) => (
            Box::new(std::io::BufReader::new(
                std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?,
            )),
            p.display().to_string(),
        ),
        None => (Box::new(std::io::stdin().lock()), "<stdin>".into()),
    };
    // A file output is written under a temporary name and renamed when complete.
    let tmp_output = a.output.as_ref().map(|p| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        p.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
    });
    let out: Box<dyn Write> = match (&tmp_output, &a.output) {
        (Some(p), Some(named)) => Box::new(NamedWriter {
            inner: BufWriter::new(std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?),
            path: named.clone(),
        }),
        _ => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let mode = match a.format {
        OutputFormat::Bio => Some(DecodeMode::Flat),
        OutputFormat::Json => a.mode.mode(),
    };
    let opts = PredictOptions {
        mode,
        threshold: a.threshold,
        batch_size: a.batch_size.max(1),
        window: a.windows.window,
        overlap: a.windows.overlap,
    };
    let mut stream = PredictStream {
        predictor: &predictor,
        pool: &pool,
        opts,
        ws: Workspace::new(),
        source: &source,
        on_error: a.on_error,
        out,
        format: a.format,
        scheme: a.scheme.scheme(),
        bad: 0,
    };
    let result = match a.input_format {
        InputFormat::Text => stream.run(reader),
        InputFormat::Conll => stream.run_columns(reader),
    };
    let bad = stream.bad;
    drop(stream);
    match (&tmp_output, &a.output) {
        (Some(tmp), Some(path)) if result.is_ok() => std::fs::rename(tmp, path)?,
        (Some(tmp), _) => {
            let _ = std::fs::remove_file(tmp);
        }
        _ => {}
    }
    if result.is_ok() && bad > 0 {
        eprintln!("{source}: {bad} bad line(s) answered with error records");
    }
    result
}

/// A writer whose errors name the file written (the user's `--output`, not the temporary name).
struct NamedWriter<W> {
    inner: W,
    path: PathBuf,
}

impl<W: Write> NamedWriter<W> {
    fn named(&self, e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))
    }
}

impl<W: Write> Write for NamedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).map_err(|e| self.named(e))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| self.named(e))
    }
}

/// One input line of a chunk: its number and its text, or what is wrong with it.
type Slot = (usize, Result<String, String>);

/// `gp-lite predict` as a filter: reads lines, predicts them in chunks of the batch size, and
/// writes one JSON line per input line, in input order, flushed after each chunk. Memory holds
/// one chunk at a time.
struct PredictStream<'a> {
    predictor: &'a Predictor<f32>,
    pool: &'a rayon::ThreadPool,
    opts: PredictOptions,
    ws: Workspace,
    source: &'a str,
    on_error: OnError,
    out: Box<dyn Write>,
    format: OutputFormat,
    scheme: Scheme,
    /// Bad lines answered with error records so far.
    bad: usize,
}

impl PredictStream<'_> {
    fn run(&mut self, mut reader: Box<dyn BufRead>) -> Res<()> {
        let mut chunk: Vec<Slot> = Vec::with_capacity(self.opts.batch_size);
        let mut buf: Vec<u8> = Vec::new();
        let mut lineno = 0;
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    // The lines read so far are answered before the run stops.
                    self.write_chunk(&mut chunk)?;
                    return Err(format!("{}:{}: {e}", self.source, lineno + 1).into());
                }
            }
            lineno += 1;
            if lineno == 1 && buf.starts_with(b"\xef\xbb\xbf") {
                buf.drain(..3); // a UTF-8 byte order mark
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
                if buf.last() == Some(&b'\r') {
                    buf.pop();
                }
            }
            // Empty lines are empty texts, so that output line k answers input line k.
            let text = input_text(&buf);
            let stop = text.is_err() && self.on_error == OnError::Fail;
            chunk.push((lineno, text));
            if chunk.len() == self.opts.batch_size || stop {
                self.write_chunk(&mut chunk)?;
            }
        }
        self.write_chunk(&mut chunk)
    }

    /// Predicts the texts of `chunk`, writes one line per slot and flushes. A text the
    /// tokenizer rejects becomes a bad line. Under `--on-error fail` the first bad line ends
    /// the run, after the lines before it are written.
    fn write_chunk(&mut self, chunk: &mut Vec<Slot>) -> Res<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let preds = loop {
            let texts: Vec<&str> = chunk.iter().filter_map(|(_, t)| t.as_deref().ok()).collect();
            let (predictor, opts, ws) = (self.predictor, &self.opts, &mut self.ws);
            match self.pool.install(|| predictor.predict(&texts, opts, ws)) {
                Ok(p) => break p,
                Err(PredictError::Tokenize { index, source }) => {
                    let slot = chunk
                        .iter_mut()
                        .filter(|(_, t)| t.is_ok())
                        .nth(index)
                        .expect("the tokenizer names one of the texts");
                    slot.1 = Err(format!("cannot tokenize: {source}"));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut preds = preds.into_iter();
        for (lineno, text) in chunk.drain(..) {
            match text {
                Ok(text) => {
                    let ents = preds.next().expect("one prediction per text");
                    self.write_text(&text, &ents)?;
                }
                Err(what) => {
                    let at = format!("{}:{lineno}: {what}", self.source);
                    if self.on_error == OnError::Fail {
                        self.out.flush()?;
                        return Err(BadLine(at).into());
                    }
                    eprintln!("error: {at}");
                    match self.format {
                        OutputFormat::Json => {
                            writeln!(self.out, "{}", serde_json::json!({"error": what, "line": lineno}))?
                        }
                        // an empty block in its place: block k still answers line k
                        OutputFormat::Bio => writeln!(self.out)?,
                    }
                    self.bad += 1;
                }
            }
        }
        self.out.flush()?;
        Ok(())
    }

    /// The answer to one text: a JSON line, or its tokens and tags and a blank line.
    fn write_text(&mut self, text: &str, ents: &[PredEntity]) -> Res<()> {
        match self.format {
            OutputFormat::Json => {
                serde_json::to_writer(&mut self.out, &OutputLine::new(text, ents))?;
                writeln!(self.out)?;
            }
            OutputFormat::Bio => {
                let tokens = bio::text_tokens(text);
                let spans: Vec<(usize, usize)> = tokens.iter().map(|t| (t.0, t.1)).collect();
                for (t, tag) in tokens.iter().zip(tags(ents, &spans, self.scheme)) {
                    writeln!(self.out, "{} {tag}", t.2)?;
                }
                writeln!(self.out)?;
            }
        }
        Ok(())
    }

    /// `--input-format conll`: the column file read whole, its sentences predicted a chunk at a
    /// time; then each input line is written back with its token's tag appended (`--format
    /// bio`), or a JSON line is written for each sentence. A sentence that cannot be tokenized
    /// stops the run, naming its line.
    fn run_columns(&mut self, mut reader: Box<dyn BufRead>) -> Res<()> {
        let mut input = String::new();
        reader
            .read_to_string(&mut input)
            .map_err(|e| format!("{}: {e}", self.source))?;
        let sentences = bio::sentences(std::path::Path::new(self.source), &input, bio::Join::Auto)?;
        let mut tags: Vec<Vec<String>> = Vec::with_capacity(sentences.len());
        for chunk in sentences.chunks(self.opts.batch_size) {
            let texts: Vec<&str> = chunk.iter().map(|s| s.example.text.as_str()).collect();
            let (predictor, opts, ws) = (self.predictor, &self.opts, &mut self.ws);
            let preds = match self.pool.install(|| predictor.predict(&texts, opts, ws)) {
                Ok(p) => p,
                Err(PredictError::Tokenize { index, source }) => {
                    let line = chunk[index].lines[0];
                    return Err(format!("{}:{line}: cannot tokenize: {source}", self.source).into());
                }
                Err(e) => return Err(e.into()),
            };
            for (s, ents) in chunk.iter().zip(&preds) {
                match self.format {
                    OutputFormat::Json => self.write_text(&s.example.text, ents)?,
                    OutputFormat::Bio => tags.push(self::tags(ents, &s.spans, self.scheme)),
                }
            }
        }
        if self.format == OutputFormat::Bio {
            let mut next = sentences
                .iter()
                .zip(&tags)
                .flat_map(|(s, t)| s.lines.iter().zip(t))
                .peekable();
            for (i, line) in input.lines().enumerate() {
                match next.next_if(|(&l, _)| l == i + 1) {
                    // the separator the line's columns use
                    Some((_, tag)) => {
                        let sep = if line.contains('\t') && !line.contains(' ') {
                            '\t'
                        } else {
                            ' '
                        };
                        writeln!(self.out, "{}{sep}{tag}", line.trim_end())?
                    }
                    None => writeln!(self.out, "{line}")?,
                }
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

/// The tag of each token (character spans) for flat predictions.
fn tags(ents: &[PredEntity], spans: &[(usize, usize)], scheme: Scheme) -> Vec<String> {
    bio::encode(
        ents.iter().map(|e| (e.start, e.end, e.label.as_str())),
        spans,
        scheme,
    )
}
