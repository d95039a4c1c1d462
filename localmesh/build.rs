//! Generates the OTLP trace messages and the TraceService server (the local mesh's trace
//! receiver) from the OpenTelemetry protos in the repository's `proto/`, with `protox`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let files = ["opentelemetry/proto/collector/trace/v1/trace_service.proto"];
    println!(
        "cargo:rerun-if-changed={}",
        root.join("opentelemetry").display()
    );
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
