//! tracer: a Linux memory-allocation tracer built on eBPF.
//!
//! Layers, from the kernel up: [`probes`] loads and attaches the eBPF programs, [`events`]
//! decodes ring-buffer records, [`aggregate`] turns events into statistics, and [`report`]
//! renders them. [`runtime`] drives one session; [`launch`] and [`target`] deal with processes.

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

pub mod record;
pub mod replay;
pub mod report;
pub mod runtime;
pub mod serve;

pub mod summary;
pub mod symbolize;

pub mod top;
pub mod unwind;
