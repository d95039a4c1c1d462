//! `controlplane token`: its output, redirected to a file, is the token byte for byte (a
//! trailing newline would make the file's content an invalid header value for readers
//! that do not trim).

use std::process::Command;

#[test]
fn token_printed_to_a_pipe_has_no_trailing_newline() {
    let ca_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .arg("--ca-dir")
        .arg(ca_dir.path())
        .args(["token", "--node", "node-a"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(!token.is_empty());
    assert_eq!(token, token.trim(), "{token:?}");
    let tokens = meshwork_controlplane::ca::NodeTokens::open(ca_dir.path()).unwrap();
    assert_eq!(token, tokens.token_for("node-a").unwrap());
}
