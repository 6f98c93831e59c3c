//! `tracer-fuzz`: feeds generated recordings to `tracer report`'s reader, replay and renderers,
//! in process, and reports any panic. `cargo xtask fuzz` runs it (two workers, a million
//! inputs) and checks that none panicked, aborted, or grew past 200 MiB of RSS.
//!
//! Inputs are generated, not mutated from a corpus: each is a whole recording built from its
//! index (`--seed`, `--start`), so any one can be rebuilt and saved (`--save DIR`) to replay
//! with `tracer report`. Checksums are computed, so inputs reach the decoders rather than stop
//! at the first checksum.

mod generate;

use std::{
    io::{self, Cursor},
    panic,
    path::PathBuf,
    time::Instant,
};

use tracer::{
    record::Reader,
    replay::replay_from,
    report::{Format, Renderer},
};

struct Args {
    seed: u64,
    start: u64,
    count: u64,
    /// Save every input here before running it (to find one that aborts), or only the
    /// inputs that panicked when absent.
    save_each: Option<PathBuf>,
    crashes: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seed: 1,
        start: 0,
        count: 100_000,
        save_each: None,
        crashes: PathBuf::from("target/fuzz"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{v} is not a number"));
        match flag.as_str() {
            "--seed" => args.seed = num(value()?)?,
            "--start" => args.start = num(value()?)?,
            "--count" => args.count = num(value()?)?,
            "--save-each" => args.save_each = Some(value()?.into()),
            "--crashes" => args.crashes = value()?.into(),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

/// Replays one input and renders what it gives; `all` renders it in every format.
fn check(bytes: &[u8], all: bool) -> bool {
    let Ok(reader) = Reader::new(Cursor::new(bytes), "fuzz".as_ref()) else {
        return false;
    };
    let Ok(summary) = replay_from(reader, |_, _| {}) else {
        return false;
    };
    // The cheap ones on every input, every format of the registry on the `all` ones.
    for format in Format::ALL {
        if !all && !matches!(format, Format::Text | Format::Json) {
            continue;
        }
        match format.spec().renderer {
            Renderer::Stream(render) => render(&summary, &mut io::sink()).unwrap(),
            Renderer::Files(render) => drop(render(&summary).unwrap()),
        }
    }
    true
}

fn max_rss_kib() -> i64 {
    // SAFETY: an all-zero rusage is valid for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tracer-fuzz: {e}");
            std::process::exit(2);
        }
    };
    // Panics are counted and their inputs saved; each place that panics is named once.
    let seen = std::sync::Mutex::new(std::collections::HashSet::new());
    panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map_or_else(|| "?".into(), |l| format!("{}:{}", l.file(), l.line()));
        if seen.lock().unwrap().insert(place.clone()) {
            eprintln!(
                "tracer-fuzz: panic at {place}: {}",
                info.payload_as_str().unwrap_or("?")
            );
            if std::env::var_os("TRACER_FUZZ_BACKTRACE").is_some() {
                eprintln!("{}", std::backtrace::Backtrace::force_capture());
            }
        }
    }));

    let started = Instant::now();
    let (mut panics, mut replayed) = (0u64, 0u64);
    for i in args.start..args.start + args.count {
        let bytes = generate::recording(args.seed, i);
        if let Some(dir) = &args.save_each {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("current.trace"), &bytes).unwrap();
        }
        match panic::catch_unwind(|| check(&bytes, i % 64 == 0)) {
            Ok(ok) => replayed += u64::from(ok),
            Err(_) => {
                panics += 1;
                std::fs::create_dir_all(&args.crashes).unwrap();
                let path = args.crashes.join(format!("crash-{}-{i}.trace", args.seed));
                std::fs::write(&path, &bytes).unwrap();
                eprintln!(
                    "tracer-fuzz: input {i} panicked; saved to {}",
                    path.display()
                );
            }
        }
        if (i + 1) % 10_000 == 0 {
            // Progress, and the last index known good, for the driver.
            println!("progress {}", i + 1);
        }
    }
    println!(
        "done inputs={} replayed={replayed} panics={panics} max_rss_kib={} seconds={:.1}",
        args.count,
        max_rss_kib(),
        started.elapsed().as_secs_f64()
    );
    std::process::exit(i32::from(panics > 0));
}
