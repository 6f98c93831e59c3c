use std::process::ExitCode;

use clap::Parser;
use tracer::{cli::Cli, launch::LaunchError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .init();
    let config = match cli.into_config() {
        Ok(config) => config,
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
    match runtime.block_on(tracer::runtime::run(config)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("tracer: error: {e:#}");
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
