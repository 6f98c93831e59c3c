//! Turning addresses into functions and source lines, late: only for stacks that reach a report.
//!
//! Addresses are resolved to (file, file offset) through the [`AddressSpace`] model, so the
//! process may be long gone; blazesym then reads symbols, DWARF lines and inlined frames from
//! the files.

pub mod calls;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use blazesym::symbolize::{Input, Symbolized, Symbolizer as Blaze, source::Elf, source::Source};
use serde::{Deserialize, Serialize};

use crate::attribution::AddressSpace;

/// A symbolized stack, innermost frame first: shared by every summary and view that shows it.
pub type Stack = Arc<[Frame]>;

/// One frame of a symbolized stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The address in the process, as hex.
    #[serde(serialize_with = "hex", deserialize_with = "unhex")]
    pub addr: u64,
    pub function: Option<Arc<str>>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    /// This frame was inlined into the next one (same address).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inlined: bool,
    /// The file mapped where `addr` lies, and `addr`'s offset in that file: what re-symbolizes
    /// it elsewhere (absent for anonymous memory, and in recordings made before they were
    /// kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The GNU build id of `module` (hex), where it has one: what finds its debug info and
    /// symbols elsewhere (debuginfod, a symbol server) when the path does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<Arc<str>>,
    /// Allocator plumbing (see [`crate::summary::plumbing`]): reports label a site by its first
    /// frame that is not. Set when a summary is made, not stored in recordings' tables.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plumbing: bool,
}

fn hex<S: serde::Serializer>(addr: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{addr:#x}"))
}

fn unhex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(serde::de::Error::custom)
}

impl Frame {
    pub fn unknown(addr: u64) -> Self {
        Frame {
            addr,
            function: None,
            file: None,
            line: None,
            inlined: false,
            module: None,
            offset: None,
            build_id: None,
            plumbing: false,
        }
    }
}

/// Symbolizes return addresses. Each address gives one or more frames (inlined calls first).
pub trait Symbolizer {
    fn symbolize(&mut self, addrs: &[u64]) -> Vec<Vec<Frame>>;
}

/// The frames of each stack of return addresses, every distinct address symbolized once (an
/// address that does not resolve is an unknown frame).
pub fn symbolize_stacks(symbolizer: &mut dyn Symbolizer, stacks: &[&[u64]]) -> Vec<Vec<Frame>> {
    let mut unique = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for stack in stacks {
        unique.extend(stack.iter().copied().filter(|a| seen.insert(*a)));
    }
    let frames: HashMap<u64, Vec<Frame>> = unique
        .iter()
        .copied()
        .zip(symbolizer.symbolize(&unique))
        .collect();
    stacks
        .iter()
        .map(|stack| {
            stack
                .iter()
                .flat_map(|a| {
                    frames
                        .get(a)
                        .cloned()
                        .unwrap_or_else(|| vec![Frame::unknown(*a)])
                })
                .collect()
        })
        .collect()
}

/// blazesym over the files of an [`AddressSpace`].
pub struct BlazeSymbolizer<'a> {
    space: &'a AddressSpace,
    blaze: Blaze,
    /// Where to read each file: a descriptor opened while the process ran (see
    /// [`crate::process::target::TargetFiles`]). Files without one are not read: opening the process's
    /// paths by name reads the wrong file, or blocks on a FIFO planted there.
    substitutes: &'a HashMap<PathBuf, PathBuf>,
}

impl<'a> BlazeSymbolizer<'a> {
    pub fn new(space: &'a AddressSpace, substitutes: &'a HashMap<PathBuf, PathBuf>) -> Self {
        let blaze = Blaze::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        BlazeSymbolizer {
            space,
            blaze,
            substitutes,
        }
    }
}

