//! The names userspace asks the eBPF object for, checked against the object itself (no root:
//! the ELF file is read, nothing is loaded): every map and program userspace names is in it,
//! and every map and program in it is used.

use std::collections::{BTreeMap, BTreeSet};

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};
use tracer_common::MAP_NAMES;

use super::{EBPF_OBJECT, program_names};

/// The object's maps (symbols of its `maps` section) and programs (functions in a section of
/// their own), and the symbols something refers to.
struct Contents {
    maps: BTreeMap<usize, String>,
    programs: BTreeSet<String>,
    referenced: BTreeSet<usize>,
}

fn contents() -> Contents {
    let file = object::File::parse(EBPF_OBJECT).expect("the eBPF object is ELF");
    let maps_section = file
        .section_by_name("maps")
        .expect("the eBPF object has a maps section")
        .index();
    let mut maps = BTreeMap::new();
    let mut programs = BTreeSet::new();
    for symbol in file.symbols() {
        let (Ok(name), Some(section)) = (symbol.name(), symbol.section_index()) else {
            continue;
        };
        if section == maps_section {
            maps.insert(symbol.index().0, name.to_string());
        } else if symbol.kind() == SymbolKind::Text
            && symbol.is_global()
            && file
                .section_by_index(section)
                .is_ok_and(|s| s.name() != Ok(".text"))
        {
            programs.insert(name.to_string());
        }
    }
    let referenced = file
        .sections()
        .flat_map(|s| s.relocations().collect::<Vec<_>>())
        .filter_map(|(_, r)| match r.target() {
            RelocationTarget::Symbol(i) => Some(i.0),
            _ => None,
        })
        .collect();
    Contents {
        maps,
        programs,
        referenced,
    }
}

#[test]
fn every_map_userspace_opens_is_in_the_object() {
    let c = contents();
    let names: BTreeSet<&str> = c.maps.values().map(String::as_str).collect();
    for name in MAP_NAMES {
        assert!(names.contains(name), "no map {name} in the eBPF object");
    }
}

#[test]
fn every_map_in_the_object_is_used_by_a_program() {
    let c = contents();
    assert!(c.maps.len() >= MAP_NAMES.len(), "{:?}", c.maps);
    for (index, name) in &c.maps {
        assert!(
            c.referenced.contains(index),
            "map {name} is in the eBPF object but no program uses it"
        );
    }
}

#[test]
fn every_program_is_named_by_userspace_and_the_other_way_round() {
    let c = contents();
    let asked: BTreeSet<String> = program_names().into_iter().collect();
    let missing: Vec<&String> = asked.difference(&c.programs).collect();
    assert!(missing.is_empty(), "not in the eBPF object: {missing:?}");
    let unused: Vec<&String> = c.programs.difference(&asked).collect();
    assert!(
        unused.is_empty(),
        "in the eBPF object, never attached: {unused:?}"
    );
}
