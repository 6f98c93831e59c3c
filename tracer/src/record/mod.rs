//! Recordings: a compact, versioned, streaming file of a session's events with what is needed
//! to report on it later, elsewhere, after the process is gone.
//!
//! Layout: the magic `TRACEREC`, a little-endian `u32` format version, a reserved `u32`, then
//! records of `kind: u8, len: u32, crc32: u32, payload[len]` (little-endian). A `START` record
//! (JSON [`Start`]) comes first, `EXEC` records (JSON [`ExecImage`]) mark a new program image
//! in order with the events, `JOIN` records (JSON [`Joined`]) a running process that began to
//! be traced (`--cgroup`), `EVENTS` records carry ring-buffer records exactly as the
//! kernel wrote them (a batch laid out by columns, see [`columns`], and compressed with zstd:
//! about 9 bytes an event; deflated up to version 5), and a `FINISH` record (JSON [`Finish`])
//! with the symbolized stacks ends it. The checksum covers a record's stored bytes, so any damage is found before anything is decoded.

mod columns;
mod rotate;

use std::{
    fs::File,
    io::{self, BufReader, Read, Write},
    path::{Path, PathBuf},
};

use flate2::{Compression, Decompress, FlushDecompress, Status, write::DeflateEncoder};
use thiserror::Error;

use crate::{
    output::Sink,
    process::session::{ExecImage, Finish, Joined, Start},
};

pub const MAGIC: &[u8; 8] = b"TRACEREC";
/// The format version this build writes and reads. Bump on any change to the layout, the
/// wire types or the JSON records.
pub const VERSION: u32 = 7;
/// The oldest version this build reads: version 6 is version 7 without `JOIN` records
/// (`--cgroup`) and `OOM` events, version 5 is version 6 with its events batches
/// deflated instead of compressed with zstd (zstd's decoder is about four times as fast on
/// them, and the file is smaller), version 4 is version 5 without `SLAB_COUNT` events
/// (slab objects counted in the kernel), version 3 is version 4 without `FORK` and `EXIT`
/// events and per-process finishes (`--follow`), version 2 is version 3 without `EXEC`
/// records.
pub const OLDEST_VERSION: u32 = 2;
pub const HEADER_BYTES: u64 = 16;
const RECORD_HEADER_BYTES: u64 = 9;
/// A record larger than this is corruption, not data.
const MAX_RECORD_BYTES: u32 = 256 << 20;

/// Record kinds.
pub const START: u8 = 1;
pub const EVENTS: u8 = 2;
pub const FINISH: u8 = 3;
/// The process ran a new program: JSON [`ExecImage`], after the events before it.
pub const EXEC: u8 = 4;
/// A running process began to be traced (it joined a followed cgroup): JSON [`Joined`].
pub const JOIN: u8 = 5;
/// The first version whose events batches are zstd frames; older ones are deflated.
const ZSTD_VERSION: u32 = 6;
/// zstd's level for events batches: its fastest, as a live recording compresses them on the
/// way (level 3 makes files 4% smaller here, at a third less speed).
const ZSTD_LEVEL: i32 = 1;
/// Events are compressed in batches of about this many bytes.
const BATCH_BYTES: usize = 256 << 10;
// A batch holds at most one event per two bytes (each has its length) past BATCH_BYTES.
const _: () = assert!(BATCH_BYTES / 2 + (64 << 10) < columns::MAX_BATCH_EVENTS);
/// A batch never inflates beyond this (a corrupt one could claim more).
const MAX_BATCH_BYTES: u64 = 64 << 20;

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("could not read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a tracer recording (no TRACEREC header)")]
    NotARecording(PathBuf),
    #[error(
        "{path} is a version {found} recording; this tracer reads version {VERSION}: \
         report on it with a newer tracer"
    )]
    NewerVersion { path: PathBuf, found: u32 },
    #[error("{path} is a version {found} recording, which this tracer does not read")]
    UnknownVersion { path: PathBuf, found: u32 },
    #[error("recording truncated at byte offset {offset}: {what}")]
    Truncated { offset: u64, what: &'static str },
    #[error("recording corrupt at byte offset {offset}: {what}")]
    Corrupt { offset: u64, what: String },
}

