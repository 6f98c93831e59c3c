//! Empty on purpose: `tracer` build-depends on this crate so that cargo rebuilds the eBPF
//! programs (the `tracer` binary target) when it changes. See aya-build.
#![no_std]
