use std::process::ExitCode;

use std::path::Path;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tracer::{
    cli::{Action, Cli},
    launch::LaunchError,
    output::{self, Outputs},
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
    .with_context(|| format!("reading {}", recording.display()))?;
    bar.finish_and_clear();
    let failed = output::write_all(&summary, &outputs);
    Ok(output::exit_status(if failed > 0 { 1 } else { 0 }, 0))
}

fn main() -> ExitCode {
    let (cli, top) = Cli::parse_with_top(std::env::args_os());
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
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
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("tracer: error: {}", visible(&format!("{e:#}")));
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
