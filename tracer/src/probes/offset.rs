//! Where in an allocator function its uprobe goes.
//!
//! The kernel emulates a few x86 instructions at a uprobe (push of a register, relative jumps
//! and calls, conditional jumps, nops) and single-steps every other one out of line, which
//! costs a second trap: on this kind of machine about 6 µs a hit against 1.6 µs. Many
//! allocators start with plain register moves and loads (jemalloc's `free` runs eleven of
//! them before its first branch), so a probe at the entry is single-stepped on every call.
//!
//! A probe can go further in, onto the first emulated instruction, when every call passes
//! there exactly once with what the programs read still as it was at the entry: the arguments
//! they read, the stack pointer (the return address at its top) and the frame pointer (the
//! stack walk). So the instructions before it must fall through to the next one, write
//! neither those registers nor memory, and no branch of the function may land on or before
//! the probe (a loop back to it would count one call twice).

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};
use tracer_common::AllocFn;

/// How many instructions a probe may move past.
const MAX_SKIPPED: usize = 16;

/// The argument registers of the System V x86-64 calling convention, in order.
const ARGS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// How many arguments the eBPF programs read at a call of `func` (see `probes/alloc.rs` in the
/// eBPF crate).
pub fn arguments_read(func: AllocFn) -> usize {
    match func {
        AllocFn::Reallocarray | AllocFn::PosixMemalign => 3,
        AllocFn::Calloc | AllocFn::Realloc | AllocFn::AlignedAlloc | AllocFn::Memalign => 2,
        AllocFn::Malloc
        | AllocFn::Valloc
        | AllocFn::Pvalloc
        | AllocFn::OperatorNew
        | AllocFn::Free
        | AllocFn::OperatorDelete => 1,
    }
}

/// The offset, in `code` (the function's bytes from its entry, as much of them as is known),
/// of the instruction its probe goes on, for a program that reads the first `args` arguments.
/// 0, the entry, when no later instruction qualifies.
pub fn probe_offset(code: &[u8], args: usize) -> u64 {
    let kept: Vec<Register> = [Register::RSP, Register::RBP]
        .into_iter()
        .chain(ARGS.into_iter().take(args))
        .collect();
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    for _ in 0..=MAX_SKIPPED {
        if !decoder.can_decode() {
            return 0;
        }
        let insn = decoder.decode();
        if insn.is_invalid() {
            return 0;
        }
        if is_emulated(&insn) {
            let at = insn.ip();
            return if at == 0 || lands_in_prologue(code, at) {
                0
            } else {
                at
            };
        }
        if !can_skip(&insn, &kept, &mut info) {
            return 0;
        }
    }
    0
}

fn is_emulated(insn: &Instruction) -> bool {
    insn.is_jcc_short_or_near()
        || insn.is_jmp_short_or_near()
        || insn.is_call_near()
        || insn.mnemonic() == Mnemonic::Nop
        || (insn.mnemonic() == Mnemonic::Push
            && insn.op0_kind() == OpKind::Register
            && insn.op0_register().is_gpr64())
}

/// Whether running `insn` before the probe leaves everything the probe reads as it was.
fn can_skip(insn: &Instruction, kept: &[Register], info: &mut InstructionInfoFactory) -> bool {
    if insn.flow_control() != FlowControl::Next || insn.has_lock_prefix() {
        return false;
    }
    let info = info.info(insn);
    let writes = |access: OpAccess| {
        matches!(
            access,
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        )
    };
    let touches_kept = info
        .used_registers()
        .iter()
        .any(|r| writes(r.access()) && kept.contains(&r.register().full_register()));
    let stores = info.used_memory().iter().any(|m| writes(m.access()));
    !touches_kept && !stores
}

