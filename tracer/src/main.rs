use std::process::ExitCode;

use std::path::Path;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tracer::{
    cli::{Action, Cli, DiffArgs},
    output::{self, Outputs},
    process::launch::LaunchError,
    report::visible,
};

/// `tracer report`: replays a recording, with a progress bar when stderr is a terminal.
fn report(recording: &Path, outputs: &Outputs) -> anyhow::Result<i32> {
    // Destinations first: a bad one fails now, not after a long replay.
    let (outputs, _, _) = outputs.check(None, None)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message("replaying");
    let summary = tracer::replay::replay(recording, |done, total| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
    })
    .map_err(|e| match e {
        // It names the file already.
        tracer::record::RecordError::Io { .. } | tracer::record::RecordError::NotARecording(_) => {
            anyhow::Error::from(e)
        }
        e => anyhow::Error::from(e).context(format!("reading {}", recording.display())),
    })?;
    bar.finish_and_clear();
    if let Some((at, len)) = summary.events.recording_ends_early {
        // Said even with -q: every number in the reports is short of the run's.
        eprintln!(
            "tracer: warning: {} ends before its finish (tracer was killed?): reporting on its \
             first {at} of {len} bytes, without stacks",
            visible(&recording.display().to_string())
        );
    }
    let failed = output::write_all(&summary, &outputs);
    Ok(output::exit_status(if failed > 0 { 1 } else { 0 }, 0))
}

/// `tracer diff`: the comparison on stderr and in the files asked for; status 3 when a
/// `--fail-if` condition holds.
fn diff(args: &DiffArgs) -> anyhow::Result<i32> {
    let (before, after, gates, quiet) = (&args.before, &args.after, &args.fail_if, args.quiet);
    let (json, html) = (args.json.as_deref(), args.html.as_deref());
    use tracer::{diff, output::dest};
    let check = |option: &str, p: Option<&Path>| {
        p.map(|p| dest::check_file(p, false))
            .transpose()
            .with_context(|| format!("--{option}"))
    };
    let (json, html) = (check("json", json)?, check("html", html)?);
    let d = diff::compare(&diff::load(before)?, &diff::load(after)?, gates)?;
    if !quiet {
        diff::render::text(&d, std::io::stderr().lock())?;
    }
    let mut failed = 0;
    if let Some(j) = &json {
        failed += usize::from(
            dest::write_to(j, |out| {
                serde_json::to_writer_pretty(&mut *out, &d)?;
                Ok(out.write_all(b"\n")?)
            })
            .map_err(|e| eprintln!("tracer: error: {}", output::with_causes(&e)))
            .is_err(),
        );
    }
    if let Some(h) = &html {
        failed += usize::from(
            dest::write_to(h, |out| Ok(diff::render::html(&d, out)?))
                .map_err(|e| eprintln!("tracer: error: {}", output::with_causes(&e)))
                .is_err(),
        );
    }
    if quiet {
        for g in d.gates.iter().filter(|g| g.failed) {
            eprintln!("tracer: --fail-if FAILED: {}", visible(&g.message));
        }
    }
    Ok(if d.gates.iter().any(|g| g.failed) {
        diff::GATE_FAILED
    } else if failed > 0 {
        output::OUTPUT_FAILED
    } else {
        0
    })
}

fn main() -> ExitCode {
    // SIGUSR1 asks a run for a snapshot; one that comes before the run's handler is in (or to
    // `tracer report`) must not kill tracer, as its default action would.
    // SAFETY: ignoring a signal has no preconditions.
    unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == tracer::process::keeper::ARG)
    {
        return ExitCode::from(tracer::process::keeper::run(&args[2..]) as u8);
    }
    let (cli, top) = Cli::parse_with_top(args);
    // -v: the phases and their times; -vv: diagnostics; -vvv: the eBPF loader's own logs too.
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let loader = if cli.verbose >= 3 {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    };
    env_logger::Builder::new()
        .filter_level(level)
        .filter_module("aya", loader)
        .filter_module("aya_obj", loader)
        .filter_module("aya_log", loader)
        .format(|buf, record| {
            use std::io::Write as _;
            // Paths and names in messages may come from the traced program.
            let text = visible(&record.args().to_string()).into_owned();
            writeln!(
                buf,
                "tracer: {}: {text}",
                record.level().as_str().to_lowercase()
            )
        })
        .init();
    let action = match cli.into_action() {
        Ok(Action::Run(mut cfg)) => {
            cfg.top = top;
            Action::Run(cfg)
        }
        Ok(action) => action,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tracer: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match action {
        Action::Run(config) => runtime.block_on(tracer::runtime::run(*config)),
        Action::Report { recording, outputs } => report(&recording, &outputs),
        Action::Diff(args) => diff(&args),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            // Each cause once, even where a context already says its cause's words.
            eprintln!("tracer: error: {}", visible(&output::with_causes(&*e)));
            // Like a shell: 127 for a command that is not there, 126 for one that cannot run.
            match e.downcast_ref::<LaunchError>() {
                Some(LaunchError::NotFound(_)) => ExitCode::from(127),
                Some(LaunchError::NotExecutable(_) | LaunchError::Exec { .. }) => {
                    ExitCode::from(126)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}
