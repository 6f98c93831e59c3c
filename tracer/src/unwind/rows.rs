//! Compiling an ELF file's call frame information into [`UnwindRow`]s (see [`super`]).

use std::path::Path;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, LittleEndian, Register, RegisterRule,
    UnwindContext, UnwindSection,
};
use object::{Object, ObjectSection, ObjectSegment};
use tracer_common::{UnwindRow, unwind};

/// x86-64 DWARF register numbers.
const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

/// The one CFA expression of `.plt` entries: `rsp + 8 + ((rip & 15) >= N) << 3`, with N the
/// entry's offset past its push (11 for the classic PLT, 10 for some linkers' variants).
const PLT_EXPRESSION: [u8; 11] = [
    0x77, 0x08, // DW_OP_breg7 (rsp) 8
    0x80, 0x00, // DW_OP_breg16 (rip) 0
    0x3f, // DW_OP_lit15
    0x1a, // DW_OP_and
    0x3b, // DW_OP_lit11 (the threshold; checked apart)
    0x2a, // DW_OP_ge
    0x33, // DW_OP_lit3
    0x24, // DW_OP_shl
    0x22, // DW_OP_plus
];

#[derive(Debug, thiserror::Error)]
pub enum UnwindError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file tracer can read: {reason}")]
    Elf { path: String, reason: String },
    #[error("{path}: malformed call frame information: {reason}")]
    Cfi { path: String, reason: String },
    #[error("{path}: compiling its call frame information failed (a bug in tracer)")]
    Panicked { path: String },
}

/// The compiled rows of one file, sorted by address, each holding until the next, and where
/// its loadable segments lie: `(file offset, address, bytes in the file)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnwindTable {
    pub rows: Vec<UnwindRow>,
    pub segments: Vec<(u64, u64, u64)>,
}

impl UnwindTable {
    /// What to subtract from a run-time address in a mapping of this file (at `start`, from
    /// file offset `offset`) to get the table's address: the mapping's load bias.
    pub fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        let (seg_offset, vaddr, _) = self
            .segments
            .iter()
            .find(|&&(o, _, size)| (o & !0xfff) <= offset && offset < o.saturating_add(size))?;
        let at = vaddr.wrapping_add(offset).wrapping_sub(*seg_offset);
        Some(start.wrapping_sub(at))
    }

    /// The row that holds at `pc` (a file address), if any row starts at or before it.
    pub fn find(&self, pc: u64) -> Option<&UnwindRow> {
        let i = self.rows.partition_point(|r| r.pc <= pc);
        i.checked_sub(1).map(|i| &self.rows[i])
    }
}

/// Compiles the call frame information of the ELF file at `path`.
pub fn compile_file(path: &Path) -> Result<UnwindTable, UnwindError> {
    let shown = path.display().to_string();
    let data = std::fs::read(path).map_err(|source| UnwindError::Read {
        path: shown.clone(),
        source,
    })?;
    compile(&data).map_err(|e| match e {
        Compile::Elf(reason) => UnwindError::Elf {
            path: shown,
            reason,
        },
        Compile::Cfi(reason) => UnwindError::Cfi {
            path: shown,
            reason,
        },
    })
}

enum Compile {
    Elf(String),
    Cfi(String),
}

impl From<gimli::Error> for Compile {
    fn from(e: gimli::Error) -> Self {
        Compile::Cfi(e.to_string())
    }
}

/// One rule as compiled, over `[start, end)`.
type Span = (u64, u64, UnwindRow);

fn compile(data: &[u8]) -> Result<UnwindTable, Compile> {
    let file = object::File::parse(data).map_err(|e| Compile::Elf(e.to_string()))?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(Compile::Elf(format!(
            "{:?} code (tracer unwinds x86-64)",
            file.architecture()
        )));
    }
    let section_addr = |name: &str| file.section_by_name(name).map(|s| s.address());
    let mut bases = BaseAddresses::default();
    if let Some(a) = section_addr(".eh_frame_hdr") {
        bases = bases.set_eh_frame_hdr(a);
    }
    if let Some(a) = section_addr(".text") {
        bases = bases.set_text(a);
    }
    if let Some(a) = section_addr(".got") {
        bases = bases.set_got(a);
    }
    let mut spans: Vec<Span> = Vec::new();
    if let Some(section) = file.section_by_name(".eh_frame") {
        let bytes = section.data().map_err(|e| Compile::Elf(e.to_string()))?;
        let eh = EhFrame::new(bytes, LittleEndian);
        let bases = bases.clone().set_eh_frame(section.address());
        spans_of(&eh, &bases, &mut spans)?;
    }
    // .debug_frame covers what .eh_frame does not (where both describe code, .eh_frame wins:
    // it is what the program's own unwinder uses).
    if let Some(section) = file.section_by_name(".debug_frame") {
        let bytes = section.data().map_err(|e| Compile::Elf(e.to_string()))?;
        let mut debug = DebugFrame::new(bytes, LittleEndian);
        debug.set_address_size(8);
        let mut more = Vec::new();
        spans_of(&debug, &bases, &mut more)?;
        spans.sort_by_key(|s| s.0);
        more.retain(|m| {
            let i = spans.partition_point(|s| s.1 <= m.0);
            spans.get(i).is_none_or(|s| s.0 >= m.1)
        });
        spans.extend(more);
    }
    let mut table = table_of(spans);
    table.segments = file
        .segments()
        .map(|seg| {
            let (offset, size) = seg.file_range();
            (offset, seg.address(), size)
        })
        .collect();
    Ok(table)
}

