//! Compiles proto/stoke/v1/*.proto with protox (pure Rust: no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/stoke/v1/common.proto",
        "proto/stoke/v1/worker.proto",
        "proto/stoke/v1/admin.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("stoke_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Messages that carry secret values get a Debug of their own (lib.rs)
    // that prints names only. Type names (`prost::Name`) let the CLI find
    // each message's descriptor and print any response as JSON without
    // per-type code.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        .skip_debug([
            ".stoke.v1.FunctionSpec",
            ".stoke.v1.SetEnvRequest",
            ".stoke.v1.RegistryLoginRequest",
        ])
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
