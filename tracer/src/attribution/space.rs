//! A model of the traced process's mappings, kept current from its own syscalls.
//!
//! It starts from `/proc/PID/maps` (taken when the process is stopped right after `exec`, or
//! when attaching) and follows `openat` (descriptor → path), `mmap`, `munmap` and `mremap`, so
//! addresses can be named after the process has exited.

use std::{
    cell::Cell,
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::aggregate::syscalls::page_up;

const PROT_EXEC: u64 = 0x4;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_NORESERVE: u64 = 0x4000;
const MAP_STACK: u64 = 0x20000;
/// glibc reserves a thread arena's heap as 2 x HEAP_MAX_SIZE (64 MiB on 64-bit) of PROT_NONE.
const THREAD_ARENA_RESERVATION: u64 = 64 << 20;

/// What a region of the address space is, for attributing faults and allocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionKind {
    /// The main-arena heap that `brk` grows.
    Heap,
    /// Anonymous memory from mmap.
    AnonMmap,
    /// A thread arena's heap: reserved PROT_NONE with MAP_NORESERVE, committed with mprotect.
    ThreadArena,
    /// A file mapping.
    File,
    /// The main stack or a thread stack (MAP_STACK).
    Stack,
    /// Anything else: vDSO, vvar, unknown addresses.
    Other,
}

impl RegionKind {
    pub fn name(self) -> &'static str {
        match self {
            RegionKind::Heap => "heap",
            RegionKind::AnonMmap => "anon_mmap",
            RegionKind::ThreadArena => "thread_arena",
            RegionKind::File => "file",
            RegionKind::Stack => "stack",
            RegionKind::Other => "other",
        }
    }
}

/// One mapping: `[start, end)`, from `offset` in `path` (anonymous when `path` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: Option<Arc<Path>>,
    pub exec: bool,
    pub kind: RegionKind,
    /// Accessible at all (not PROT_NONE): a reservation is address space, not memory.
    pub accessible: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AddressSpace {
    maps: BTreeMap<u64, Mapping>,
    fds: HashMap<i32, Arc<Path>>,
    /// Where the brk heap starts, once known.
    heap_start: Option<u64>,
    /// The file mappings of program images replaced by `execve`, and code unmapped since
    /// (a dlclose'd library), to symbolize their stacks.
    retired: BTreeMap<u64, Mapping>,
    /// Every range ever mapped executable, by start: where a return address can be, code
    /// unmapped since (a dlclose'd library) included.
    code: BTreeMap<u64, u64>,
    /// The mapping [`Self::region`] found last (start, end, kind): most allocations fall in
    /// the one a previous one did. Forgotten whenever `maps` changes.
    last_region: Cell<Option<(u64, u64, RegionKind)>>,
}

impl AddressSpace {
    /// Parses a `/proc/PID/maps` text. Pseudo-files (`[stack]`, `[vdso]`, ...) are anonymous.
    pub fn from_proc_maps(text: &str) -> Self {
        let mut space = AddressSpace::default();
        for line in text.lines() {
            let mut cols = line.split_whitespace();
            let (Some(range), Some(perms), Some(offset)) = (cols.next(), cols.next(), cols.next())
            else {
                continue;
            };
            let (_dev, _inode) = (cols.next(), cols.next());
            let path: String = cols.collect::<Vec<_>>().join(" ");
            let Some((start, end)) = range.split_once('-') else {
                continue;
            };
            let (Ok(start), Ok(end), Ok(offset)) = (
                u64::from_str_radix(start, 16),
                u64::from_str_radix(end, 16),
                u64::from_str_radix(offset, 16),
            ) else {
                continue;
            };
            // Not a mapping (a crafted recording's maps can say anything).
            if end <= start {
                continue;
            }
            let path = path.strip_suffix(" (deleted)").unwrap_or(&path).to_string();
            let kind = match path.as_str() {
                "[heap]" => {
                    space.heap_start = Some(start);
                    RegionKind::Heap
                }
                "" => RegionKind::AnonMmap,
                p if p.starts_with("[stack") => RegionKind::Stack,
                p if p.starts_with('/') => RegionKind::File,
                _ => RegionKind::Other,
            };
            space.insert(Mapping {
                start,
                end,
                offset,
                path: path.starts_with('/').then(|| Arc::from(Path::new(&path))),
                exec: perms.as_bytes().get(2) == Some(&b'x'),
                kind,
                accessible: perms.as_bytes().iter().take(3).any(|&b| b != b'-'),
            });
        }
        space
    }

