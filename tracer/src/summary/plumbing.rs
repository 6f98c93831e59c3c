//! The frame that matters: allocator plumbing (the malloc family, a language's allocation glue,
//! a program's own wrappers such as `xmalloc`) is marked on every frame of a summary, and sites
//! are labelled by their first frame outside it. Every frame stays in the stack; the JSON marks
//! the plumbing ones (`"plumbing": true`), and the text names a site from its first other one.

use regex::RegexSet;

use super::Summary;
use crate::symbolize::Frame;

/// What counts as plumbing: the built-in families and `--wrapper` patterns.
#[derive(Debug, Clone, Default)]
pub struct Plumbing {
    wrappers: Option<RegexSet>,
}

/// The allocator family and the C library's allocating wrappers, by function name.
const ALLOCATOR_FUNCTIONS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "strdup",
    "strndup",
    "__strdup",
    "__strndup",
    "__libc_malloc",
    "__libc_calloc",
    "__libc_realloc",
    "__libc_memalign",
    "_int_malloc",
    "_int_realloc",
    "_int_memalign",
    "sysmalloc",
    "tcache_init",
    "xmalloc",
    "xcalloc",
    "xrealloc",
    "xstrdup",
];

/// libc's wrappers of the memory syscalls, and what glibc's malloc grows its heap with, by
/// their names without glibc's `__GI_` and leading underscores: a caller of `mmap` is named by
/// the code that called the wrapper (only where the frame lies in libc or the dynamic loader).
const SYSCALL_WRAPPERS: &[&str] = &[
    "mmap",
    "mmap64",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "brk",
    "brk_call",
    "sbrk",
    "glibc_morecore",
    "morecore",
    "sysmalloc_mmap",
    "sysmalloc_mmap_fallback",
];

/// The standard libraries' sources, where a frame in them is allocation plumbing.
const STD_SOURCES: &[&str] = &[
    "/include/c++/",
    "/library/alloc/src/",
    "/library/core/src/alloc/",
    "/library/std/src/alloc",
    "/library/std/src/sys/alloc/",
];

/// Whether `frame` lies in libstdc++ itself.
fn in_libstdcxx(frame: &Frame) -> bool {
    frame
        .module
        .as_deref()
        .is_some_and(|m| m.rsplit('/').next().unwrap_or(m).starts_with("libstdc++"))
}

/// A demangled C++ function's own qualified name, without the return type a template
/// function's name begins with: the last space-separated part outside `<...>`
/// (`std::vector<double, std::allocator<double> > app::grow<double>` is `app::grow<double>`).
fn cxx_own_name(bare: &str) -> &str {
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in bare.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ' ' if depth == 0 => start = i + 1,
            _ => {}
        }
    }
    &bare[start..]
}

/// Whether `frame` lies in libc or the dynamic loader (or its file is not known).
fn in_libc(frame: &Frame) -> bool {
    frame.module.as_deref().is_none_or(|m| {
        let file = m.rsplit('/').next().unwrap_or(m);
        file.starts_with("libc.so") || file.starts_with("libc-") || file.starts_with("ld-linux")
    })
}

/// Prefixes of Rust's allocation glue (`alloc::alloc::alloc`, `alloc::raw_vec::...`,
/// `<alloc::vec::Vec<T> as Clone>::clone`, `__rust_alloc`, hashbrown's tables).
const RUST_PREFIXES: &[&str] = &[
    "alloc::",
    "<alloc::",
    "core::alloc::",
    "std::alloc::",
    "__rust_",
    "__rdl_",
    "__rg_",
    "<std::alloc::",
    "hashbrown::",
    "<hashbrown::",
];

/// Parts of libstdc++'s allocation internals, anywhere in a C++ name.
const CXX_PARTS: &[&str] = &[
    "std::__new_allocator",
    "__gnu_cxx::new_allocator",
    "__gnu_cxx::__alloc_traits",
    "std::allocator_traits",
    "std::allocator<",
    "std::_Vector_base",
    "std::__detail::_Hashtable_alloc",
];

