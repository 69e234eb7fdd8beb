//! Text to token ids with character offsets.
//!
//! Two kinds of tokenizer: an HF `tokenizers` tokenizer (from a pretrained model's tokenizer.json,
//! or a BERT WordPiece built from a vocab.txt) and a per-character vocabulary for training from
//! scratch on Chinese. Both produce an [`Encoding`] with `[CLS] ... [SEP]` and offsets in
//! characters (Unicode code points) of the input text.

mod align;
mod char_vocab;
mod encoding;
mod error;
mod hf;
mod per_char;
pub(crate) mod tokenizer;
mod window;

pub use align::{char_span_to_tokens, token_span_to_chars};
pub use char_vocab::CharVocab;
pub use encoding::Encoding;
pub use error::TokenizeError;
pub use hf::HfTokenizer;
pub use per_char::{is_cjk, mostly_cjk, PerChar};
pub use tokenizer::{Tokenization, Tokenizer};
pub use window::{window, window_ranges, windows, Window};
