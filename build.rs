//! Compiles `proto/` without a system `protoc` (protox) and writes the descriptor set that the
//! reflection service serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build 0.14 emits no rerun-if-changed of its own: without this every build
    // would regenerate the code.
    println!("cargo:rerun-if-changed=proto");
    commit();

    let protos = [
        "proto/secretrotator/v1/client.proto",
        "proto/secretrotator/v1/rotation.proto",
    ];
    let fds = protox::compile(protos, ["proto"])?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("secretrotator_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        // google.rpc.Status is tonic-types' own type, so tonic's error details work on it.
        .extern_path(".google.rpc", "::tonic_types::pb")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

/// The git commit the build is of, for `secret_rotator_build_info`: `GIT_COMMIT` when
/// set (a container build without `.git`), else `git rev-parse`, else "unknown".
fn commit() {
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
    let commit = env::var("GIT_COMMIT").ok().or_else(|| {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    println!(
        "cargo:rustc-env=GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".to_owned())
    );
}