/// Whether a direct branch anywhere in `code` lands inside `(0, at]`.
fn lands_in_prologue(code: &[u8], at: u64) -> bool {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut insn);
        let direct = matches!(
            insn.op0_kind(),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
        );
        if direct && (1..=at).contains(&insn.near_branch_target()) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_past_flag_setting_instructions_onto_emulated_ones() {
        // glibc free: test %rdi,%rdi; je ...; push %rbp
        let free = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55];
        assert_eq!(probe_offset(&free, 1), 3);
        // glibc malloc: push %r12 is emulated already.
        assert_eq!(probe_offset(&[0x41, 0x54, 0x55, 0x53], 1), 0);
        // endbr64; push %rbp
        assert_eq!(probe_offset(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55], 1), 4);
        // cmpb $0,0x140e71(%rip); je ...
        let memalign = [0x80, 0x3d, 0x71, 0x0e, 0x14, 0, 0, 0x74, 0x07];
        assert_eq!(probe_offset(&memalign, 2), 7);
        // Garbage or nothing: stay.
        assert_eq!(probe_offset(&[], 1), 0);
        assert_eq!(probe_offset(&[0x0f, 0x0b], 1), 0);
    }

    /// The first 0x36 bytes of Debian's libjemalloc.so.2 `free`: eleven moves, shifts, masks
    /// and loads (writing rax, rcx, rdx), then `jne`.
    const JEMALLOC_FREE: [u8; 54] = [
        0x48, 0x89, 0xf8, // mov %rdi,%rax
        0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, // mov 0xa530e(%rip),%rdx
        0x48, 0x89, 0xf9, // mov %rdi,%rcx
        0x48, 0xc1, 0xe8, 0x1a, // shr $0x1a,%rax
        0x48, 0x81, 0xe1, 0x00, 0x00, 0x00, 0xc0, // and $0xffffffffc0000000,%rcx
        0x25, 0xf0, 0x00, 0x00, 0x00, // and $0xf0,%eax
        0x64, 0x48, 0x03, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, // add %fs:0x0,%rax
        0x48, 0x01, 0xd0, // add %rdx,%rax
        0x48, 0x3b, 0x88, 0xb0, 0x01, 0x00, 0x00, // cmp 0x1b0(%rax),%rcx
        0x0f, 0x85, 0x8a, 0x00, 0x00, 0x00, // jne +0x8a
    ];

    #[test]
    fn moves_past_register_work_that_keeps_the_arguments() {
        assert_eq!(probe_offset(&JEMALLOC_FREE, 1), 0x30);
        // A program reading three arguments needs rdx, which the second instruction loads.
        assert_eq!(probe_offset(&JEMALLOC_FREE, 3), 0);
    }

    #[test]
    fn stays_before_what_changes_what_the_probe_reads() {
        // mov %rdi,%rbx; push %rbp: rbx is not read, the probe moves on.
        assert_eq!(probe_offset(&[0x48, 0x89, 0xfb, 0x55], 1), 3);
        // mov %rsi,%rdi; push %rbp: the first argument changes.
        assert_eq!(probe_offset(&[0x48, 0x89, 0xf7, 0x55], 1), 0);
        // sub $0x18,%rsp moves the stack.
        assert_eq!(probe_offset(&[0x48, 0x83, 0xec, 0x18, 0x55], 1), 0);
        // mov %rsp,%rbp: the frame pointer changes.
        assert_eq!(probe_offset(&[0x48, 0x89, 0xe5, 0x55], 1), 0);
        // mov %rax,(%rdx): a store.
        assert_eq!(probe_offset(&[0x48, 0x89, 0x02, 0x55], 1), 0);
        // lock incl 0x10(%rip): a store, and locked.
        let locked = [0xf0, 0xff, 0x05, 0x10, 0, 0, 0, 0x55];
        assert_eq!(probe_offset(&locked, 1), 0);
        // ret: the function ends before any emulated instruction.
        assert_eq!(probe_offset(&[0xc3, 0x55], 1), 0);
    }

    #[test]
    fn stays_at_the_entry_when_a_branch_lands_before_the_probe() {
        // mov %rdi,%rax; jmp +0 (to itself, 3); ...; a loop at the end jumping back to 3.
        let mut code = vec![0x48, 0x89, 0xf8, 0x55, 0x90, 0x90];
        assert_eq!(probe_offset(&code, 1), 3);
        // jmp rel8 at 6 back to 3: 6 + 2 - 5 = 3.
        code.extend_from_slice(&[0xeb, 0xfb]);
        assert_eq!(probe_offset(&code, 1), 0);
        // A branch to the entry itself is as good as a call.
        let mut code = vec![0x48, 0x89, 0xf8, 0x55, 0x90];
        code.extend_from_slice(&[0xeb, 0xf9]); // 5 + 2 - 7 = 0
        assert_eq!(probe_offset(&code, 1), 3);
    }

    #[test]
    fn gives_each_function_the_arguments_its_program_reads() {
        assert_eq!(arguments_read(AllocFn::Free), 1);
        assert_eq!(arguments_read(AllocFn::Calloc), 2);
        assert_eq!(arguments_read(AllocFn::PosixMemalign), 3);
        assert_eq!(arguments_read(AllocFn::Reallocarray), 3);
    }
}