impl Symbolizer for BlazeSymbolizer<'_> {
    fn symbolize(&mut self, addrs: &[u64]) -> Vec<Vec<Frame>> {
        // One shared name and build id per file, however many frames lie in it.
        type Names = (Arc<str>, Option<Arc<str>>);
        let mut files: HashMap<Arc<Path>, Names> = HashMap::new();
        let mut out: Vec<Vec<Frame>> = addrs
            .iter()
            .map(|&addr| {
                let place = self.space.file_offset(addr);
                let names = place.map(|(path, _)| {
                    files
                        .entry(path.clone())
                        .or_insert_with(|| {
                            let id = self.substitutes.get(&**path).and_then(|f| build_id(f));
                            (path.display().to_string().into(), id.map(Arc::from))
                        })
                        .clone()
                });
                let (module, build_id) = names.unzip();
                vec![Frame {
                    module,
                    offset: place.map(|(_, offset)| offset),
                    build_id: build_id.flatten(),
                    plumbing: false,
                    ..Frame::unknown(addr)
                }]
            })
            .collect();
        // Group by file; look up return address - 1, inside the call instruction, so the line
        // is the call's and not the next statement's.
        let mut by_file: HashMap<Arc<Path>, Vec<(usize, u64)>> = HashMap::new();
        for (i, &addr) in addrs.iter().enumerate() {
            if let Some((path, offset)) = self.space.file_offset(addr) {
                by_file
                    .entry(path.clone())
                    .or_default()
                    .push((i, offset.saturating_sub(1)));
            }
        }
        for (path, items) in by_file {
            let offsets: Vec<u64> = items.iter().map(|&(_, o)| o).collect();
            let Some(file) = self.substitutes.get(&*path).cloned() else {
                log::debug!("{} could not be opened: not symbolized", path.display());
                continue;
            };
            let src = Source::Elf(Elf::new(file));
            let Ok(results) = self.blaze.symbolize(&src, Input::FileOffset(&offsets)) else {
                log::debug!("could not symbolize addresses in {}", path.display());
                continue;
            };
            for ((i, _), result) in items.into_iter().zip(results) {
                let Symbolized::Sym(sym) = result else {
                    continue;
                };
                // Where the address lies, kept on every frame made of it.
                let unresolved = out[i][0].clone();
                let location = |info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
                    info.map(|c| (Arc::<str>::from(c.to_path().display().to_string()), c.line))
                };
                let (file, line) = location(sym.code_info.as_deref()).unzip();
                // Inlined calls come outermost first; the stack wants innermost first.
                let mut frames: Vec<Frame> = sym
                    .inlined
                    .iter()
                    .rev()
                    .map(|f| {
                        let (file, line) = location(f.code_info.as_ref()).unzip();
                        Frame {
                            function: Some(Arc::from(&*f.name)),
                            file,
                            line: line.flatten(),
                            inlined: true,
                            ..unresolved.clone()
                        }
                    })
                    .collect();
                // blazesym already gives each frame the location inside its own function:
                // the outer symbol's is where the first inlined call was made.
                frames.push(Frame {
                    function: Some(Arc::from(&*sym.name)),
                    file,
                    line: line.flatten(),
                    ..unresolved
                });
                out[i] = frames;
            }
        }
        out
    }
}

/// The GNU build id of the ELF file at `path`, in hex; only the headers and the note are read.
pub fn build_id(path: &Path) -> Option<String> {
    use object::Object as _;
    use std::fmt::Write as _;
    let file = std::fs::File::open(path).ok()?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let id = elf.build_id().ok()??;
    Some(id.iter().fold(String::new(), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    }))
}

/// Symbolizes from a table made earlier: by the live run for its report and its recording, or
/// read back from a recording. Unknown addresses stay bare.
#[derive(Debug, Default)]
pub struct TableSymbolizer {
    pub table: HashMap<u64, Vec<Frame>>,
}

/// Symbolizes from a table it shares (a live run's, kept between summaries).
pub struct SharedTable<'a>(pub &'a HashMap<u64, Vec<Frame>>);

impl Symbolizer for SharedTable<'_> {
    fn symbolize(&mut self, addrs: &[u64]) -> Vec<Vec<Frame>> {
        from_table(self.0, addrs)
    }
}

fn from_table(table: &HashMap<u64, Vec<Frame>>, addrs: &[u64]) -> Vec<Vec<Frame>> {
    addrs
        .iter()
        .map(|a| {
            table
                .get(a)
                .cloned()
                .unwrap_or_else(|| vec![Frame::unknown(*a)])
        })
        .collect()
}

impl Symbolizer for TableSymbolizer {
    fn symbolize(&mut self, addrs: &[u64]) -> Vec<Vec<Frame>> {
        from_table(&self.table, addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_json() {
        let f = Frame {
            addr: 0x5555_0000_1234,
            function: Some("main".into()),
            file: None,
            line: Some(3),
            inlined: true,
            module: Some("/usr/lib/libz.so.1".into()),
            offset: Some(0x4a2f1),
            build_id: None,
            plumbing: false,
        };
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("\"0x555500001234\""), "{json}");
        assert!(
            json.contains("\"module\":\"/usr/lib/libz.so.1\",\"offset\":303857"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Frame>(&json).unwrap(), f);
        // Recordings made before modules were kept.
        let old: Frame = serde_json::from_str(r#"{"addr":"0x10","function":null}"#).unwrap();
        assert_eq!(old, Frame::unknown(0x10));
    }

    /// The build id is the one `readelf -n` prints for the file.
    #[test]
    fn build_ids_are_read_from_the_note() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new("readelf")
            .arg("-n")
            .arg(&exe)
            .output()
            .expect("readelf (binutils)");
        let text = String::from_utf8_lossy(&out.stdout);
        let expected = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Build ID: "))
            .expect("the test binary has a build id");
        assert_eq!(build_id(&exe).as_deref(), Some(expected));
        assert_eq!(build_id(Path::new("/dev/null/none")), None);
    }
}