/// Writes a recording as the session goes. Dropped before [`Recorder::finish`], it leaves
/// nothing behind at a file destination (see [`Sink`]).
pub struct Recorder {
    out: Sink,
    path: PathBuf,
    batch: Vec<u8>,
    events: u64,
    /// Events in `batch`.
    batch_events: u64,
    /// `--record-max`: the segments records go to, and the start of the process as it is now
    /// (for a new segment).
    rotating: Option<(rotate::Segments, Box<dyn FnMut() -> Start>)>,
    /// The compressor, kept from batch to batch (its tables are made once).
    zstd: zstd::bulk::Compressor<'static>,
}

impl Recorder {
    pub fn create(out: Sink, start: &Start) -> Result<Self, RecordError> {
        let mut r = Recorder::open(out, None)?;
        r.json(START, start)?;
        Ok(r)
    }

    /// A recording of at most about `max` bytes, in the directory `dir` of its destination:
    /// the newest whole batches are kept (see [`rotate`]); `now` gives the process's start
    /// record as of now, for each new segment.
    pub fn rotating(
        out: Sink,
        start: &Start,
        max: u64,
        dir: &Path,
        now: Box<dyn FnMut() -> Start>,
    ) -> Result<Self, RecordError> {
        let segments =
            rotate::Segments::new(max, dir, &json_record(START, start)).map_err(|source| {
                RecordError::Io {
                    path: out.shown().to_path_buf(),
                    source,
                }
            })?;
        Recorder::open(out, Some((segments, now)))
    }

    /// A recorder writing to `out`, its file header written.
    fn open(
        out: Sink,
        rotating: Option<(rotate::Segments, Box<dyn FnMut() -> Start>)>,
    ) -> Result<Self, RecordError> {
        let path = out.shown().to_path_buf();
        let mut r = Recorder {
            out,
            path,
            batch: Vec::with_capacity(BATCH_BYTES + 4096),
            events: 0,
            batch_events: 0,
            rotating,
            zstd: compressor(),
        };
        r.out
            .write_all(&file_header())
            .map_err(|source| RecordError::Io {
                path: r.path.clone(),
                source,
            })?;
        Ok(r)
    }

    fn record(&mut self, kind: u8, payload: &[u8]) -> Result<(), RecordError> {
        let io_err = |source| RecordError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some((segments, _)) = self.rotating.as_mut() {
            let mut bytes = record_header(kind, payload).to_vec();
            bytes.extend_from_slice(payload);
            let events = if kind == EVENTS { self.batch_events } else { 0 };
            return segments.write(&bytes, events).map_err(io_err);
        }
        self.out
            .write_all(&record_header(kind, payload))
            .and_then(|()| self.out.write_all(payload))
            .map_err(io_err)
    }

    fn json<T: serde::Serialize>(&mut self, kind: u8, value: &T) -> Result<(), RecordError> {
        let bytes = serde_json::to_vec(value).expect("session types serialize");
        self.record(kind, &bytes)
    }