impl Plumbing {
    /// The built-in families, and functions matching any of `wrappers` (regular expressions
    /// over the demangled name, e.g. `^zmalloc$`).
    pub fn new(wrappers: &[String]) -> Result<Self, regex::Error> {
        Ok(Plumbing {
            wrappers: if wrappers.is_empty() {
                None
            } else {
                Some(RegexSet::new(wrappers)?)
            },
        })
    }

    /// Whether `frame` is allocator plumbing.
    pub fn is_plumbing(&self, frame: &Frame) -> bool {
        let Some(name) = frame.function.as_deref() else {
            return false;
        };
        // C++ names carry their arguments: `operator new(unsigned long)`. A wrapper pattern
        // may name either.
        let bare = name.split('(').next().unwrap_or(name);
        if let Some(w) = &self.wrappers
            && (w.is_match(name) || w.is_match(bare))
        {
            return true;
        }
        // glibc's internal aliases: `__GI___libc_malloc` is `__libc_malloc`.
        let bare = bare.strip_prefix("__GI_").unwrap_or(bare);
        if SYSCALL_WRAPPERS.contains(&bare.trim_start_matches('_')) && in_libc(frame) {
            return true;
        }
        if ALLOCATOR_FUNCTIONS.contains(&bare)
            || bare.starts_with("operator new")
            || bare.starts_with("operator delete")
            || RUST_PREFIXES.iter().any(|p| name.starts_with(p))
        {
            return true;
        }
        // Where the code lives decides: the standard libraries' own sources, libstdc++'s
        // headers (`/include/c++/14/bits/stl_vector.h`: `_M_realloc_insert`, `push_back` as
        // inlined into the caller) and Rust's library (`/rustc/<hash>/library/alloc/src/...`),
        // and libstdc++ itself.
        if let Some(file) = frame.file.as_deref() {
            return STD_SOURCES.iter().any(|p| file.contains(p)) || in_libstdcxx(frame);
        }
        // Without a source file, the name: but a C++ name begins with its return type, so a
        // program's own `std::vector<double> app::grow<double>(unsigned long)` is not
        // libstdc++'s; only the function's own qualified name counts.
        let own = cxx_own_name(bare);
        in_libstdcxx(frame)
            || CXX_PARTS.iter().any(|p| own.contains(p))
            || (own.starts_with("std::") && (own.contains("::_M_") || own.contains("::_S_")))
    }

    /// Marks the plumbing frames of the callers' stacks in `summary` (sites, leaks and
    /// suspects come marked from [`SiteFrames`](super::site_frames::SiteFrames)).
    pub fn mark(&self, summary: &mut Summary) {
        for c in &mut summary.callers {
            self.mark_stack(&mut c.stack);
        }
    }

    pub fn mark_stack(&self, stack: &mut [Frame]) {
        for f in stack {
            f.plumbing = self.is_plumbing(f);
        }
    }
}

