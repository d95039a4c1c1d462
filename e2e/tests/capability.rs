//! The capability probe (root): it loads the redirection in a throw-away node and leaves
//! no namespace or pin behind. Its own test binary, so no other test's namespaces share
//! this process's run-id prefix.
use meshwork_e2e::capability::probe_redirect;
use meshwork_e2e::netns::list_netns;
use meshwork_e2e::BPF_PIN_ROOT;

#[test]
fn probe_loads_the_redirection_and_cleans_up() {
    probe_redirect().expect("CI runs as root on a BPF/TCX-capable kernel");
    let prefix = format!("mw{:x}r", std::process::id());
    let left: Vec<String> = list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let pins: Vec<String> = std::fs::read_dir(BPF_PIN_ROOT)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(pins.is_empty(), "pins left: {pins:?}");
}
