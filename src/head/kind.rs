//! What the head registry knows of a head: its name, help line and how to make it. Each head
//! file defines one [`HeadKind`] and `head/mod.rs` lists them.

use super::config::{HeadError, HeadOptions, Settings};
use super::span_head::SpanHead;
use crate::scalar::Scalar;
use rand::RngCore;

/// The sizes a head is built for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadShape {
    /// The encoder's hidden size H.
    pub hidden: usize,
    /// Number of entity types C.
    pub types: usize,
    /// Standard deviation of the encoder's initialisation (BERT's `initializer_range`).
    pub std: f64,
}

/// A head's constructor: settings (already checked), shape, random source.
pub type BuildHead<T> = fn(&Settings, HeadShape, &mut dyn RngCore) -> Result<Box<dyn SpanHead<T>>, HeadError>;

/// A registered head.
pub struct HeadKind<T> {
    /// `--head` value and config.json's `head.kind`.
    pub name: &'static str,
    /// One line for `--help`.
    pub help: &'static str,
    /// Whether the head can output overlapping entities.
    pub nested: bool,
    /// The head's settings from the command line (what config.json keeps beside `kind`).
    pub settings: fn(&HeadOptions) -> Settings,
    /// Checks settings for a head of `shape`, before anything is allocated; returns a lower
    /// bound of the head's parameter count (its weight matrices).
    pub check: fn(&Settings, HeadShape) -> Result<u128, HeadError>,
    /// A fresh head (checked settings).
    pub build: BuildHead<T>,
}

impl<T: Scalar> std::fmt::Debug for HeadKind<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadKind").field("name", &self.name).finish()
    }
}
