//! Renderers: the [`Summary`] for people (text, HTML, SVG) and for tools (JSON, folded stacks,
//! pprof). Each reads the summary and nothing below it, and does no I/O of its own.

pub mod charts;
pub mod flame;
pub mod folded;
pub mod html;
pub mod json;
pub mod pprof;
pub mod text;

pub use crate::summary::{Summary, human_bytes, visible};

#[cfg(test)]
mod hostile_tests;
