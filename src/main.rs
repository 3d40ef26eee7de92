//! The `intercomd` binary: flags, logging, run. Everything else lives in
//! the library (`daemon::run` is the process, `lib.rs` has the map).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use intercomd::config::Config;
use log::LevelFilter;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err((help, 0)) => {
            println!("{help}");
            return ExitCode::SUCCESS;
        }
        Err((message, code)) => {
            eprintln!("{message}");
            return ExitCode::from(code as u8);
        }
    };
    // Our own lines at the chosen level; the libraries' only when they warn,
    // so `--log-level debug` shows the daemon's decisions, not every poll.
    let logger = simple_logger::SimpleLogger::new()
        .with_level(LevelFilter::Warn.min(config.log_level))
        .with_module_level("intercomd", config.log_level);
    if let Err(err) = logger.init() {
        eprintln!("error: cannot start logging: {err}");
        return ExitCode::FAILURE;
    }
    intercomd::daemon::run(config)
}
