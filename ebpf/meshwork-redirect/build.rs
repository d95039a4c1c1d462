//! Compiles the BPF programs (`ebpf/meshwork-ebpf`, not a workspace member) for
//! `bpfel-unknown-none` with nightly + bpf-linker (see scripts/install-ebpf-toolchain.sh)
//! and leaves the object in OUT_DIR for `include_bytes_aligned!`.
use std::path::PathBuf;

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest_dir
        .parent()
        .expect("meshwork-redirect lives in ebpf/")
        .join("meshwork-ebpf");
    let common_dir = manifest_dir
        .parent()
        .expect("ebpf/")
        .join("meshwork-ebpf-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    // aya-build runs `cargo build --package meshwork-ebpf` in the current directory; the BPF
    // crate is its own workspace, so build from there.
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        // An empty object: the crate compiles, Redirect::load reports BpfNotBuilt.
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("meshwork-ebpf");
        std::fs::write(&out, b"").expect("write empty BPF object");
        println!("cargo:warning=AYA_BUILD_SKIP set: BPF programs not built");
        return;
    }
    std::env::set_current_dir(&ebpf_dir).expect("enter ebpf/meshwork-ebpf");
    let root = ebpf_dir.to_str().expect("utf-8 path");
    let package = aya_build::Package {
        name: "meshwork-ebpf",
        root_dir: root,
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::default()) {
        panic!(
            "building the BPF programs failed: {e:#}\n\
             (needs nightly with rust-src and bpf-linker 0.10.4: run scripts/install-ebpf-toolchain.sh)"
        );
    }
}
