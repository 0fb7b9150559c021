//! Compiles `proto/` without a system `protoc` (protox) and writes the descriptor set that the
//! reflection service serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build 0.14 emits no rerun-if-changed of its own: without this every build
    // would regenerate the code.
    println!("cargo:rerun-if-changed=proto");

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
