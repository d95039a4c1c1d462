//! Generates the OTLP trace messages and the TraceService client/server from the subset
//! of the OpenTelemetry protos in `proto/`, with the pure-Rust `protox` compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = ["opentelemetry/proto/collector/trace/v1/trace_service.proto"];
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
