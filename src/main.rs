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
    let args = match command {
        Command::Serve(args) => args,
        Command::Operate(operation) => return operate(*operation),
    };
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

/// An operator command: its own small runtime, its exit code.
fn operate(operation: secret_rotator::cli::Operation) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(rt) => ExitCode::from(rt.block_on(secret_rotator::cli::run(operation))),
        Err(e) => fail(&format!("cannot start the runtime: {e}")),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("secret-rotator: {message}");
    ExitCode::from(2)
}
