//! Re-applying a file parses only the documents that changed, with identical results.

use std::path::Path;

use meshwork_api::{Change, Kind, ObjectKey, Store};

fn svc(name: &str, port: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: {port}\n")
}

#[test]
fn only_changed_documents_are_parsed() {
    let mut store = Store::new();
    let p = Path::new("big.yaml");
    let docs: Vec<String> = (0..50).map(|i| svc(&format!("s{i}"), "80")).collect();
    assert_eq!(store.apply_file(p, &docs.join("---\n"), "ns").len(), 50);
    assert_eq!(store.parsed_documents(), 50);
    // Unchanged: nothing parsed, nothing changed.
    assert!(store.apply_file(p, &docs.join("---\n"), "ns").is_empty());
    assert_eq!(store.parsed_documents(), 50);
    // One edit: one document parsed, one change.
    let mut edited = docs.clone();
    edited[7] = svc("s7", "81");
    let changes = store.apply_file(p, &edited.join("---\n"), "ns");
    assert_eq!(changes.len(), 1);
    assert!(matches!(&changes[0], Change::Upsert(o) if o.name == "s7"));
    assert_eq!(store.parsed_documents(), 51);
    // Another default namespace: everything is parsed again (and moves).
    let changes = store.apply_file(p, &edited.join("---\n"), "other");
    assert_eq!(changes.len(), 100);
    assert_eq!(store.parsed_documents(), 101);
}

#[test]
fn reused_errors_follow_their_document() {
    let mut store = Store::new();
    let p = Path::new("f.yaml");
    let bad = svc("bad", "eighty");
    let text = format!("{}---\n{bad}", svc("a", "80"));
    store.apply_file(p, &text, "ns");
    let e = store.errors();
    assert_eq!((e[0].document, e[0].line), (2, 9));
    // Insert a document above: the unchanged bad document is reused, its error moves.
    let text = format!("{}---\n{}---\n{bad}", svc("z", "80"), svc("a", "80"));
    let changes = store.apply_file(p, &text, "ns");
    assert_eq!(changes.len(), 1);
    let e = store.errors();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].document, e[0].line), (3, 17), "{}", e[0]);
    assert_eq!(e[0].field, "spec.ports[0].port");
    assert!(store
        .get(&ObjectKey::new(Kind::Service, "ns", "z"))
        .is_some());
}

#[test]
fn list_documents_are_reused_whole() {
    let mut store = Store::new();
    let p = Path::new("l.yaml");
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n";
    let text = format!("{list}---\n{}", svc("s", "80"));
    assert_eq!(store.apply_file(p, &text, "ns").len(), 3);
    let edited = format!("{list}---\n{}", svc("s", "90"));
    assert_eq!(store.apply_file(p, &edited, "ns").len(), 1);
    assert_eq!(store.len(), 3);
    assert_eq!(store.parsed_documents(), 3);
}
