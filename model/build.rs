//! Generates the protobuf and gRPC code from `proto/` with the pure-Rust `protox`
//! compiler, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../proto");
    let files = [
        "meshwork/config/v1/config.proto",
        "istio/v1/auth/ca.proto",
        // OTLP traces: the waypoint exports spans, the local mesh's receiver takes them.
        "opentelemetry/proto/collector/trace/v1/trace_service.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .btree_map(".")
        // Debug views (admin endpoints, CLI) print the model as JSON.
        .type_attribute(
            ".meshwork",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"camelCase\")]",
        )
        // Added after the first release: JSON written before it has no such field.
        .field_attribute("meshwork.config.v1.Workload.compact", "#[serde(default)]")
        .compile_fds(fds)?;
    Ok(())
}
