//! The per-CPU counters of what the programs could not do, summed by userspace.

/// Indices into the per-CPU counters array. Each counts occurrences on one CPU; userspace sums.
pub mod counter {
    /// An event could not be reserved in the ring buffer: it is lost.
    pub const RINGBUF_DROPPED: u32 = 0;
    /// A syscall return arrived without its entry (entered before attaching, or entry evicted).
    pub const SYSCALL_UNPAIRED_EXIT: u32 = 1;
    /// A syscall entry could not be stored.
    pub const SYSCALL_ENTRY_STORE_FAILED: u32 = 2;
    /// A tracepoint field could not be read.
    pub const READ_FAILED: u32 = 3;
    /// An allocator return arrived without its entry (entered before attaching).
    pub const ALLOC_UNPAIRED_EXIT: u32 = 4;
    /// An allocator call's state could not be stored: the call is lost.
    pub const ALLOC_STATE_STORE_FAILED: u32 = 5;
    /// A stack could not be walked (the event is still counted, without a stack).
    pub const STACK_FAILED: u32 = 6;
    /// An allocator call nested in another on the same thread, counted as part of the outer one.
    pub const ALLOC_NESTED: u32 = 7;
    /// A page or slab object could not be remembered, so its free will not be matched.
    pub const KERNEL_LIVE_FULL: u32 = 8;
    /// `--sample`: an outermost allocator call that was not sampled.
    pub const ALLOC_UNSAMPLED: u32 = 9;
    /// `--sample`: a sampled block could not be remembered, so its free will not be seen.
    pub const SAMPLED_FULL: u32 = 10;
    /// The traced process created a child process (not a thread), which is not traced.
    pub const CHILD_PROCESSES: u32 = 11;
    /// A stack hashed to the slot of another one in the stack map, so it was not stored.
    pub const STACK_COLLIDED: u32 = 12;
    /// The stack map had no free entry for a new stack.
    pub const STACK_MAP_FULL: u32 = 13;
    /// `--follow`: a child process could not be added to the followed set: it is not traced.
    pub const FOLLOW_FULL: u32 = 14;
    /// The unwinder stopped at its frame limit with more stack to walk.
    pub const UNWIND_TRUNCATED: u32 = 15;
    /// A walked stack hashed to the id of another one: it was stored by frame pointer instead.
    pub const UNWIND_COLLIDED: u32 = 16;
    /// The map of walked stacks had no free entry: the stack was stored by frame pointer
    /// instead.
    pub const UNWIND_MAP_FULL: u32 = 17;
    /// Stacks walked with the unwind tables.
    pub const UNWIND_WALKS: u32 = 18;
    /// Frames those walks found (beyond the first, where each walk starts).
    pub const UNWIND_FRAMES: u32 = 19;
    /// Nanoseconds those walks took, storing the stack included (only with
    /// [`crate::config_flags::TIME_UNWIND`]).
    pub const UNWIND_NS: u32 = 20;
    /// Unwind rows the walks looked up (one a step).
    pub const UNWIND_ROW_LOOKUPS: u32 = 21;
    /// Of those, the rows not in the per-CPU cache of rows by address, searched for in the
    /// tables.
    pub const UNWIND_ROW_MISSES: u32 = 22;
    /// Number of counters.
    pub const COUNT: u32 = 23;
}
