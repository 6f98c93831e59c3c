//! The tracefs side of the kernel: where it is mounted and what its tracepoint records look like.

use std::{
    collections::HashMap,
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use thiserror::Error;

const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}); \
         mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NotMounted(io::Error),
    #[error(
        "the kernel has no tracepoint {category}:{name} ({path} is missing); \
         it needs CONFIG_FTRACE_SYSCALLS for syscall tracepoints"
    )]
    MissingTracepoint {
        category: String,
        name: String,
        path: PathBuf,
    },
    #[error(
        "tracefs is mounted at {root} but uid {uid} cannot read it (mode {mode:04o}, owner uid \
         {owner}): CAP_BPF and CAP_PERFMON load the programs, but the tracepoints' formats are \
         read from tracefs; run tracer as root, give it CAP_DAC_READ_SEARCH too, or make tracefs \
         readable (`mount -o remount,mode=755 {root}`)"
    )]
    Unreadable {
        root: PathBuf,
        uid: u32,
        mode: u32,
        owner: u32,
    },
    #[error("reading {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("tracepoint {tracepoint} has no field `{field}` (its format: {path})")]
    MissingField {
        tracepoint: String,
        field: String,
        path: PathBuf,
    },
}

/// A mounted tracefs.
#[derive(Debug, Clone)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Finds tracefs, mounting it at `/sys/kernel/tracing` when it is not mounted yet.
    pub fn find_or_mount() -> Result<Self, TracefsError> {
        if let Some(fs) = Self::find() {
            return Ok(fs);
        }
        // Mounted, but closed to us (mode 0700 and we are not root): say that, not "missing".
        for root in MOUNT_POINTS.iter().map(Path::new) {
            if let Err(e) = fs::metadata(root.join("events"))
                && e.kind() == io::ErrorKind::PermissionDenied
            {
                use std::os::unix::fs::MetadataExt;
                let meta = fs::metadata(root).map_err(|source| TracefsError::Read {
                    path: root.into(),
                    source,
                })?;
                return Err(TracefsError::Unreadable {
                    root: root.into(),
                    // SAFETY: geteuid has no preconditions.
                    uid: unsafe { libc::geteuid() },
                    mode: meta.mode() & 0o7777,
                    owner: meta.uid(),
                });
            }
        }
        let target = CString::new(MOUNT_POINTS[0]).expect("no NUL");
        let fstype = CString::new("tracefs").expect("no NUL");
        // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(TracefsError::NotMounted(io::Error::last_os_error()));
        }
        Self::find().ok_or_else(|| {
            TracefsError::NotMounted(io::Error::other("mounted, but events/ is missing"))
        })
    }

    /// A tracefs tree at `root` (tests use a fake one).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Tracefs { root: root.into() }
    }

    fn find() -> Option<Self> {
        MOUNT_POINTS
            .iter()
            .map(Path::new)
            .find(|p| p.join("events").is_dir())
            .map(|p| Tracefs {
                root: p.to_path_buf(),
            })
    }

    /// The parsed `format` file of `category:name`.
    pub fn format(&self, category: &str, name: &str) -> Result<TracepointFormat, TracefsError> {
        let path = self
            .root
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TracefsError::MissingTracepoint {
                    category: category.into(),
                    name: name.into(),
                    path,
                });
            }
            Err(source) => return Err(TracefsError::Read { path, source }),
        };
        Ok(TracepointFormat {
            tracepoint: format!("{category}:{name}"),
            fields: parse_format(&text),
            print_fmt: text
                .lines()
                .find_map(|l| l.strip_prefix("print fmt:"))
                .unwrap_or_default()
                .to_string(),
            path,
        })
    }
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub offset: u16,
    pub size: u16,
}

/// The fields of one tracepoint's records.
#[derive(Debug, Clone)]
pub struct TracepointFormat {
    tracepoint: String,
    path: PathBuf,
    fields: HashMap<String, Field>,
    /// The `print fmt:` line: how the kernel prints the record.
    pub print_fmt: String,
}

impl TracepointFormat {
    pub fn field(&self, name: &str) -> Result<Field, TracefsError> {
        self.fields
            .get(name)
            .copied()
            .ok_or_else(|| TracefsError::MissingField {
                tracepoint: self.tracepoint.clone(),
                field: name.into(),
                path: self.path.clone(),
            })
    }

