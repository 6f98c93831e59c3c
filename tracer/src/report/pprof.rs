//! A gzipped pprof profile (`profile.proto`), which `go tool pprof`, Pyroscope and Parca open.
//!
//! The messages below are the public profile.proto's, written out for prost.

use std::{
    collections::HashMap,
    io::{self, Write},
    sync::Arc,
};

use flate2::{Compression, write::GzEncoder};
use prost::Message as _;

use super::Summary;
use crate::summary::{label, visible};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
    #[prost(int64, tag = "3")]
    pub column: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// The sample types, in value order.
pub const SAMPLE_TYPES: [(&str, &str); 5] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
    ("resident_space", "bytes"),
];

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, text: &str) -> i64 {
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(text.to_string());
        self.index.insert(text.to_string(), i);
        i
    }
}

/// A mapping's id, its lowest and highest address, and whether every frame in it was resolved.
type MappingSpan = (u64, u64, u64, bool);

/// The files the profile's addresses lie in, one mapping per file and load bias (address minus
/// file offset), so that a profile can be symbolized again from the files (`go tool pprof`,
/// Parca).
#[derive(Default)]
struct Mappings {
    /// By (file, bias): the mapping's id, its lowest and highest address, and whether every
    /// frame in it was resolved.
    by_file: HashMap<(Arc<str>, u64), MappingSpan>,
    /// The build id of each file that has one.
    build_ids: HashMap<Arc<str>, Arc<str>>,
}

impl Mappings {
    /// The id of the mapping `f` lies in, or 0 (anonymous memory, or a frame from a recording
    /// made before frames kept their file).
    fn of(&mut self, f: &crate::summary::Frame, resolved: bool) -> u64 {
        let (Some(module), Some(offset)) = (&f.module, f.offset) else {
            return 0;
        };
        if let Some(id) = &f.build_id {
            self.build_ids
                .entry(module.clone())
                .or_insert_with(|| id.clone());
        }
        let next = self.by_file.len() as u64 + 1;
        let e = self
            .by_file
            .entry((module.clone(), f.addr.wrapping_sub(offset)))
            .or_insert((next, f.addr, f.addr, true));
        e.1 = e.1.min(f.addr);
        e.2 = e.2.max(f.addr);
        e.3 &= resolved;
        e.0
    }

    fn finish(self, strings: &mut Strings) -> Vec<Mapping> {
        let build_ids = self.build_ids;
        // In id order, so the strings are interned in the same order every time.
        let mut by_id: Vec<_> = self.by_file.into_iter().collect();
        by_id.sort_by_key(|(_, (id, ..))| *id);
        by_id
            .into_iter()
            .map(|((file, bias), (id, low, high, resolved))| Mapping {
                id,
                memory_start: low,
                memory_limit: high.saturating_add(1),
                file_offset: low.wrapping_sub(bias),
                filename: strings.get(&visible(&file)),
                build_id: build_ids.get(&file).map_or(0, |b| strings.get(b)),
                has_functions: resolved,
                has_filenames: resolved,
                has_line_numbers: resolved,
                has_inline_frames: resolved,
            })
            .collect()
    }
}

