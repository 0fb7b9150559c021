use std::process::ExitCode;

use secret_rotator::{
    app,
    config::{Cli, Command},
    telemetry,
};

fn main() -> ExitCode {
    let Cli { command } = match Cli::from_args() {
        Ok(cli) => cli,
        Err(e) if secret_rotator::cli::wants_json(&std::env::args().collect::<Vec<_>>()) => {
            return ExitCode::from(secret_rotator::cli::usage_error(&e));
        }
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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    // Inside the runtime: the span exporter's connection is spawned on it.
    let telemetry = match runtime.block_on(async { telemetry::init(&config.log) }) {
        Ok(telemetry) => telemetry,
        Err(e) => return fail(&e),
    };
    let served = runtime.block_on(app::run(config, app::shutdown_signal()));
    telemetry.shutdown();
    match served {
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
