//! Argument types shared by the subcommands.

use crate::Res;
use clap::{Args, ValueEnum};
use gp_lite::batch::Boundaries;
use gp_lite::data::bio::Join;
use gp_lite::data::{Format, ReadOptions};
use gp_lite::decode::DecodeMode;
use gp_lite::train::TokenizationChoice;

#[derive(Clone, Copy, ValueEnum)]
pub enum BoundariesArg {
    /// words when the training texts are not mostly CJK and every gold span starts and ends at
    /// whitespace (column files, tokenized corpora), tokens otherwise
    Auto,
    /// entities may start and end at any token
    Tokens,
    /// entities start at word starts and end at word ends (words are whitespace-separated)
    Words,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum JoinArg {
    /// none when most token characters are CJK or every token is one character, space otherwise
    Auto,
    Space,
    None,
}

/// Column-file and format options shared by train and eval.
#[derive(Args)]
pub struct DataArgs {
    /// Data format [default: detected from the content].
    #[arg(long, help = format_help(false), long_help = format_help(true))]
    pub format: Option<String>,
    /// How a column file's tokens are joined into the sentence text.
    #[arg(long, value_enum, default_value = "auto")]
    pub column_join: JoinArg,
}

impl DataArgs {
    pub fn options(&self) -> Res<ReadOptions> {
        Ok(ReadOptions {
            format: parse_format(&self.format)?,
            join: match self.column_join {
                JoinArg::Auto => Join::Auto,
                JoinArg::Space => Join::Space,
                JoinArg::None => Join::None,
            },
        })
    }
}

/// `--flat` / `--nested` (neither: the model's default, flat when its training data had no
/// overlapping entities).
#[derive(Args)]
pub struct ModeArgs {
    /// Non-overlapping output (keep the best of overlapping spans).
    #[arg(long, conflicts_with = "nested")]
    pub flat: bool,
    /// Every span above the threshold, overlapping or not.
    #[arg(long)]
    pub nested: bool,
}

impl ModeArgs {
    pub fn mode(&self) -> Option<DecodeMode> {
        match (self.flat, self.nested) {
            (true, _) => Some(DecodeMode::Flat),
            (_, true) => Some(DecodeMode::Nested),
            _ => None,
        }
    }
}

/// The precision a loaded model runs in.
#[derive(Args)]
pub struct PrecisionArgs {
    /// Number format of the encoder's products: f32, int8 (weights quantised per output
    /// channel, activations per row, sums in i32) or bf16 (both operands rounded to bf16, sums
    /// in f32) [default: the model's: that of a directory written by `quantize`, else f32]
    #[arg(long)]
    pub precision: Option<gp_lite::precision::Precision>,
}

impl PrecisionArgs {
    /// Runs `predictor` in the precision asked for, if any (it loads in its own).
    pub fn apply(&self, predictor: &mut gp_lite::predict::Predictor<f32>) {
        if let Some(p) = self.precision {
            predictor.set_precision(p);
        }
    }
}

/// How texts longer than the model's `max_len` are cut into windows.
#[derive(Args)]
pub struct WindowArgs {
    /// Tokens per window of a text longer than the model's max length, [CLS]/[SEP] included
    /// [default: 128, or the model's max length if smaller]
    #[arg(long, value_parser = window_len)]
    pub window: Option<usize>,
    /// Tokens shared by consecutive windows (an entity up to this long always lies whole in one)
    #[arg(long, default_value_t = gp_lite::predict::DEFAULT_OVERLAP)]
    pub overlap: usize,
}

/// A window length: [CLS], [SEP] and at least one token.
pub fn window_len(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 3 => Ok(n),
        Ok(_) => Err("a window holds [CLS], [SEP] and at least one token: 3 or more".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `--format`'s help from the data-format registry: the names (aliases in parentheses), and
/// with `long` each format's help line. (The value is parsed by `Format::from_str`, which takes
/// any case and whose error lists the names.)
fn format_help(long: bool) -> String {
    let name = |k: &gp_lite::data::FormatKind| match k.aliases {
        [] => k.name.to_string(),
        aliases => format!("{} ({})", k.name, aliases.join(", ")),
    };
    let kinds: Vec<_> = Format::ALL.iter().map(|f| f.kind()).collect();
    if !long {
        let names: Vec<String> = kinds.iter().map(name).collect();
        return format!(
            "Data format: {} [default: detected from the content]",
            names.join(", ")
        );
    }
    let mut help = "Data format [default: detected from the content]\n\nPossible values:".to_string();
    for k in &kinds {
        help.push_str(&format!("\n  - {}: {}", name(k), k.help));
    }
    help
}

/// `--format`, parsed.
pub fn parse_format(f: &Option<String>) -> Res<Option<Format>> {
    Ok(match f {
        Some(s) => Some(s.parse::<Format>()?),
        None => None,
    })
}

impl BoundariesArg {
    /// The boundaries asked for (`None`: chosen from the data).
    pub fn boundaries(self) -> Option<Boundaries> {
        match self {
            BoundariesArg::Auto => None,
            BoundariesArg::Tokens => Some(Boundaries::Tokens),
            BoundariesArg::Words => Some(Boundaries::Words),
        }
    }
}

/// `--tokenization`'s values: `auto` and every registered kind made from a pretrained tokenizer,
/// each with its help line.
pub fn tokenization_values() -> clap::builder::PossibleValuesParser {
    let auto = clap::builder::PossibleValue::new("auto").help(
        "chars when more than half of the training texts' non-whitespace characters are CJK \
         (Han, kana, Hangul, CJK punctuation), subwords otherwise",
    );
    let kinds = gp_lite::tokenize::kinds();
    let made = kinds
        .iter()
        .filter(|k| k.from_pretrained.is_some())
        .map(|k| clap::builder::PossibleValue::new(k.name).help(k.help));
    clap::builder::PossibleValuesParser::new(std::iter::once(auto).chain(made))
}

/// The tokenization `--tokenization` asks for.
pub fn tokenization_choice(value: &str) -> TokenizationChoice {
    match value {
        "auto" => TokenizationChoice::Auto,
        name => TokenizationChoice::Fixed(name.to_string()),
    }
}
