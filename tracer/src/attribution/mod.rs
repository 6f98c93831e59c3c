//! Attribution: which part of the traced process's address space an address belongs to.

pub mod join;
pub mod resident;
pub mod space;

pub use space::{AddressSpace, Mapping};
