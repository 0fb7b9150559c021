use std::process::ExitCode;

use secret_rotator::{
    app,
    config::{Cli, Command},
    telemetry,
};

fn main() -> ExitCode {
    let Cli { command } = match Cli::from_args() {
        Ok(cli) => cli,
        Err(e) => return fail(&e),
    };
    let Command::Serve(args) = command;
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => return fail(&e.to_string()),
    };
    if let Err(e) = telemetry::init(&config.log) {
        return fail(&e);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(app::run(config, app::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("secret-rotator: {message}");
    ExitCode::from(2)
}
