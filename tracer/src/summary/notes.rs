//! What a report must say about itself: every loss (events dropped, stacks not taken or cut, a
//! cut recording) and every caveat (what a mode does not see, what was not traced). Made once
//! here; every format shows the same list (the text and HTML at the top, JSON `notes`, a line
//! under each SVG chart, pprof comments, the live views).

use serde::Serialize;

use super::{EventCounts, Summary, label};

/// How much a note matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something was lost: some numbers are incomplete.
    Warning,
    /// What the numbers mean, or leave out.
    Note,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Warning => "warning",
            Level::Note => "note",
        }
    }
}

/// One note: its level and its text (safe to show; markup formats escape it further).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub level: Level,
    pub text: String,
}

impl Note {
    fn warning(text: String) -> Note {
        Note {
            level: Level::Warning,
            text,
        }
    }

    fn caveat(text: String) -> Note {
        Note {
            level: Level::Note,
            text,
        }
    }
}

/// Every note of a summary, warnings first.
pub fn of(s: &Summary) -> Vec<Note> {
    let e = &s.events;
    let mut notes = losses(e);
    if s.processes.is_empty() && e.children_lost > 0 {
        notes.push(Note::warning(format!(
            "{} child processes could not be followed (too many at once): not traced",
            e.children_lost
        )));
    }
    if e.unknown_process > 0 {
        notes.push(Note::warning(format!(
            "{} events came from processes whose creation was not seen: they are in no \
             process's figures",
            e.unknown_process
        )));
    }
    let kills = s
        .oom
        .iter()
        .chain(s.processes.iter().filter_map(|p| p.summary.oom.as_ref()));
    notes.extend(kills.map(|v| Note::warning(v.line())));
    notes.extend(caveats(s));
    notes.sort_by_key(|n| n.level != Level::Warning);
    notes
}

/// What was lost on the way from the kernel.
fn losses(e: &EventCounts) -> Vec<Note> {
    let mut notes = Vec::new();
    if e.dropped > 0 {
        notes.push(Note::warning(format!(
            "{} events were lost; the counts below are incomplete (try a larger --buffer-size)",
            e.dropped
        )));
    }
    if e.read_failures > 0 || e.decode_errors > 0 {
        notes.push(Note::warning(format!(
            "{} tracepoint fields could not be read and {} records did not decode: their \
             events are not counted",
            e.read_failures, e.decode_errors
        )));
    }
    if e.stacks_lost > 0 {
        notes.push(Note::warning(lost_stacks(e)));
    }
    if e.fp_stacks_ended > 0 {
        notes.push(Note::caveat(format!(
            "{} walked by frame pointer ended early, at a return address that follows no call: \
             the walk had left code that keeps frame pointers (the frames beyond are not shown)",
            label::count(e.fp_stacks_ended, "stack", "stacks")
        )));
    }
    if let Some((at, len)) = e.recording_ends_early {
        notes.push(Note::warning(format!(
            "the recording ends before its finish (tracer was killed, or its disk filled): this \
             report covers its first {at} bytes of {len}, the events of every whole batch; \
             stacks are symbolized at the end of a run, so the sites have none",
        )));
    }
    if e.cut_from_recording > 0 {
        notes.push(Note::caveat(format!(
            "the recording kept its newest events (--record-max): the first {} were cut, and \
             blocks allocated before then are not known",
            e.cut_from_recording
        )));
    }
    if e.unwound_collisions > 0 {
        notes.push(Note::caveat(format!(
            "{} unwound stacks hashed to another stack's id and were not kept: their sites show \
             the calling frame only (`stack_lost`, [stack lost])",
            e.unwound_collisions
        )));
    }
    if e.unwound_map_full > 0 {
        notes.push(Note::caveat(format!(
            "{} unwound stacks found their map full and were not kept: their sites show the \
             calling frame only (`stack_lost`, [stack lost]); a larger --max-stacks makes room",
            e.unwound_map_full
        )));
    }
    if e.unpaired > 0 {
        notes.push(Note::caveat(format!(
            "{} calls were in flight when tracing began: their entries were not seen",
            e.unpaired
        )));
    }
    notes
}

/// What the run did not look at.
fn caveats(s: &Summary) -> Vec<Note> {
    let (e, t) = (&s.events, &s.target);
    let mut notes = Vec::new();
    // Said of the sites whose own stack was cut: a stack as deep as the unwinder walks that
    // reaches its thread's entry point is whole.
    let cut = s.user.sites.iter().filter(|x| x.marks.stack_cut).count();
    if cut > 0 {
        notes.push(Note::caveat(format!(
            "{} deeper than 64 frames: cut there, their outermost frames missing \
             (`stack_cut` in the JSON, [stack cut] in the text)",
            label::count(cut as u64, "site's stack was", "sites' stacks were")
        )));
    }
    if s.mode == "kernel" {
        notes.push(Note::caveat(
            "allocator calls: not traced (--mode kernel attaches no uprobes): no per-allocation \
             sites and no leaks; the call sites are those of the syscalls and faults"
                .into(),
        ));
    }
    if let Some(note) = leak_check_note(s) {
        notes.push(Note::caveat(note));
    }
    if !t.children_at_attach.is_empty() {
        notes.push(Note::caveat(label::children_at_attach(
            t.pid,
            &t.children_at_attach,
        )));
    }
    if e.child_processes > 0 {
        let (n, verb) = match e.child_processes {
            1 => ("1 child process".to_string(), "was"),
            n => (format!("{n} child processes"), "were"),
        };
        notes.push(Note::caveat(format!(
            "the process created {n}, which {verb} not traced (use --follow): only pid {} itself \
             is traced",
            t.pid
        )));
    }
    notes
}

/// Why the leaks are not classified, when a leak check could not run where it would have.
fn leak_check_note(s: &Summary) -> Option<String> {
    let u = &s.user;
    if s.mode == "kernel" || u.leak_check.is_some() {
        return None;
    }
    if let Some(sampling) = &u.sampling {
        return Some(format!(
            "no leak check: --sample {} sees one block in many, and a check must know every \
             live block (a pointer into an unseen block proves nothing); the leaks are the \
             sampled blocks live at the end, scaled",
            label::human_bytes(sampling.mean_bytes)
        ));
    }
    if let Some(signal) = s.target.signal.filter(|_| !u.leaks.is_empty()) {
        return Some(format!(
            "no leak check: pid {} was killed by signal {signal} before it could be held at \
             its exit; the leaks are the blocks live at the end, lost or not",
            s.target.pid
        ));
    }
    None
}

/// Why stacks could not be taken, counted by cause.
fn lost_stacks(e: &EventCounts) -> String {
    let mut why = Vec::new();
    if e.stack_collisions > 0 {
        why.push(format!(
            "{} hashed to the slot of another stack in the stack map",
            e.stack_collisions
        ));
    }
    if e.stack_map_full > 0 {
        why.push(format!("{} found the stack map full", e.stack_map_full));
    }
    let walk = e
        .stacks_lost
        .saturating_sub(e.stack_collisions)
        .saturating_sub(e.stack_map_full);
    if walk > 0 {
        why.push(format!("{walk} could not be walked"));
    }
    let hint = if e.stack_collisions > 0 || e.stack_map_full > 0 {
        "; a larger --max-stacks makes both rarer"
    } else {
        ""
    };
    format!(
        "{} stacks (of allocations, syscalls or faults) could not be taken: {}{hint}",
        e.stacks_lost,
        why.join(", ")
    )
}
