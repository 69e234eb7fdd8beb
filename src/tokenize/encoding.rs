//! One encoded text: token ids, character offsets, which tokens are special, where entities may
//! begin and end, and each token's segment.

/// One encoded text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids, `[CLS]` first and `[SEP]` last.
    pub ids: Vec<u32>,
    /// Per token, `[start, end)` in characters of the text; `(0, 0)` for special tokens.
    pub offsets: Vec<(usize, usize)>,
    /// Per token, whether it is a special token (`[CLS]`, `[SEP]`, ...).
    pub special: Vec<bool>,
    /// Per token, whether an entity may start / end at it: every non-special token, until
    /// [`Encoding::mark_words`] restricts them to word boundaries.
    pub may_start: Vec<bool>,
    /// Per token, whether an entity may end at it; see `may_start`.
    pub may_end: Vec<bool>,
    /// Per token, its segment (BERT's `token_type_ids`): 0 for a single text; a head that
    /// encodes a pair of texts marks the second one's tokens 1.
    pub type_ids: Vec<u32>,
}

impl Encoding {
    /// An encoding whose every non-special token may start and end an entity.
    pub fn new(ids: Vec<u32>, offsets: Vec<(usize, usize)>, special: Vec<bool>) -> Encoding {
        assert!(
            ids.len() == offsets.len() && ids.len() == special.len(),
            "Encoding: ids, offsets and special differ in length"
        );
        let n = ids.len();
        let may: Vec<bool> = special.iter().map(|&s| !s).collect();
        Encoding {
            ids,
            offsets,
            special,
            may_start: may.clone(),
            may_end: may,
            type_ids: vec![0; n],
        }
    }

    /// Appends a token.
    pub fn push(&mut self, id: u32, offsets: (usize, usize), special: bool) {
        self.ids.push(id);
        self.offsets.push(offsets);
        self.special.push(special);
        self.may_start.push(!special);
        self.may_end.push(!special);
        self.type_ids.push(0);
    }

    /// Appends token `t` of `other` as a content token (not special), every field copied, its
    /// character offsets shifted by `shift`.
    pub fn push_token_of(&mut self, other: &Encoding, t: usize, shift: usize) {
        let (s, e) = other.offsets[t];
        self.ids.push(other.ids[t]);
        self.offsets.push((s + shift, e + shift));
        self.special.push(false);
        self.may_start.push(other.may_start[t]);
        self.may_end.push(other.may_end[t]);
        self.type_ids.push(other.type_ids[t]);
    }

    /// Removes the first `k` tokens.
    pub fn drain_front(&mut self, k: usize) {
        self.ids.drain(..k);
        self.offsets.drain(..k);
        self.special.drain(..k);
        self.may_start.drain(..k);
        self.may_end.drain(..k);
        self.type_ids.drain(..k);
    }

    /// Restricts entity boundaries to the words of `text` (the text this encodes): a token may
    /// start an entity only where a word starts (text start or after whitespace) and end one
    /// only where a word ends (text end or before whitespace).
    pub fn mark_words(&mut self, text: &str) {
        let space: Vec<bool> = text.chars().map(char::is_whitespace).collect();
        for (t, &(s, e)) in self.offsets.iter().enumerate() {
            if self.special[t] {
                continue;
            }
            self.may_start[t] &= s == 0 || space.get(s - 1).copied().unwrap_or(true);
            self.may_end[t] &= space.get(e).copied().unwrap_or(true);
        }
    }

    /// Number of tokens, specials included.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens at all (never the case for the output of a
    /// [`Tokenizer`](super::Tokenizer)).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
