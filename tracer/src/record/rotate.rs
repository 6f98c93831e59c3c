//! `--record-max`: a recording that keeps its newest stretch of a long run within a size.
//!
//! Records go to two unnamed temporary files in the recording's directory, the older and the
//! newer segment; each segment starts with a start record of the process as it was when the
//! segment began (its maps then), so that either can open a recording. When the newer one
//! reaches half the limit, the older is dropped (its events counted as cut) and a new one
//! begins. At the end the recording is assembled from the older segment and the newer one's
//! records after its start record: whole batches, the newest ones, about the limit in all.

use std::{
    ffi::CString,
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    os::{fd::FromRawFd, unix::ffi::OsStrExt},
    path::Path,
};

struct Segment {
    file: File,
    bytes: u64,
    events: u64,
    /// Bytes of its start record, skipped when it follows another segment.
    start_bytes: u64,
}

pub(super) struct Segments {
    max: u64,
    dir: std::path::PathBuf,
    older: Option<Segment>,
    newer: Segment,
    /// Events and bytes of dropped segments.
    pub cut_events: u64,
    pub cut_bytes: u64,
}

/// An unnamed file for reading and writing in `dir` (or the temporary directory, where the
/// file system has no unnamed files), gone when closed.
fn unnamed(dir: &Path) -> io::Result<File> {
    let open = |dir: &Path| -> io::Result<File> {
        let c = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: a valid path; the descriptor returned is ours.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    };
    open(dir).or_else(|_| open(&std::env::temp_dir()))
}

impl Segments {
    /// Starts the first segment with `start`, the bytes of a start record.
    pub fn new(max: u64, dir: &Path, start: &[u8]) -> io::Result<Self> {
        let mut newer = Segment {
            file: unnamed(dir)?,
            bytes: 0,
            events: 0,
            start_bytes: start.len() as u64,
        };
        newer.file.write_all(start)?;
        newer.bytes = start.len() as u64;
        Ok(Segments {
            max,
            dir: dir.to_path_buf(),
            older: None,
            newer,
            cut_events: 0,
            cut_bytes: 0,
        })
    }

    /// Appends a record's bytes holding `events` events.
    pub fn write(&mut self, bytes: &[u8], events: u64) -> io::Result<()> {
        self.newer.file.write_all(bytes)?;
        self.newer.bytes += bytes.len() as u64;
        self.newer.events += events;
        Ok(())
    }

    /// Whether the newer segment is full: time to [`Self::rotate`].
    pub fn full(&self) -> bool {
        self.newer.bytes >= self.max / 2
    }

    /// Drops the older segment and begins a new one with `start` (the start record of the
    /// process now).
    pub fn rotate(&mut self, start: &[u8]) -> io::Result<()> {
        let mut next = Segment {
            file: unnamed(&self.dir)?,
            bytes: 0,
            events: 0,
            start_bytes: start.len() as u64,
        };
        next.file.write_all(start)?;
        next.bytes = start.len() as u64;
        let older = std::mem::replace(&mut self.newer, next);
        if let Some(dropped) = self.older.replace(older) {
            self.cut_events += dropped.events;
            self.cut_bytes += dropped.bytes;
        }
        Ok(())
    }

    /// Copies the kept records into `out`: the older segment whole, then the newer one after
    /// its start record.
    pub fn copy_into(&mut self, out: &mut dyn Write) -> io::Result<()> {
        let mut copy = |seg: &mut Segment, skip: u64| -> io::Result<()> {
            seg.file.flush()?;
            seg.file.seek(SeekFrom::Start(skip))?;
            io::copy(&mut (&mut seg.file).take(seg.bytes - skip), out)?;
            Ok(())
        };
        let skip = match self.older.as_mut() {
            Some(older) => {
                copy(older, 0)?;
                self.newer.start_bytes
            }
            None => 0,
        };
        copy(&mut self.newer, skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_segments_and_counts_the_cut() {
        let dir = std::env::temp_dir();
        let mut s = Segments::new(100, &dir, b"S0").unwrap();
        s.write(b"aaaaaaaaaa", 10).unwrap();
        assert!(!s.full());
        s.write(&[b'b'; 40], 40).unwrap();
        assert!(s.full());
        s.rotate(b"S1").unwrap();
        s.write(&[b'c'; 50], 50).unwrap();
        s.rotate(b"S2").unwrap();
        s.write(b"dd", 2).unwrap();
        assert_eq!((s.cut_events, s.cut_bytes), (50, 52));
        let mut out = Vec::new();
        s.copy_into(&mut out).unwrap();
        // The older kept segment with its start, then the newer without its own.
        let mut want = b"S1".to_vec();
        want.extend_from_slice(&[b'c'; 50]);
        want.extend_from_slice(b"dd");
        assert_eq!(out, want);
    }
}