/// The profile of a summary's call sites: one sample per site, one location per address (with
/// a line per inlined frame, innermost first), one function per name and file.
pub fn profile(summary: &Summary) -> Profile {
    let mut strings = Strings::new();
    let sample_type = SAMPLE_TYPES
        .iter()
        .map(|(t, u)| ValueType {
            r#type: strings.get(t),
            unit: strings.get(u),
        })
        .collect();
    let mut functions: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(String, String), u64> = HashMap::new();
    let mut locations: Vec<Location> = Vec::new();
    let mut location_ids: HashMap<u64, u64> = HashMap::new();
    let mut mappings = Mappings::default();
    // The main executable's mapping first, as pprof tools expect of a profile.
    if let Some(f) = summary
        .user
        .sites
        .iter()
        .flat_map(|s| s.stack.iter())
        .find(|f| matches!(f.function.as_deref(), Some("main" | "_start")))
    {
        mappings.of(f, true);
    }
    let mut samples = Vec::new();
    for site in &summary.user.sites {
        let mut ids: Vec<u64> = Vec::new();
        let mut i = 0;
        while i < site.stack.len() {
            // The frames of one address: inlined ones, then the function they are inlined into.
            let addr = site.stack[i].addr;
            let mut end = i;
            while end < site.stack.len() && site.stack[end].addr == addr {
                end += 1;
            }
            let id = *location_ids.entry(addr).or_insert_with(|| {
                let lines = site.stack[i..end]
                    .iter()
                    .map(|f| {
                        // Named as every report names it; control characters made visible,
                        // as in every format (pprof tools print names to a terminal).
                        let name = visible(&label::name(f)).into_owned();
                        let file = visible(f.file.as_deref().unwrap_or_default()).into_owned();
                        let key = (name.clone(), file.clone());
                        let function_id = match function_ids.get(&key) {
                            Some(&id) => id,
                            None => {
                                let id = functions.len() as u64 + 1;
                                functions.push(Function {
                                    id,
                                    name: strings.get(&name),
                                    system_name: strings.get(&name),
                                    filename: strings.get(&file),
                                    start_line: 0,
                                });
                                function_ids.insert(key, id);
                                id
                            }
                        };
                        Line {
                            function_id,
                            line: i64::from(f.line.unwrap_or(0)),
                            column: 0,
                        }
                    })
                    .collect();
                let id = locations.len() as u64 + 1;
                let resolved = site.stack[i].function.is_some();
                locations.push(Location {
                    id,
                    mapping_id: mappings.of(&site.stack[i], resolved),
                    address: addr,
                    line: lines,
                    is_folded: false,
                });
                id
            });
            ids.push(id);
            i = end;
        }
        let s = &site.stats;
        samples.push(Sample {
            location_id: ids,
            value: [
                s.allocs,
                s.bytes,
                s.live_count,
                s.live_bytes,
                site.paths.resident_bytes,
            ]
            .map(|v| v as i64)
            .to_vec(),
            label: vec![Label {
                key: strings.get("path"),
                str: strings.get(site.path),
                num: 0,
                num_unit: 0,
            }],
        });
    }
    let mut comment = vec![strings.get(&format!(
        "tracer: pid {} ({})",
        summary.target.pid,
        visible(&summary.target.command.join(" "))
    ))];
    comment.extend(
        summary
            .notes
            .iter()
            .map(|n| strings.get(&format!("{}: {}", n.level.name(), n.text))),
    );
    Profile {
        sample_type,
        sample: samples,
        mapping: mappings.finish(&mut strings),
        location: locations,
        function: functions,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: 0,
        duration_nanos: (summary.duration_ms * 1e6) as i64,
        period_type: None,
        period: 0,
        comment,
        // What is live now, as Go's heap profiles open: not the last type (resident).
        default_sample_type: strings.get("inuse_space"),
        string_table: strings.table,
    }
}

/// Writes the gzipped profile.
pub fn render(summary: &Summary, out: &mut dyn Write) -> super::Result<()> {
    Ok(write_gzipped(&profile(summary), out)?)
}

/// The profile as an HTTP endpoint serves it, like Go's net/http/pprof: taken at
/// `time_nanos` (since the epoch), with `default_type` (`inuse_space` for heap,
/// `alloc_space` for allocs) the one tools show first.
pub fn render_served(
    summary: &Summary,
    default_type: &str,
    time_nanos: i64,
    out: impl Write,
) -> io::Result<()> {
    let mut p = profile(summary);
    p.time_nanos = time_nanos;
    if let Some(i) = p.string_table.iter().position(|s| s == default_type) {
        p.default_sample_type = i as i64;
    }
    write_gzipped(&p, out)
}

fn write_gzipped(p: &Profile, out: impl Write) -> io::Result<()> {
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&p.encode_to_vec())?;
    gz.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{summary::tests::one_site, symbolize::Frame};

    /// A frame in a file: its location names the mapping, whose start and offset give the
    /// frame's file offset back, so the profile can be symbolized again.
    #[test]
    fn locations_name_their_mappings() {
        let mut summary = crate::summary::tests::sample_summary();
        summary.user = one_site(
            Frame {
                module: Some("/usr/lib/libz.so.1".into()),
                offset: Some(0x4a2f1),
                build_id: Some("709f60bffdb9a2a6".into()),
                ..Frame::unknown(0x7f00_0004_a2f1)
            },
            vec![],
        );
        let p = profile(&summary);
        assert_eq!(p.mapping.len(), 1);
        let m = &p.mapping[0];
        assert_eq!(p.string_table[m.filename as usize], "/usr/lib/libz.so.1");
        assert_eq!(p.string_table[m.build_id as usize], "709f60bffdb9a2a6");
        let loc = &p.location[0];
        assert_eq!(loc.mapping_id, m.id);
        assert_eq!(loc.address - m.memory_start + m.file_offset, 0x4a2f1);
        assert!(loc.address < m.memory_limit && !m.has_functions);
        // Anonymous memory has no mapping.
        summary.user = one_site(Frame::unknown(0x1000), vec![]);
        let p = profile(&summary);
        assert!(p.mapping.is_empty() && p.location[0].mapping_id == 0);
    }
}