    pub fn from_pid(pid: i32) -> std::io::Result<Self> {
        Ok(Self::from_proc_maps(&std::fs::read_to_string(format!(
            "/proc/{pid}/maps"
        ))?))
    }

    fn insert(&mut self, m: Mapping) {
        if m.end > m.start {
            if m.exec {
                let end = self.code.entry(m.start).or_insert(m.end);
                *end = (*end).max(m.end);
            }
            self.last_region.set(None);
            self.maps.insert(m.start, m);
        }
    }

    /// Whether `addr` lies in code the process has mapped at some point.
    pub fn was_code(&self, addr: u64) -> bool {
        self.code
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, &end)| addr < end)
    }

    /// `stack` up to its first address outside code: a frame-pointer walk through code built
    /// without frame pointers reads data for return addresses, and everything from there on is
    /// not a frame.
    pub fn frames_in_code<'a>(&self, stack: &'a [u64]) -> &'a [u64] {
        let end = stack
            .iter()
            .position(|&a| !self.was_code(a))
            .unwrap_or(stack.len());
        &stack[..end]
    }

    /// An `openat` that returned `fd` for `path` (relative paths are kept as given).
    pub fn on_open(&mut self, fd: i32, path: &[u8]) {
        let len = path.iter().position(|&b| b == 0).unwrap_or(path.len());
        let path = Path::new(std::str::from_utf8(&path[..len]).unwrap_or_default());
        if !path.as_os_str().is_empty() {
            self.fds.insert(fd, Arc::from(path));
        }
    }

    /// A successful `mmap` at `addr`. Returns the file it mapped executable, if it did.
    pub fn on_mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        fd: i32,
        offset: u64,
    ) -> Option<Arc<Path>> {
        let end = addr.saturating_add(page_up(len));
        self.remove_range(addr, end);
        let anonymous = flags & MAP_ANONYMOUS != 0;
        let path = if anonymous {
            None
        } else {
            self.fds.get(&fd).cloned()
        };
        let exec = prot & PROT_EXEC != 0;
        let kind = if !anonymous {
            RegionKind::File
        } else if flags & MAP_STACK != 0 {
            RegionKind::Stack
        } else if prot == 0 && flags & MAP_NORESERVE != 0 && len >= THREAD_ARENA_RESERVATION {
            RegionKind::ThreadArena
        } else {
            RegionKind::AnonMmap
        };
        self.insert(Mapping {
            start: addr,
            end,
            offset,
            path: path.clone(),
            exec,
            kind,
            accessible: prot != 0,
        });
        path.filter(|_| exec)
    }

    /// A `brk` call that left the break at `brk`. The first call (glibc's `brk(0)` query) tells
    /// where the heap starts when it is still empty.
    pub fn on_brk(&mut self, brk: u64) {
        let start = *self.heap_start.get_or_insert(brk);
        let end = page_up(brk);
        let old_end = self
            .lookup(start)
            .filter(|m| m.kind == RegionKind::Heap)
            .map_or(start, |m| m.end);
        self.remove_range(start, old_end.max(end));
        self.insert(Mapping {
            start,
            end,
            offset: 0,
            path: None,
            exec: false,
            kind: RegionKind::Heap,
            accessible: true,
        });
    }

    /// A successful `mprotect`: the range keeps its mappings, with new access.
    pub fn on_mprotect(&mut self, addr: u64, len: u64, prot: u64) {
        let end = addr.saturating_add(page_up(len));
        let pieces: Vec<Mapping> = self
            .maps
            .range(..end)
            .rev()
            .take_while(|(_, m)| m.end > addr)
            .map(|(_, m)| {
                let start = m.start.max(addr);
                Mapping {
                    start,
                    end: m.end.min(end),
                    offset: m.offset.wrapping_add(start - m.start),
                    accessible: prot != 0,
                    exec: prot & PROT_EXEC != 0,
                    ..m.clone()
                }
            })
            .collect();
        self.remove_range(addr, end);
        for piece in pieces {
            self.insert(piece);
        }
    }

    /// Bytes mapped for data: the brk heap, anonymous mmaps and thread arenas.
    pub fn data_bytes(&self) -> u64 {
        self.maps
            .values()
            .filter(|m| {
                m.accessible
                    && matches!(
                        m.kind,
                        RegionKind::Heap | RegionKind::AnonMmap | RegionKind::ThreadArena
                    )
            })
            .fold(0u64, |sum, m| sum.saturating_add(m.end - m.start))
    }

    /// Address space mapped as `kind`, reserved (PROT_NONE) or not.
    pub fn mapped_bytes_of(&self, kind: RegionKind) -> u64 {
        self.maps
            .values()
            .filter(|m| m.kind == kind)
            .fold(0u64, |sum, m| sum.saturating_add(m.end - m.start))
    }

    /// The kind of region `addr` lies in.
    pub fn region(&self, addr: u64) -> RegionKind {
        if let Some((start, end, kind)) = self.last_region.get()
            && (start..end).contains(&addr)
        {
            return kind;
        }
        match self.lookup(addr) {
            Some(m) => {
                self.last_region.set(Some((m.start, m.end, m.kind)));
                m.kind
            }
            None => RegionKind::Other,
        }
    }

    pub fn on_munmap(&mut self, addr: u64, len: u64) {
        self.remove_range(addr, addr.saturating_add(page_up(len)));
    }

    /// A successful `mremap` of `[old, old + old_len)` to `new` with `new_len`.
    pub fn on_mremap(&mut self, old: u64, old_len: u64, new_len: u64, new: u64) {
        let template = self.lookup(old).cloned();
        self.remove_range(old, old.saturating_add(page_up(old_len)));
        if let Some(t) = template {
            let end = new.saturating_add(page_up(new_len));
            self.remove_range(new, end);
            self.insert(Mapping {
                start: new,
                end,
                offset: t.offset.wrapping_add(old - t.start),
                ..t
            });
        }
    }

    /// Removes `[start, end)`, keeping the parts of mappings outside it.
    fn remove_range(&mut self, start: u64, end: u64) {
        let overlapping: Vec<u64> = self
            .maps
            .range(..end)
            .rev()
            .take_while(|(_, m)| m.end > start)
            .map(|(&k, _)| k)
            .collect();
        self.last_region.set(None);
        for key in overlapping {
            let m = self.maps.remove(&key).expect("key just listed");
            // Code unmapped (a dlclose'd library): still where its stacks were made.
            if m.exec && m.path.is_some() {
                let (from, to) = (m.start.max(start), m.end.min(end));
                self.retired.insert(
                    from,
                    Mapping {
                        start: from,
                        end: to,
                        offset: m.offset.wrapping_add(from - m.start),
                        ..m.clone()
                    },
                );
            }
            if m.start < start {
                self.insert(Mapping {
                    end: start,
                    ..m.clone()
                });
            }
            if m.end > end {
                self.insert(Mapping {
                    start: end,
                    offset: m.offset.wrapping_add(end - m.start),
                    ..m
                });
            }
        }
    }

    /// The mapping containing `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&Mapping> {
        self.maps
            .range(..=addr)
            .next_back()
            .map(|(_, m)| m)
            .filter(|m| addr < m.end)
    }

    /// The file and file offset of `addr`, if it lies in a file mapping.
    pub fn file_offset(&self, addr: u64) -> Option<(&Arc<Path>, u64)> {
        let current = self.lookup(addr).filter(|m| m.path.is_some());
        let m = current.or_else(|| {
            self.retired
                .range(..=addr)
                .next_back()
                .map(|(_, m)| m)
                .filter(|m| addr < m.end)
        })?;
        Some((m.path.as_ref()?, addr - m.start + m.offset))
    }

    /// The process ran a new program: its mappings are those of `maps` now. The old image's
    /// file mappings stay known for symbolizing what it did (where the new image does not
    /// lie), and its code ranges for [`Self::was_code`].
    pub fn on_exec(&mut self, maps: &str) {
        let new = AddressSpace::from_proc_maps(maps);
        self.last_region.set(None);
        let old = std::mem::replace(&mut self.maps, new.maps);
        for (start, m) in old {
            if m.path.is_some() {
                self.retired.insert(start, m);
            }
        }
        for (start, end) in new.code {
            let e = self.code.entry(start).or_insert(end);
            *e = (*e).max(end);
        }
        self.fds.clear();
        self.heap_start = new.heap_start;
    }

    /// The data regions (the brk heap, anonymous mmaps, thread arenas), accessible ones only:
    /// where allocations live. `[start, end)` in address order.
    pub fn data_ranges(&self) -> Vec<(u64, u64)> {
        self.ranges_of(&[
            RegionKind::Heap,
            RegionKind::AnonMmap,
            RegionKind::ThreadArena,
        ])
    }

    /// The accessible mappings of the given kinds, `[start, end)` in address order.
    pub fn ranges_of(&self, kinds: &[RegionKind]) -> Vec<(u64, u64)> {
        self.maps
            .values()
            .filter(|m| m.accessible && kinds.contains(&m.kind))
            .map(|m| (m.start, m.end))
            .collect()
    }

    /// Every executable mapping of a file, in address order.
    pub fn exec_mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.maps.values().filter(|m| m.exec && m.path.is_some())
    }

    /// Every file mapped executable, once each.
    pub fn exec_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .maps
            .values()
            .filter(|m| m.exec)
            .filter_map(|m| m.path.as_ref().map(|p| p.to_path_buf()))
            .collect();
        files.sort();
        files.dedup();
        files
    }

    pub fn len(&self) -> usize {
        self.maps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn stacks_end_at_the_first_address_outside_code() {
        let mut s = AddressSpace::from_proc_maps(
            "555555554000-555555556000 r-xp 00000000 08:01 1 /usr/bin/app\n\
             555555556000-555555558000 rw-p 00002000 08:01 1 /usr/bin/app\n\
             7f0000000000-7f0000100000 r-xp 00000000 08:01 2 /lib/libc.so.6\n",
        );
        let stack = [
            0x7f00_0000_1000,
            0x5555_5555_4100,
            0x5555_5555_6010,
            0x5555_5555_4200,
        ];
        // Data (the program's own .data) taken for a return address ends the stack there.
        assert_eq!(s.frames_in_code(&stack), &stack[..2]);
        assert_eq!(
            s.frames_in_code(&[0x0404_0404_0404_0404, 0x5555_5555_4100]),
            &[] as &[u64]
        );
        assert!(!s.was_code(0x5555_5555_6000) && s.was_code(0x5555_5555_5fff));
        // A library mapped executable later, and unmapped again, still held code.
        let lib = 0x7f10_0000_0000;
        s.on_mmap(lib, 0x2000, 5, 0x02, 3, 0);
        s.on_munmap(lib, 0x2000);
        assert!(s.lookup(lib).is_none());
        assert_eq!(s.frames_in_code(&[lib + 0x10, 0x5555_5555_4100]).len(), 2);
    }

    /// A library's code unmapped (dlclose) still says where its frames lie, so that stacks
    /// made while it was mapped are symbolized at the end; its data does not.
    #[test]
    fn unmapped_code_keeps_its_file() {
        let mut s = AddressSpace::default();
        s.on_open(3, b"/usr/lib/libplugin.so\0");
        let lib = 0x7f10_0000_0000;
        s.on_mmap(lib, 0x3000, 5, 0x02, 3, 0x1000);
        s.on_mmap(lib + 0x3000, 0x1000, 3, 0x02, 3, 0x4000);
        // Half of the code first, then the rest with the data.
        s.on_munmap(lib, 0x1000);
        s.on_munmap(lib + 0x1000, 0x3000);
        assert!(s.lookup(lib + 0x10).is_none());
        for (addr, offset) in [(lib + 0x10, 0x1010), (lib + 0x2ff0, 0x3ff0)] {
            let (path, off) = s.file_offset(addr).unwrap();
            assert_eq!((&**path, off), (Path::new("/usr/lib/libplugin.so"), offset));
        }
        assert_eq!(s.file_offset(lib + 0x3010), None, "data is not code");
        assert!(s.exec_files().is_empty());
    }

    use super::*;

    const MAPS: &str = "\
5581e3a00000-5581e3a01000 r--p 00000000 fd:01 1234 /usr/bin/prog
5581e3a01000-5581e3a03000 r-xp 00001000 fd:01 1234 /usr/bin/prog
5581e4000000-5581e4021000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000028000 r--p 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000028000-7f000019d000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f00001a0000-7f00001a1000 r-xp 00000000 fd:01 77 /tmp/my lib.so (deleted)
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";

    #[test]
    fn parses_proc_maps() {
        let s = AddressSpace::from_proc_maps(MAPS);
        assert_eq!(s.len(), 7);
        let (path, off) = s.file_offset(0x5581e3a01010).unwrap();
        assert_eq!(&**path, Path::new("/usr/bin/prog"));
        assert_eq!(off, 0x1010);
        let (path, off) = s.file_offset(0x7f0000028100).unwrap();
        assert!(path.ends_with("libc.so.6"));
        assert_eq!(off, 0x28100);
        assert_eq!(s.file_offset(0x5581e4000010), None, "heap is anonymous");
        assert!(s.lookup(0x5581e4000010).is_some());
        assert_eq!(s.lookup(0x1000), None);
        assert_eq!(
            s.exec_files(),
            [
                PathBuf::from("/tmp/my lib.so"),
                PathBuf::from("/usr/bin/prog"),
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            ]
        );
    }

    #[test]
    fn follows_open_mmap_munmap_mremap() {
        let mut s = AddressSpace::default();
        s.on_open(3, b"/lib/libfoo.so\0garbage");
        // The loader maps the whole file read-only, then the code segment over it.
        assert_eq!(s.on_mmap(0x10000, 0x5000, 1, 0x2, 3, 0), None);
        let exec = s.on_mmap(0x11000, 0x2000, 5, 0x12, 3, 0x1000);
        assert_eq!(exec.as_deref(), Some(Path::new("/lib/libfoo.so")));
        assert_eq!(s.len(), 3);
        assert_eq!(s.file_offset(0x11800).unwrap().1, 0x1800);
        assert_eq!(s.file_offset(0x14000).unwrap().1, 0x4000);
        // Unmapping the middle of a mapping splits it.
        s.on_munmap(0x13000, 0x1000);
        assert_eq!(s.lookup(0x13800), None);
        assert_eq!(s.file_offset(0x14800).unwrap().1, 0x4800);
        assert_eq!(s.file_offset(0x12fff).unwrap().1, 0x2fff);
        assert_eq!(s.region(0x11800), RegionKind::File);
        // Anonymous mappings have no file; mremap moves a mapping and keeps its offsets.
        s.on_mmap(0x20000, 0x3000, 3, 0x22, -1, 0);
        assert!(s.lookup(0x20000).unwrap().path.is_none());
        s.on_mremap(0x11000, 0x2000, 0x4000, 0x40000);
        assert_eq!(s.lookup(0x11000), None);
        assert_eq!(s.file_offset(0x40010).unwrap().1, 0x1010);
        assert_eq!(s.lookup(0x43fff).unwrap().end, 0x44000);
        assert_eq!(s.region(0x20000), RegionKind::AnonMmap);
        assert_eq!(s.region(0x99999), RegionKind::Other);
    }

    #[test]
    fn an_exec_replaces_the_maps_and_keeps_the_old_files_for_symbols() {
        let mut s = AddressSpace::from_proc_maps(
            "400000-401000 r-xp 00000000 fd:00 1 /bin/sh\n\
             500000-501000 rw-p 00000000 00:00 0 [heap]\n",
        );
        s.on_exec(
            "600000-601000 r-xp 00001000 fd:00 2 /usr/bin/app\n\
             700000-701000 rw-p 00000000 00:00 0 [heap]\n",
        );
        assert_eq!(s.region(0x600100), RegionKind::File);
        assert_eq!(s.region(0x500100), RegionKind::Other);
        assert_eq!(s.region(0x700100), RegionKind::Heap);
        let (file, offset) = s.file_offset(0x600100).unwrap();
        assert_eq!((file.to_str(), offset), (Some("/usr/bin/app"), 0x1100));
        // The old program's code still symbolizes, and still counts as code.
        let (file, offset) = s.file_offset(0x400010).unwrap();
        assert_eq!((file.to_str(), offset), (Some("/bin/sh"), 0x10));
        assert!(s.was_code(0x400010) && s.was_code(0x600010));
        assert_eq!(s.exec_files(), [PathBuf::from("/usr/bin/app")]);
    }

    #[test]
    fn regions_heap_stacks_and_thread_arenas() {
        let s = AddressSpace::from_proc_maps(MAPS);
        assert_eq!(s.region(0x5581e4000010), RegionKind::Heap);
        assert_eq!(s.region(0x7ffd00000100), RegionKind::Stack);
        assert_eq!(s.region(0x5581e3a01010), RegionKind::File);

        let mut s = AddressSpace::default();
        // brk(0), then growth and shrinking.
        s.on_brk(0x55_0000_0000);
        assert_eq!(s.region(0x55_0000_0000), RegionKind::Other, "an empty heap");
        s.on_brk(0x55_0002_1000);
        assert_eq!(s.region(0x55_0002_0fff), RegionKind::Heap);
        s.on_brk(0x55_0001_0010);
        assert_eq!(s.lookup(0x55_0000_0000).unwrap().end, 0x55_0001_1000);
        assert_eq!(s.region(0x55_0001_1000), RegionKind::Other);
        // A thread arena: a 128 MiB PROT_NONE MAP_NORESERVE reservation, trimmed by munmap,
        // committed piecewise by mprotect.
        let heap = s.data_bytes();
        s.on_mmap(0x7f00_0000_0000, 128 << 20, 0, 0x4022, -1, 0);
        s.on_munmap(0x7f00_0000_0000, 32 << 20);
        assert_eq!(s.region(0x7f00_0200_0000), RegionKind::ThreadArena);
        assert_eq!(s.data_bytes(), heap, "a reservation is not memory");
        s.on_mprotect(0x7f00_0200_0000, 135_168, 3);
        assert_eq!(s.data_bytes(), heap + 135_168);
        assert_eq!(s.region(0x7f00_0200_0000), RegionKind::ThreadArena);
        assert_eq!(s.region(0x7f00_0300_0000), RegionKind::ThreadArena);
        // A thread stack, and an ordinary anonymous mapping.
        s.on_mmap(0x7e00_0000_0000, 8 << 20, 3, 0x20022, -1, 0);
        assert_eq!(s.region(0x7e00_0000_1000), RegionKind::Stack);
        s.on_mmap(0x7d00_0000_0000, 200_704, 3, 0x22, -1, 0);
        assert_eq!(s.region(0x7d00_0000_0010), RegionKind::AnonMmap);
    }
}
