//! tracer: a Linux memory-allocation tracer built on eBPF.
//!
//! The modules, lowest layer first (each imports only those before it; `tests/layers.rs`
//! checks it, and `docs/architecture.md` says why and how to add to each):
//!
//! - the vocabulary: [`facts`] (what a run ends with, as recordings keep it), [`gfp`] (the
//!   kernel's GFP flag names), [`events`] (ring-buffer records decoded into typed events);
//! - the model: [`aggregate`] (statistics keyed by interned ids), [`attribution`] (the address
//!   space, and which path served what);
//! - the kernel side: [`symbolize`], [`unwind`] (tables for the kernel's stack walker),
//!   [`probes`] (loading, attaching and reading the eBPF object), [`reach`] (the leak check:
//!   which live blocks a stopped process can still reach);
//! - [`summary`]: every fact a report shows, and every name, label and note, made once;
//! - [`process`]: each traced process's model and summary, launching and reading processes;
//! - [`report`]: the renderers, one per format, reading only the summary;
//! - files: [`output`], [`record`] (recordings), [`replay`] (`tracer report`);
//! - while a run goes on: [`periodic`] (`--interval`, snapshots), [`serve`] (`--listen`),
//!   [`top`] (`tracer top`);
//! - commands: [`diff`] (`tracer diff`), [`runtime`] (one run, in four phases), [`cli`].

pub mod aggregate;
pub mod attribution;
pub mod cli;
pub mod diff;
pub mod events;
pub mod facts;
pub mod gfp;

pub mod output;
pub mod periodic;
pub mod probes;
pub mod process;
pub mod reach;

pub mod record;
pub mod replay;
pub mod report;
pub mod runtime;
pub mod serve;

pub mod summary;
pub mod symbolize;

pub mod top;
pub mod unwind;
