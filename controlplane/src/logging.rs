//! Log setup shared by the binaries of this crate: `RUST_LOG` filter, plain or JSON lines
//! on stderr, written by a background thread (`meshwork_runtime`).

use meshwork_runtime::log::{Format, Logging, Stream};

/// Installs logging; keep the result until the process ends (dropping it writes the
/// lines still queued).
pub fn init(format: &str) -> std::io::Result<Logging> {
    let format = if format == "json" {
        Format::Json
    } else {
        Format::Plain
    };
    meshwork_runtime::log::init(format, Stream::Stderr, "controlplane-log")
}
