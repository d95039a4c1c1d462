//! Compiles the test-only socket-LB emulation (`e2e/socklb-emu`, not a workspace member)
//! for `bpfel-unknown-none` with nightly + bpf-linker, as meshwork-redirect's build script
//! does for the product's programs, and leaves the object in OUT_DIR
//! (`meshwork_e2e::socklb`). `AYA_BUILD_SKIP=1`: an empty object (the tests that need it
//! fail with a message).
use std::path::PathBuf;

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let emu_dir = manifest_dir.join("socklb-emu");
    println!("cargo:rerun-if-changed={}", emu_dir.display());
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    if std::env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        let out =
            PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("meshwork-socklb-emu");
        std::fs::write(&out, b"").expect("write empty BPF object");
        println!("cargo:warning=AYA_BUILD_SKIP set: socket-LB emulation not built");
        return;
    }
    // aya-build runs `cargo build --package …` in the current directory; the BPF crate is
    // its own workspace, so build from there.
    std::env::set_current_dir(&emu_dir).expect("enter e2e/socklb-emu");
    let root = emu_dir.to_str().expect("utf-8 path");
    let package = aya_build::Package {
        name: "meshwork-socklb-emu",
        root_dir: root,
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::default()) {
        panic!(
            "building the socket-LB emulation failed: {e:#}\n\
             (needs nightly with rust-src and bpf-linker 0.10.4: run scripts/install-ebpf-toolchain.sh)"
        );
    }
}