    /// One ring-buffer record, as the kernel wrote it.
    pub fn event(&mut self, bytes: &[u8]) -> Result<(), RecordError> {
        let len = u16::try_from(bytes.len()).expect("events are small");
        self.batch.extend_from_slice(&len.to_le_bytes());
        self.batch.extend_from_slice(bytes);
        self.events += 1;
        self.batch_events += 1;
        if self.batch.len() >= BATCH_BYTES {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<(), RecordError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let packed = self
            .zstd
            .compress(&columns::to_columns(&self.batch))
            .expect("compressing into memory cannot fail");
        self.batch.clear();
        self.record(EVENTS, &packed)?;
        self.batch_events = 0;
        if let Some((segments, now)) = self.rotating.as_mut()
            && segments.full()
        {
            let start = json_record(START, &now());
            segments.rotate(&start).map_err(|source| RecordError::Io {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The process ran a new program: what the replay needs of its new image, in order with
    /// the events (the batch so far goes first).
    pub fn exec(&mut self, image: &ExecImage) -> Result<(), RecordError> {
        self.flush_batch()?;
        self.json(EXEC, image)
    }

    /// A running process began to be traced: what the replay starts its books from, in order
    /// with the events (the batch so far goes first).
    pub fn joined(&mut self, joined: &Joined) -> Result<(), RecordError> {
        self.flush_batch()?;
        self.json(JOIN, joined)
    }

    /// Events taken so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Events and bytes cut from the start of a rotating recording so far.
    pub fn cut(&self) -> (u64, u64) {
        self.rotating
            .as_ref()
            .map_or((0, 0), |(s, _)| (s.cut_events, s.cut_bytes))
    }

    /// Ends the recording and makes it final.
    pub fn finish(mut self, finish: &Finish) -> Result<(), RecordError> {
        self.flush_batch()?;
        let path = self.path.clone();
        let io_err = |source| RecordError::Io {
            path: path.clone(),
            source,
        };
        if let Some((mut segments, _)) = self.rotating.take() {
            segments.copy_into(&mut self.out).map_err(io_err)?;
            let finish = Finish {
                recording_cut_events: segments.cut_events,
                ..finish.clone()
            };
            self.json(FINISH, &finish)?;
        } else {
            self.json(FINISH, finish)?;
        }
        self.out.commit().map_err(io_err)
    }
}

/// A whole record of `kind` holding `value` as JSON.
fn json_record<T: serde::Serialize>(kind: u8, value: &T) -> Vec<u8> {
    let payload = serde_json::to_vec(value).expect("session types serialize");
    let mut bytes = record_header(kind, &payload).to_vec();
    bytes.extend_from_slice(&payload);
    bytes
}

/// The header of a record of `kind` holding `payload`: kind, length, checksum.
pub fn record_header(kind: u8, payload: &[u8]) -> [u8; RECORD_HEADER_BYTES as usize] {
    let mut head = [0u8; RECORD_HEADER_BYTES as usize];
    head[0] = kind;
    head[1..5].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    head[5..9].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    head
}

/// The file header of this format version.
pub fn file_header() -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header
}

/// An events batch as stored, from its plain layout (each event as a little-endian `u16`
/// length and its bytes): laid out by columns (see [`columns`]) and compressed.
pub fn encode_batch(plain: &[u8]) -> Vec<u8> {
    compress(&columns::to_columns(plain))
}

/// An events batch as version 5 and older stored it: laid out by columns and deflated (the
/// fuzzer and the tests make old files with it).
pub fn encode_batch_deflated(plain: &[u8]) -> Vec<u8> {
    deflate(&columns::to_columns(plain))
}

/// Bytes compressed as they are, as events batches are (the fuzzer stores crafted column
/// layouts with it).
pub fn compress(batch: &[u8]) -> Vec<u8> {
    compressor()
        .compress(batch)
        .expect("compressing into memory cannot fail")
}

fn compressor() -> zstd::bulk::Compressor<'static> {
    // The frame says how large the batch is (zstd's default): the reader sizes its buffer
    // from it, and refuses a batch that claims more than a batch can be.
    zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd's fastest level is valid")
}

/// Decompresses one zstd frame into `out` (its length set to the frame's), at most
/// [`MAX_BATCH_BYTES`]: into the vector's room, which is never zeroed first.
fn decompress(
    input: &[u8],
    out: &mut Vec<u8>,
    d: &mut zstd::bulk::Decompressor<'static>,
) -> Result<(), String> {
    out.clear();
    let size = match zstd::zstd_safe::get_frame_content_size(input) {
        Ok(Some(size)) => size,
        Ok(None) => return Err("the frame does not say its size".into()),
        Err(_) => return Err("it is not a zstd frame".into()),
    };
    if size > MAX_BATCH_BYTES {
        return Err(format!("it claims {size} bytes, over {MAX_BATCH_BYTES}"));
    }
    // Exactly the claimed size: a frame (or frames after it) that holds more is an error.
    out.reserve_exact(size as usize);
    let n = d
        .decompress_to_buffer(input, out)
        .map_err(|e| e.to_string())?;
    if n as u64 != size {
        return Err(format!("it holds {n} bytes, not the {size} its frame says"));
    }
    Ok(())
}

/// Inflates a raw deflate stream into `out` (cleared first), at most [`MAX_BATCH_BYTES`]: into
/// the vector's spare room, which is never zeroed first (`read_to_end` would zero it all).
fn inflate(input: &[u8], out: &mut Vec<u8>, d: &mut Decompress) -> Result<(), String> {
    out.clear();
    d.reset(false);
    loop {
        if out.len() == out.capacity() {
            if out.len() as u64 >= MAX_BATCH_BYTES {
                return Err(format!("it is over {MAX_BATCH_BYTES} bytes"));
            }
            let room = (out.capacity().max(input.len() * 4).max(1 << 16))
                .min(MAX_BATCH_BYTES as usize - out.len());
            out.reserve_exact(room);
        }
        let read = d.total_in() as usize;
        let before = (read, out.len());
        match d.decompress_vec(&input[read..], out, FlushDecompress::Finish) {
            Ok(Status::StreamEnd) => return Ok(()),
            Ok(_) if (d.total_in() as usize, out.len()) == before && out.len() < out.capacity() => {
                return Err("the stream ends early".into());
            }
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Bytes deflated as they are: events batches up to version 5.
pub fn deflate(batch: &[u8]) -> Vec<u8> {
    let mut deflate = DeflateEncoder::new(Vec::new(), Compression::fast());
    deflate
        .write_all(batch)
        .and_then(|()| deflate.finish())
        .expect("deflating into memory cannot fail")
}

/// What a recording holds, read back in order.
pub enum Item<'a> {
    Start(Box<Start>),
    Event(&'a [u8]),
    Exec(Box<ExecImage>),
    Joined(Box<Joined>),
    Finish(Box<Finish>),
}

/// Reads a recording record by record.
pub struct Reader<R> {
    input: R,
    offset: u64,
    /// Total length, when known, for progress.
    pub len: Option<u64>,
    buf: Vec<u8>,
    /// The inflated batch (column layout), then the same in the plain layout being read (see
    /// `events`), and the batch's offset.
    packed: Vec<u8>,
    /// The file's format version: it says how its batches are compressed.
    version: u32,
    inflater: Decompress,
    zstd: zstd::bulk::Decompressor<'static>,
    batch: Vec<u8>,
    /// Where each event of the batch lies in it, and the next one to read.
    events: Vec<(u32, u32)>,
    next_event: usize,
    batch_offset: u64,
}

impl Reader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let io_err = |source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().ok().map(|m| m.len());
        let mut r = Reader::new(BufReader::with_capacity(1 << 20, file), path)?;
        r.len = len;
        Ok(r)
    }
}

impl<R: Read> Reader<R> {
    /// Checks the header; `path` only names the source in errors.
    pub fn new(mut input: R, path: &Path) -> Result<Self, RecordError> {
        let mut header = [0u8; HEADER_BYTES as usize];
        let n = read_full(&mut input, &mut header).map_err(|source| RecordError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n < 8 || &header[..8] != MAGIC {
            return Err(RecordError::NotARecording(path.to_path_buf()));
        }
        if n < header.len() {
            return Err(RecordError::Truncated {
                offset: n as u64,
                what: "in the file header",
            });
        }
        let found = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if header[12..16] != [0; 4] {
            return Err(RecordError::Corrupt {
                offset: 12,
                what: "reserved header bytes are not zero".into(),
            });
        }
        if found > VERSION {
            return Err(RecordError::NewerVersion {
                path: path.to_path_buf(),
                found,
            });
        }
        if found < OLDEST_VERSION {
            return Err(RecordError::UnknownVersion {
                path: path.to_path_buf(),
                found,
            });
        }
        Ok(Reader {
            input,
            offset: HEADER_BYTES,
            len: None,
            buf: Vec::new(),
            packed: Vec::new(),
            version: found,
            inflater: Decompress::new(false),
            zstd: zstd::bulk::Decompressor::new().map_err(|source| RecordError::Io {
                path: path.to_path_buf(),
                source,
            })?,
            batch: Vec::new(),
            events: Vec::new(),
            next_event: 0,
            batch_offset: 0,
        })
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next item, or `None` at a clean end.
    pub fn next_item(&mut self) -> Result<Option<Item<'_>>, RecordError> {
        loop {
            if let Some(&(at, len)) = self.events.get(self.next_event) {
                self.next_event += 1;
                return Ok(Some(Item::Event(
                    &self.batch[at as usize..(at + len) as usize],
                )));
            }
            match self.next_record()? {
                None => return Ok(None),
                Some(EVENTS) => self.unpack_batch()?,
                Some(kind) => return self.decode_json(kind).map(Some),
            }
        }
    }

    /// The event `n` places after the next one in the current batch (0: the next one), if the
    /// batch holds it: a look ahead, for fetching what it will need into the cache.
    pub fn ahead(&self, n: usize) -> Option<&[u8]> {
        let &(at, len) = self.events.get(self.next_event + n)?;
        Some(&self.batch[at as usize..(at + len) as usize])
    }

    fn unpack_batch(&mut self) -> Result<(), RecordError> {
        self.next_event = 0;
        self.events.clear();
        let unpacked = if self.version >= ZSTD_VERSION {
            decompress(&self.buf, &mut self.packed, &mut self.zstd)
        } else {
            inflate(&self.buf, &mut self.packed, &mut self.inflater)
        };
        unpacked.map_err(|what| RecordError::Corrupt {
            offset: self.batch_offset,
            what: format!("an events batch does not decompress: {what}"),
        })?;
        columns::from_columns(&self.packed, &mut self.batch, &mut self.events).map_err(|what| {
            RecordError::Corrupt {
                offset: self.batch_offset,
                what: what.into(),
            }
        })
    }

    fn decode_json(&self, kind: u8) -> Result<Item<'_>, RecordError> {
        let json_err = |e: serde_json::Error| RecordError::Corrupt {
            offset: self.batch_offset,
            what: format!("bad record contents: {e}"),
        };
        Ok(if kind == START {
            Item::Start(Box::new(
                serde_json::from_slice(&self.buf).map_err(json_err)?,
            ))
        } else if kind == EXEC {
            Item::Exec(Box::new(
                serde_json::from_slice(&self.buf).map_err(json_err)?,
            ))
        } else if kind == JOIN {
            Item::Joined(Box::new(
                serde_json::from_slice(&self.buf).map_err(json_err)?,
            ))
        } else {
            Item::Finish(Box::new(
                serde_json::from_slice(&self.buf).map_err(json_err)?,
            ))
        })
    }

    /// Reads and checks the next record into `buf`; returns its kind, or `None` at a clean end.
    fn next_record(&mut self) -> Result<Option<u8>, RecordError> {
        let at = self.offset;
        self.batch_offset = at;
        let mut head = [0u8; RECORD_HEADER_BYTES as usize];
        let n = read_full(&mut self.input, &mut head).map_err(|e| RecordError::Corrupt {
            offset: at,
            what: e.to_string(),
        })?;
        if n == 0 {
            return Ok(None);
        }
        if n < head.len() {
            return Err(RecordError::Truncated {
                offset: at,
                what: "in a record header",
            });
        }
        let kind = head[0];
        let len = u32::from_le_bytes(head[1..5].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[5..9].try_into().expect("4 bytes"));
        if !(START..=JOIN).contains(&kind) {
            return Err(RecordError::Corrupt {
                offset: at,
                what: format!("unknown record kind {kind}"),
            });
        }
        if len > MAX_RECORD_BYTES {
            return Err(RecordError::Corrupt {
                offset: at,
                what: format!("record length {len}"),
            });
        }
        // Read what is there rather than allocate what the header claims: a short file that
        // declares a huge record costs no more than its own size.
        self.buf.clear();
        let got = (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut self.buf)
            .map_err(|e| RecordError::Corrupt {
                offset: at,
                what: e.to_string(),
            })?;
        if got < len as usize {
            return Err(RecordError::Truncated {
                offset: at + RECORD_HEADER_BYTES + got as u64,
                what: "in a record's data",
            });
        }
        if crc32fast::hash(&self.buf) != crc {
            return Err(RecordError::Corrupt {
                offset: at,
                what: "checksum mismatch".into(),
            });
        }
        self.offset = at + RECORD_HEADER_BYTES + u64::from(len);
        Ok(Some(kind))
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// A 27-byte file whose one record claims 256 MiB: a truncation error, and the reader's
    /// buffer never grows past what the file holds.
    #[test]
    fn a_record_claiming_more_than_the_file_allocates_nothing() {
        let mut file = file_header().to_vec();
        file.push(START);
        file.extend_from_slice(&MAX_RECORD_BYTES.to_le_bytes());
        file.extend_from_slice(&[0; 4]);
        file.extend_from_slice(b"{}");
        assert_eq!(file.len(), 27);
        let mut reader = Reader::new(Cursor::new(&file), Path::new("small")).unwrap();
        let err = reader.next_item().err().expect("a truncated record");
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(
            reader.buf.capacity() < 4096,
            "{} bytes reserved",
            reader.buf.capacity()
        );
    }

    /// The inflater gives back what was deflated, across calls (one `Decompress` reused and
    /// the output growing past its first room), and refuses a cut or garbled stream.
    #[test]
    fn batches_inflate_whole_or_not_at_all() {
        let mut d = Decompress::new(false);
        let mut out = Vec::new();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 / 1000) as u8).collect();
        for data in [&b"small"[..], &big, &[][..], &b"again"[..]] {
            inflate(&deflate(data), &mut out, &mut d).unwrap();
            assert_eq!(out, data);
        }
        let packed = deflate(&big);
        for cut in [1, packed.len() / 2, packed.len() - 1] {
            assert!(inflate(&packed[..cut], &mut out, &mut d).is_err(), "{cut}");
        }
        assert!(inflate(&[0xff; 64], &mut out, &mut d).is_err());
    }

    /// zstd frames come back as they were, into a reused buffer; a cut, garbled, oversized or
    /// size-less frame, or bytes past it, are errors.
    #[test]
    fn batches_decompress_whole_or_not_at_all() {
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        let mut out = Vec::new();
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 / 1000) as u8).collect();
        for data in [&b"small"[..], &big, &[][..], &b"again"[..]] {
            decompress(&compress(data), &mut out, &mut d).unwrap();
            assert_eq!(out, data);
        }
        let packed = compress(&big);
        for cut in [1, packed.len() / 2, packed.len() - 1] {
            assert!(
                decompress(&packed[..cut], &mut out, &mut d).is_err(),
                "{cut}"
            );
        }
        assert!(decompress(&[0xff; 64], &mut out, &mut d).is_err());
        // Two frames: more bytes than the first one claims, an error (the buffer's room, left
        // from the large batch, would hold them all).
        let mut two = compress(b"first");
        two.extend_from_slice(&compress(b"second"));
        assert!(decompress(&two, &mut out, &mut d).is_err());
        // A frame claiming more than a batch can hold is refused before anything is sized.
        let huge = vec![0u8; MAX_BATCH_BYTES as usize + 1];
        let err = decompress(&compress(&huge), &mut out, &mut d).unwrap_err();
        assert!(err.contains("claims"), "{err}");
        // A streamed frame does not say its size.
        let mut streamed = zstd::stream::Encoder::new(Vec::new(), 1).unwrap();
        streamed.write_all(b"streamed").unwrap();
        let streamed = streamed.finish().unwrap();
        let err = decompress(&streamed, &mut out, &mut d).unwrap_err();
        assert!(err.contains("size"), "{err}");
    }

    /// A version 5 file (deflated batches) reads to the same events as this version's.
    #[test]
    fn version_5_recordings_still_read() {
        let events: Vec<Vec<u8>> = (0..5000u32)
            .map(|i| {
                let len = [48, 64, 24][(i % 3) as usize];
                (0..len).map(|j| (i / 3 + j) as u8).collect()
            })
            .collect();
        let mut plain = Vec::new();
        for e in &events {
            plain.extend_from_slice(&(e.len() as u16).to_le_bytes());
            plain.extend_from_slice(e);
        }
        let file = |version: u32, batch: Vec<u8>| {
            let mut f = file_header().to_vec();
            f[8..12].copy_from_slice(&version.to_le_bytes());
            f.extend_from_slice(&record_header(EVENTS, &batch));
            f.extend_from_slice(&batch);
            f
        };
        let read = |f: Vec<u8>| {
            let mut reader = Reader::new(Cursor::new(f), Path::new("old")).unwrap();
            let mut got = Vec::new();
            while let Some(item) = reader.next_item().unwrap() {
                match item {
                    Item::Event(e) => got.push(e.to_vec()),
                    _ => panic!("only events were written"),
                }
            }
            got
        };
        assert_eq!(read(file(VERSION, encode_batch(&plain))), events);
        assert_eq!(read(file(5, encode_batch_deflated(&plain))), events);
        // Each reads only its own version's compression.
        let err = Reader::new(Cursor::new(file(5, encode_batch(&plain))), Path::new("x"))
            .unwrap()
            .next_item()
            .err()
            .expect("a zstd batch in a version 5 file");
        assert!(err.to_string().contains("does not decompress"), "{err}");
    }
}
