//! Slab objects counted in the kernel instead of sent one by one.
//!
//! An object the traced process is given outside any traced syscall or allocator call (a
//! socket buffer in `read`, a file in `openat`) can be charged to nothing finer than its cache,
//! so sending it as an event buys nothing a count does not. The kmem programs count such
//! objects per process and cache in [`SLAB_COUNTS_MAP`] (frees too, matched through the live
//! map as before), and userspace reads the counts while tracing and turns each change into a
//! [`SlabCountEvent`], which is decoded, recorded and replayed like the kernel's own events.

use core::mem::size_of;

use crate::{CACHE_NAME_BYTES, EventHeader};

/// Name of the map of counted slab objects: [`SlabCountKey`] to [`SlabCount`].
pub const SLAB_COUNTS_MAP: &str = "SLAB_COUNTS";
/// Entries of [`SLAB_COUNTS_MAP`]: (process, cache) pairs counted at once. When it is full,
/// objects of new pairs are sent as events.
pub const MAX_SLAB_COUNTS: u32 = 4096;
/// [`LiveObject::flags`]: the object is counted in [`SLAB_COUNTS_MAP`], and so is its free.
pub const SLAB_COUNTED: u32 = 2;

/// A process's objects of one cache.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlabCountKey {
    pub tgid: u32,
    /// [`crate::SLAB_KMALLOC`] or 0.
    pub flags: u32,
    /// The cache: its `struct kmem_cache` address, or for kmalloc the size class.
    pub cache: u64,
}
const _: () = assert!(size_of::<SlabCountKey>() == 16);

/// Counts since tracing began.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabCount {
    pub allocs: u64,
    /// Frees, in any context, of the objects counted in `allocs`.
    pub frees: u64,
    /// Bytes asked for, summed.
    pub bytes_req: u64,
    /// Bytes of each object (the cache's object size).
    pub object_size: u64,
    /// Bytes asked for by each object of a cache that is not kmalloc's (the cache's
    /// `object_size`, without alignment and metadata), so that counting one reads nothing.
    pub req_size: u64,
    /// The cache's name, NUL-padded; empty for kmalloc.
    pub name: [u8; CACHE_NAME_BYTES],
}
const _: () = assert!(size_of::<SlabCount>() == 72);

/// A value of the live-object map: what a free needs to find what it frees.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveObject {
    /// [`crate::SLAB_KMALLOC`], [`SLAB_COUNTED`].
    pub flags: u32,
    /// With [`SLAB_COUNTED`]: the process and cache whose count the free goes to.
    pub tgid: u32,
    pub cache: u64,
}
const _: () = assert!(size_of::<LiveObject>() == 16);

/// [`crate::kind::SLAB_COUNT`]: a (process, cache) count as of `header.ts_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabCountEvent {
    pub header: EventHeader,
    pub key: SlabCountKey,
    pub count: SlabCount,
}
const _: () = assert!(size_of::<SlabCountEvent>() == 112);
