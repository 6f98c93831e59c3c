//! The unwind tables in the kernel: each file's rows compiled once (by inode, so every process
//! mapping the same libc shares them, and by build id, so every copy of one binary does) into
//! the row array, and each traced process's
//! executable mappings, with their biases, in its mapping table.

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData},
};
use tracer_common::{
    MAX_UNWIND_CHUNKS, MAX_UNWIND_MAPPINGS, UNWIND_CHUNK_ROWS, UNWIND_MAPS_MAP, UNWIND_ROWS_MAP,
    UnwindChunk, UnwindMapping, UnwindMaps, UnwindRow,
};

use tokio::sync::Notify;

use super::{
    UnwindTable,
    compiler::{Compiled, Compiler, FileKey, timed_compile},
};
use crate::attribution::Mapping;

/// A file's table in the row array: its first row and row count, and its segments.
#[derive(Debug, Clone)]
struct Loaded {
    first: u32,
    table: UnwindTable,
}

/// What the unwinder knows, and what it was given.
#[derive(Default)]
pub struct UnwindTables {
    /// By (device, inode): the loaded table, or `None` for a file without one (or too big for
    /// what is left of the row array).
    files: HashMap<(u64, u64), Option<Arc<Loaded>>>,
    /// The loaded tables by the GNU build id of their file: another copy of the same binary
    /// (a container's image of the same library, a copied plugin) shares its rows.
    by_build_id: HashMap<String, Arc<Loaded>>,
    next_row: u32,
    /// The generation of the last mappings written (see `UnwindMaps::generation`).
    generation: u32,
    /// Userspace's copy of the chunks written so far (each written whole).
    chunks: Vec<Box<UnwindChunk>>,
    /// Files whose table did not fit: said once.
    pub full: bool,
    /// Rows loaded, for the summary.
    pub rows: u64,
    /// Compiles the tables of files met while tracing (started with the first of them), so
    /// that the drain goes on meanwhile.
    compiler: Option<Compiler>,
    /// Notified when the compiler has finished a table: time to [`Self::collect`].
    ready: Arc<Notify>,
}

