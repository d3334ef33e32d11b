//! Generates the brainfit.v1 gRPC code from /proto. protoc comes from `protoc-bin-vendored`
//! (no system install); `$PROTOC` overrides it.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let proto = root.join("brainfit/v1/brainfit.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(config, &[proto], &[root])?;
    Ok(())
}