/// The frames from the one that matters on: past the leading plumbing (all of them when every
/// frame is plumbing).
pub fn from_label(stack: &[Frame]) -> &[Frame] {
    match stack.iter().position(|f| !f.plumbing) {
        Some(i) => &stack[i..],
        None => stack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: &str) -> Frame {
        Frame {
            function: Some(function.into()),
            file: (!file.is_empty()).then(|| file.into()),
            ..Frame::unknown(0x1000)
        }
    }

    #[test]
    fn knows_the_families_and_not_the_program() {
        let p = Plumbing::new(&["^zmalloc$".into(), "^ztrymalloc_usable".into()]).unwrap();
        for plumbing in [
            frame("malloc", ""),
            frame("operator new(unsigned long)", ""),
            frame("alloc::alloc::alloc", ""),
            frame("<alloc::vec::Vec<T,A> as core::clone::Clone>::clone", ""),
            frame("alloc::raw_vec::RawVecInner<A>::try_allocate_in", ""),
            frame("__rust_alloc", ""),
            frame("std::__new_allocator<int>::allocate", ""),
            frame(
                "std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>",
                "",
            ),
            frame(
                "std::vector<int>::push_back",
                "/usr/include/c++/14/bits/stl_vector.h",
            ),
            frame("zmalloc", ""),
            frame("ztrymalloc_usable_internal", ""),
        ] {
            assert!(p.is_plumbing(&plumbing), "{plumbing:?}");
        }
        for program in [
            frame("m::build", "src/m.rs"),
            frame("main", "app.c"),
            frame("std::io::stdio::_print", ""),
            frame("build_table", "/usr/include/app/table.h"),
            frame("mallocate_my_things", ""),
            Frame::unknown(0x1000),
        ] {
            assert!(!p.is_plumbing(&program), "{program:?}");
        }
        assert!(!Plumbing::default().is_plumbing(&frame("zmalloc", "")));
        assert!(Plumbing::new(&["(".into()]).is_err());
    }

    /// A program's own template is not plumbing because of its return type: it is decided
    /// by where the code lives (its source file, or libstdc++), or by its own name.
    #[test]
    fn a_programs_template_is_its_own() {
        let p = Plumbing::default();
        let grow = "std::vector<double, std::allocator<double> > app::grow<double>(unsigned long)";
        assert!(!p.is_plumbing(&frame(grow, "/src/app.cpp")));
        assert!(!p.is_plumbing(&frame(grow, "")));
        assert!(p.is_plumbing(&frame(
            "std::vector<double, std::allocator<double> >::_M_realloc_insert<double>(double&&)",
            "",
        )));
        let in_lib = Frame {
            module: Some("/usr/lib/x86_64-linux-gnu/libstdc++.so.6".into()),
            ..frame("std::string::_M_create(unsigned long&, unsigned long)", "")
        };
        assert!(p.is_plumbing(&in_lib));
        assert!(p.is_plumbing(&frame(
            "void std::vector<int>::push_back(int const&)",
            "/usr/include/c++/14/bits/stl_vector.h",
        )));
    }

    /// libc's syscall wrappers are plumbing where they lie in libc or the loader: a caller of
    /// mmap is named by the code that called `__mmap64`; a program's own `mmap` is not.
    #[test]
    fn syscall_wrappers_in_libc_are_plumbing() {
        let p = Plumbing::default();
        let at = |function: &str, module: &str| Frame {
            module: Some(module.into()),
            ..frame(function, "")
        };
        for name in [
            "__mmap64",
            "__GI___mmap64",
            "__GI_munmap",
            "__brk",
            "__GI___sbrk",
        ] {
            assert!(
                p.is_plumbing(&at(name, "/lib/x86_64-linux-gnu/libc.so.6")),
                "{name}"
            );
        }
        assert!(p.is_plumbing(&at("__GI___libc_malloc", "/lib/x86_64-linux-gnu/libc.so.6")));
        let ld = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        assert!(p.is_plumbing(&at("__GI_mprotect", ld)));
        assert!(!p.is_plumbing(&at("mmap", "/usr/bin/app")));
        assert!(!p.is_plumbing(&at("_dl_map_segments", ld)));
    }

    #[test]
    fn the_label_is_the_first_frame_outside() {
        let p = Plumbing::default();
        let mut stack = vec![
            frame("alloc::alloc::alloc", ""),
            frame("alloc::raw_vec::finish_grow", ""),
            frame("m::build", "src/m.rs"),
            frame("main", ""),
        ];
        p.mark_stack(&mut stack);
        assert_eq!(from_label(&stack)[0].function.as_deref(), Some("m::build"));
        let mut all = vec![frame("malloc", "")];
        p.mark_stack(&mut all);
        assert_eq!(from_label(&all).len(), 1);
    }
}