    /// The argument fields of a `syscalls:sys_enter_*` record, in order: every field after
    /// `__syscall_nr`.
    pub fn syscall_args(&self) -> Vec<Field> {
        let mut args: Vec<Field> = self
            .fields
            .iter()
            .filter(|(name, _)| !name.starts_with("common_") && *name != "__syscall_nr")
            .map(|(_, f)| *f)
            .collect();
        args.sort_by_key(|f| f.offset);
        args
    }
}

/// Parses the `field:` lines of a tracefs `format` file into name → offset and size.
///
/// A line looks like `\tfield:unsigned long len;\toffset:24;\tsize:8;\tsigned:0;`; the name is
/// the last word of the declaration, without any array suffix (`char comm[16]` is `comm`).
pub fn parse_format(text: &str) -> HashMap<String, Field> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.split(';').map(str::trim) {
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.parse::<u16>().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.parse::<u16>().ok();
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            continue;
        };
        let Some(last) = decl.split_whitespace().last() else {
            continue;
        };
        let name = last
            .split('[')
            .next()
            .unwrap_or(last)
            .trim_start_matches('*');
        fields.insert(name.to_string(), Field { offset, size });
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_ENTER_MMAP: &str = "name: sys_enter_mmap
ID: 174
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned long addr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long len;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned long prot;\toffset:32;\tsize:8;\tsigned:0;
\tfield:unsigned long flags;\toffset:40;\tsize:8;\tsigned:0;
\tfield:unsigned long fd;\toffset:48;\tsize:8;\tsigned:0;
\tfield:unsigned long off;\toffset:56;\tsize:8;\tsigned:0;

print fmt: \"addr: 0x%08lx, len: 0x%08lx\", ((unsigned long)(REC->addr))
";

    #[test]
    fn parses_syscall_format() {
        let fields = parse_format(SYS_ENTER_MMAP);
        assert_eq!(
            fields["len"],
            Field {
                offset: 24,
                size: 8
            }
        );
        assert_eq!(fields["common_pid"], Field { offset: 4, size: 4 });
        let fmt = TracepointFormat {
            tracepoint: "syscalls:sys_enter_mmap".into(),
            path: "format".into(),
            fields,
            print_fmt: String::new(),
        };
        let offsets: Vec<u16> = fmt.syscall_args().iter().map(|f| f.offset).collect();
        assert_eq!(offsets, [16, 24, 32, 40, 48, 56]);
        let err = fmt.field("nope").unwrap_err().to_string();
        assert!(
            err.contains("syscalls:sys_enter_mmap has no field `nope`"),
            "{err}"
        );
    }

    #[test]
    fn missing_tracepoint_names_it() {
        let dir = std::env::temp_dir().join(format!("tracer-fake-tracefs-{}", std::process::id()));
        let tp = dir.join("events/syscalls/sys_enter_mmap");
        fs::create_dir_all(&tp).unwrap();
        fs::write(tp.join("format"), SYS_ENTER_MMAP).unwrap();
        let fs_ = Tracefs::at(&dir);
        assert_eq!(
            fs_.format("syscalls", "sys_enter_mmap")
                .unwrap()
                .field("len")
                .unwrap()
                .offset,
            24
        );
        let err = fs_
            .format("syscalls", "sys_enter_brk")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the kernel has no tracepoint syscalls:sys_enter_brk ("),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_arrays_pointers_and_data_loc() {
        let text = "\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
                    \tfield:const void * ptr;\toffset:24;\tsize:8;\tsigned:0;\n\
                    \tfield:__data_loc char[] name;\toffset:32;\tsize:4;\tsigned:0;\n\
                    \tgarbage line\n";
        let fields = parse_format(text);
        assert_eq!(fields.len(), 3);
        assert_eq!(
            fields["comm"],
            Field {
                offset: 8,
                size: 16
            }
        );
        assert_eq!(
            fields["ptr"],
            Field {
                offset: 24,
                size: 8
            }
        );
        assert_eq!(
            fields["name"],
            Field {
                offset: 32,
                size: 4
            }
        );
    }
}
