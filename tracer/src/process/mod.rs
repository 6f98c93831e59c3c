//! The traced processes: starting a command held at its first instruction ([`launch`]) as the
//! user who ran sudo ([`sudo_user`]), finding and reading a running one ([`target`]), the
//! signals a run answers ([`signals`]), the model of each process a run follows ([`session`],
//! all of them in a [`table`]), and the [`keeper`] that lets held processes go if tracer dies.

pub mod cgroup;
pub mod keeper;
pub mod launch;
pub mod session;
pub mod signals;
pub mod sudo_user;
pub mod table;
pub mod target;