/// A file's table as far as it is known.
enum Lookup<'a> {
    /// Loaded, or known to be absent.
    Ready(Option<&'a Loaded>),
    /// Being compiled.
    Compiling,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("eBPF map {0} is missing")]
    MissingMap(&'static str),
    #[error("writing eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

impl UnwindTables {
    /// Gives process `pid` the tables of its executable mappings as loaded now; the tables
    /// of files not seen before are compiled in the background. Returns whether some are
    /// (the process is to be synced again once they are in). `files` says where each of its
    /// paths is read.
    pub fn sync<'a>(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        mappings: impl IntoIterator<Item = &'a Mapping>,
        files: &HashMap<PathBuf, PathBuf>,
    ) -> Result<bool, LoadError> {
        let mut entries: Vec<UnwindMapping> = Vec::new();
        let mut pending = false;
        for m in mappings {
            let Some(path) = m.path.as_deref() else {
                continue;
            };
            let Some(via) = files.get(path) else {
                continue;
            };
            let loaded = match self.lookup(ebpf, via)? {
                Lookup::Ready(loaded) => loaded,
                Lookup::Compiling => {
                    pending = true;
                    None
                }
            };
            let Some(loaded) = loaded else {
                continue;
            };
            let Some(bias) = loaded.table.bias(m.start, m.offset) else {
                continue;
            };
            entries.push(UnwindMapping {
                start: m.start,
                end: m.end,
                bias,
                first_row: loaded.first,
                rows: loaded.table.rows.len() as u32,
            });
        }
        entries.sort_by_key(|e| e.start);
        entries.truncate(MAX_UNWIND_MAPPINGS);
        log::debug!(
            "pid {pid}: {} executable mappings with unwind tables ({} rows loaded in all)",
            entries.len(),
            self.rows
        );
        // Never 0 (an empty cache slot's), never repeated in a run.
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        let mut maps = UnwindMaps {
            count: entries.len() as u32,
            search_from: 0,
            generation: self.generation,
            pad: 0,
            mappings: [UnwindMapping::default(); MAX_UNWIND_MAPPINGS],
        };
        maps.mappings[..entries.len()].copy_from_slice(&entries);
        let map = ebpf
            .map_mut(UNWIND_MAPS_MAP)
            .ok_or(LoadError::MissingMap(UNWIND_MAPS_MAP))?;
        let mut map: BpfHashMap<&mut MapData, u32, UnwindMaps> = BpfHashMap::try_from(map)
            .map_err(|source| LoadError::Map {
                name: UNWIND_MAPS_MAP,
                source,
            })?;
        map.insert(pid, maps, 0).map_err(|source| LoadError::Map {
            name: UNWIND_MAPS_MAP,
            source,
        })?;
        Ok(pending)
    }

    /// Compiles and loads, now, the table of a file the process will map (the command's
    /// libraries, before it starts), so that giving it to the process when it maps the file
    /// is quick.
    pub fn preload(&mut self, ebpf: &mut Ebpf, via: &Path) -> Result<(), LoadError> {
        let Some(key) = file_key(via) else {
            return Ok(());
        };
        let Some(build_id) = self.unknown(key, via) else {
            return Ok(());
        };
        let table = timed_compile(via);
        self.add(ebpf, key, build_id, table)
    }

    /// Has the table of a file the process will map compiled in the background (the
    /// libraries a new program's loader is about to load).
    pub fn request(&mut self, ebpf: &mut Ebpf, via: &Path) -> Result<(), LoadError> {
        self.lookup(ebpf, via).map(|_| ())
    }

    /// Loads the tables compiled since the last call; returns how many came.
    pub fn collect(&mut self, ebpf: &mut Ebpf) -> Result<usize, LoadError> {
        let done = match self.compiler.as_mut() {
            Some(c) => c.collect(),
            None => return Ok(0),
        };
        let n = done.len();
        for Compiled {
            key,
            build_id,
            table,
        } in done
        {
            self.add(ebpf, key, build_id, table)?;
        }
        Ok(n)
    }

    /// Notified when a table compiled in the background is ready to [`Self::collect`].
    pub fn ready(&self) -> Arc<Notify> {
        self.ready.clone()
    }

    /// The build id of the file `key` read at `via`, when its table is still to compile:
    /// neither loaded, nor known to be absent, nor being compiled. A copy of a binary already
    /// loaded (the same build id) shares its table from now on.
    fn unknown(&mut self, key: FileKey, via: &Path) -> Option<Option<String>> {
        if self.files.contains_key(&key)
            || self.compiler.as_ref().is_some_and(|c| c.is_compiling(&key))
        {
            return None;
        }
        let build_id = crate::symbolize::build_id(via);
        if let Some(same) = self.known(build_id.as_deref()) {
            self.remember(key, build_id, Some(same));
            return None;
        }
        Some(build_id)
    }

    /// The table of the file read at `via`: loaded, absent, or (asked for now if it was not)
    /// being compiled.
    fn lookup(&mut self, ebpf: &mut Ebpf, via: &Path) -> Result<Lookup<'_>, LoadError> {
        let Some(key) = file_key(via) else {
            return Ok(Lookup::Ready(None));
        };
        if let Some(build_id) = self.unknown(key, via) {
            if self.compiler.is_none() {
                match Compiler::start(self.ready.clone()) {
                    Ok(c) => self.compiler = Some(c),
                    Err(e) => log::debug!("no thread to compile unwind tables on ({e})"),
                }
            }
            match self.compiler.as_mut() {
                Some(c) => {
                    c.request(key, build_id, via.to_path_buf());
                }
                None => self.add(ebpf, key, build_id, timed_compile(via))?,
            }
        }
        Ok(match self.files.get(&key) {
            Some(loaded) => Lookup::Ready(loaded.as_deref()),
            None => Lookup::Compiling,
        })
    }

    /// Loads a compiled table (unless a copy of the same binary was loaded meanwhile) and
    /// keeps what became of it.
    fn add(
        &mut self,
        ebpf: &mut Ebpf,
        key: FileKey,
        build_id: Option<String>,
        table: Result<UnwindTable, crate::unwind::UnwindError>,
    ) -> Result<(), LoadError> {
        if self.files.contains_key(&key) {
            return Ok(());
        }
        let loaded = match (self.known(build_id.as_deref()), table) {
            (Some(same), _) => Some(same),
            (None, Ok(table)) if !table.rows.is_empty() => self.upload(ebpf, table)?.map(Arc::new),
            (None, Ok(_)) => None,
            (None, Err(e)) => {
                log::debug!("{e}: its frames are walked by frame pointer");
                None
            }
        };
        self.remember(key, build_id, loaded);
        Ok(())
    }

    /// Keeps what was loaded for the file `key` (with build id `id`).
    fn remember(&mut self, key: (u64, u64), id: Option<String>, loaded: Option<Arc<Loaded>>) {
        if let (Some(id), Some(loaded)) = (id, &loaded) {
            self.by_build_id.entry(id).or_insert_with(|| loaded.clone());
        }
        self.files.insert(key, loaded);
    }

    /// The table already loaded for a file with build id `id`.
    fn known(&self, id: Option<&str>) -> Option<Arc<Loaded>> {
        self.by_build_id.get(id?).cloned()
    }

    /// Writes `table`'s rows after the last table's, whole chunks at a time.
    fn upload(&mut self, ebpf: &mut Ebpf, table: UnwindTable) -> Result<Option<Loaded>, LoadError> {
        let capacity = MAX_UNWIND_CHUNKS as usize * UNWIND_CHUNK_ROWS;
        let first = self.next_row as usize;
        if first + table.rows.len() > capacity {
            if !self.full {
                log::warn!(
                    "the kernel's unwind table space ({capacity} rows) is full: code in files \
                     loaded from now on is walked by frame pointer (stacks through code built \
                     without them are cut short there)"
                );
            }
            self.full = true;
            return Ok(None);
        }
        let map = ebpf
            .map_mut(UNWIND_ROWS_MAP)
            .ok_or(LoadError::MissingMap(UNWIND_ROWS_MAP))?;
        let mut map: Array<&mut MapData, UnwindChunk> =
            Array::try_from(map).map_err(|source| LoadError::Map {
                name: UNWIND_ROWS_MAP,
                source,
            })?;
        let mut touched = Vec::new();
        for (i, row) in table.rows.iter().enumerate() {
            let at = first + i;
            let (chunk, slot) = (at / UNWIND_CHUNK_ROWS, at % UNWIND_CHUNK_ROWS);
            while self.chunks.len() <= chunk {
                self.chunks.push(Box::new(UnwindChunk {
                    rows: [UnwindRow::default(); UNWIND_CHUNK_ROWS],
                }));
            }
            self.chunks[chunk].rows[slot] = *row;
            if touched.last() != Some(&chunk) {
                touched.push(chunk);
            }
        }
        for chunk in touched {
            map.set(chunk as u32, self.chunks[chunk].as_ref(), 0)
                .map_err(|source| LoadError::Map {
                    name: UNWIND_ROWS_MAP,
                    source,
                })?;
        }
        self.next_row = (first + table.rows.len()) as u32;
        self.rows += table.rows.len() as u64;
        Ok(Some(Loaded {
            first: first as u32,
            table,
        }))
    }
}

/// The (device, inode) of the file read at `via`.
fn file_key(via: &Path) -> Option<FileKey> {
    let meta = std::fs::metadata(via).ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second file with the same build id gets the first one's rows; one without a build
    /// id, or with another, does not.
    #[test]
    fn copies_of_a_binary_share_their_table() {
        let mut t = UnwindTables::default();
        let loaded = Arc::new(Loaded {
            first: 4096,
            table: UnwindTable::default(),
        });
        t.remember((1, 10), Some("ab12".into()), Some(loaded.clone()));
        t.remember((1, 11), None, None);
        assert!(Arc::ptr_eq(&t.known(Some("ab12")).unwrap(), &loaded));
        assert!(t.known(Some("cd34")).is_none() && t.known(None).is_none());
        // A file without a table is not found by its build id either.
        t.remember((1, 12), Some("ef56".into()), None);
        assert!(t.known(Some("ef56")).is_none());
        assert_eq!(t.files.len(), 3);
    }
}