/// The spans of every FDE of `section`.
fn spans_of<'a, S: UnwindSection<gimli::EndianSlice<'a, LittleEndian>>>(
    section: &S,
    bases: &BaseAddresses,
    out: &mut Vec<Span>,
) -> Result<(), Compile>
where
    <S as UnwindSection<gimli::EndianSlice<'a, LittleEndian>>>::Offset: gimli::UnwindOffset,
{
    let mut ctx = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next()? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde = partial.parse(UnwindSection::cie_from_offset)?;
        let mut table = fde.rows(section, bases, &mut ctx)?;
        while let Some(row) = table.next_row()? {
            if row.start_address() >= row.end_address() {
                continue;
            }
            let rule = rule_of(section, row)?;
            out.push((row.start_address(), row.end_address(), rule));
        }
    }
    Ok(())
}

fn rule_of<'a, S: UnwindSection<gimli::EndianSlice<'a, LittleEndian>>>(
    section: &S,
    row: &gimli::UnwindTableRow<usize>,
) -> Result<UnwindRow, Compile> {
    let unknown = UnwindRow {
        pc: row.start_address(),
        cfa: unwind::CFA_UNKNOWN,
        ..UnwindRow::default()
    };
    // The return address: at CFA - 8, or nothing tracer follows.
    if !matches!(row.register(RA), None | Some(RegisterRule::Offset(-8))) {
        return Ok(unknown);
    }
    let (cfa, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(offset) = i32::try_from(*offset) else {
                return Ok(unknown);
            };
            match *register {
                RSP => (unwind::CFA_RSP, offset),
                RBP => (unwind::CFA_RBP, offset),
                _ => return Ok(unknown),
            }
        }
        CfaRule::Expression(expr) => {
            let bytes = expr.get(section)?.0.slice();
            match plt_threshold(bytes) {
                Some(threshold) => (unwind::CFA_PLT, i32::from(threshold)),
                None => return Ok(unknown),
            }
        }
    };
    let (rbp, rbp_offset) = match row.register(RBP) {
        None | Some(RegisterRule::SameValue | RegisterRule::Undefined) => (unwind::RBP_SAME, 0),
        Some(RegisterRule::Offset(o)) => match i16::try_from(o) {
            Ok(o) => (unwind::RBP_AT_CFA, o),
            Err(_) => (unwind::RBP_UNKNOWN, 0),
        },
        Some(_) => (unwind::RBP_UNKNOWN, 0),
    };
    Ok(UnwindRow {
        pc: row.start_address(),
        cfa_offset,
        rbp_offset,
        cfa,
        rbp,
    })
}

/// The PLT expression's threshold, if `bytes` is that expression.
fn plt_threshold(bytes: &[u8]) -> Option<u8> {
    if bytes.len() != PLT_EXPRESSION.len() {
        return None;
    }
    let same = bytes
        .iter()
        .zip(PLT_EXPRESSION)
        .enumerate()
        .all(|(i, (&b, e))| i == 6 || b == e);
    // DW_OP_lit0 is 0x30: lit10 and lit11 are 0x3a and 0x3b.
    (same && matches!(bytes[6], 0x3a | 0x3b)).then(|| bytes[6] - 0x30)
}

/// Sorted rows from spans: an unknown row where one span ends and no other begins, and
/// consecutive rows with the same rule merged.
fn table_of(mut spans: Vec<Span>) -> UnwindTable {
    spans.sort_by_key(|s| s.0);
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(spans.len());
    let mut end = 0u64;
    let same_rule = |a: &UnwindRow, b: &UnwindRow| {
        (a.cfa, a.cfa_offset, a.rbp, a.rbp_offset) == (b.cfa, b.cfa_offset, b.rbp, b.rbp_offset)
    };
    for (start, stop, row) in spans {
        if !rows.is_empty() && start > end {
            rows.push(UnwindRow {
                pc: end,
                ..UnwindRow::default()
            });
        }
        match rows.last() {
            Some(last) if same_rule(last, &row) => {}
            Some(last) if last.pc == start => *rows.last_mut().unwrap() = row,
            _ => rows.push(row),
        }
        end = end.max(stop);
    }
    if !rows.is_empty() {
        rows.push(UnwindRow {
            pc: end,
            ..UnwindRow::default()
        });
    }
    UnwindTable {
        rows,
        segments: Vec::new(),
    }
}

#[cfg(test)]
#[path = "rows_tests.rs"]
mod tests;
