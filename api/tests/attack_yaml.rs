//! Hostile configuration: YAML bombs (billion laughs through anchors and aliases, deep
//! nesting) and regex bombs (patterns whose compiled form would be huge, or nested past
//! any sane depth) in a file the control plane reads. Each must be refused with an error
//! naming the file, document and cause, in bounded time, while the valid documents of the
//! same file still apply.

use std::path::Path;
use std::time::{Duration, Instant};

use meshwork_api::{ApiError, Change, Kind, ObjectKey, Store};

const NS: &str = "production";

/// Generous bound for a refusal: an unguarded parser needs hours (or all memory) here.
const BOUND: Duration = Duration::from_secs(10);

const GOOD: &str =
    "apiVersion: v1\nkind: Service\nmetadata:\n  name: keep-me\nspec:\n  ports:\n  - port: 80\n";

/// Applies a file holding a good Service and then `bad`; returns the errors after checking
/// that the Service applied and that the whole thing took less than [`BOUND`].
fn apply_with_good(bad: &str) -> Vec<ApiError> {
    let mut store = Store::new();
    let text = format!("{GOOD}---\n{bad}");
    let start = Instant::now();
    let changes = store.apply_file(Path::new("cfg/attack.yaml"), &text, NS);
    let took = start.elapsed();
    assert!(took < BOUND, "took {took:?}");
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::Upsert(o) if o.name == "keep-me")),
        "the valid document must still apply: {changes:?}"
    );
    assert!(store
        .get(&ObjectKey::new(Kind::Service, NS, "keep-me"))
        .is_some());
    store.errors()
}

fn assert_one_error(errors: &[ApiError], message_part: &str) -> ApiError {
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = errors[0].clone();
    assert_eq!(e.file, Path::new("cfg/attack.yaml"));
    assert_eq!(e.document, 2, "{e}");
    assert!(e.message.contains(message_part), "{e}");
    e
}

/// The classic billion laughs: nine levels of anchors, each referring ten times to the one
/// below, 10^9 strings once expanded.
#[test]
fn attack_billion_laughs_is_refused() {
    let mut bomb = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: lol\nspec:\n  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for level in 1..=9 {
        let below = level - 1;
        let refs = vec![format!("*a{below}"); 10].join(",");
        bomb.push_str(&format!("  a{level}: &a{level} [{refs}]\n"));
    }
    bomb.push_str("  hosts: *a9\n");
    let errors = apply_with_good(&bomb);
    assert_one_error(&errors, "repetition limit exceeded");
}

/// Fewer levels but wider fan-out, aimed at a map the parser must build.
#[test]
fn attack_alias_fan_out_in_maps_is_refused() {
    let mut bomb = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fan\ndata:\n  x: &m0 {k0: v, k1: v, k2: v, k3: v}\n",
    );
    for level in 1..=6 {
        let below = level - 1;
        let entries: Vec<_> = (0..40).map(|i| format!("k{i}: *m{below}")).collect();
        bomb.push_str(&format!(
            "  m{level}: &m{level} {{{}}}\n",
            entries.join(", ")
        ));
    }
    let errors = apply_with_good(&bomb);
    assert_one_error(&errors, "repetition limit exceeded");
}

/// 100 000 nested flow sequences (a 200 kB file that kept the YAML parser busy for most of
/// a minute before the pre-scan), 500 (under the pre-scan's limit, over the parser's), and
/// 1000 nested block maps.
#[test]
fn attack_deep_nesting_is_refused() {
    let flow = |depth: usize| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: deep\nspec:\n  ports: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    let errors = apply_with_good(&flow(100_000));
    assert_one_error(&errors, "collections nested deeper than 1000 levels");
    let errors = apply_with_good(&flow(500));
    assert_one_error(&errors, "recursion limit exceeded");

    let mut block = String::from("apiVersion: v1\nkind: Service\nmetadata:\n  name: deep\nspec:\n");
    for level in 0..1000 {
        block.push_str(&" ".repeat(2 + level));
        block.push_str("a:\n");
    }
    let errors = apply_with_good(&block);
    assert_one_error(&errors, "recursion limit exceeded");
}

fn vs_with_header_regex(name: &str, regex: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [order-service]\n  http:\n  - match:\n    - headers:\n        x-user:\n          regex: {}\n    route:\n    - destination:\n        host: order-service\n",
        serde_json::to_string(regex).unwrap()
    )
}

/// Patterns whose compiled program would be enormous (counted repetitions of counted
/// repetitions, of large Unicode classes), patterns nested deeper than the parser's limit,
/// and a pattern that compiles under the regex crate's default 10 MiB limit but not under
/// the waypoint's 1 MiB (accepted before, it made every waypoint NACK the snapshot):
/// refused at the field.
#[test]
fn attack_regex_bombs_are_refused_with_the_field() {
    let nested = format!("{}a{}", "(".repeat(1000), ")".repeat(1000));
    let cases = [
        ("a{1000}{1000}".to_string(), "size limit"),
        (r"(\w{100}){100}".to_string(), "size limit"),
        (r"[\p{L}\p{N}]{5000}".to_string(), "size limit"),
        (nested, "nest"),
        ("a{100000}".to_string(), "size limit"),
    ];
    for (regex, part) in cases {
        let errors = apply_with_good(&vs_with_header_regex("bomb", &regex));
        let e = assert_one_error(&errors, "regex parse error");
        assert_eq!(e.field, "spec.http[0].match[0].headers.x-user.regex", "{e}");
        assert!(
            e.message.to_lowercase().contains(part),
            "{part:?} not in {e}"
        );
        assert!(
            e.message.len() < 4096,
            "the error repeats the bomb: {} bytes",
            e.message.len()
        );
    }
}

/// Patterns that make a backtracking engine exponential are fine here: the regex engine is
/// linear-time (the waypoint's attack_regex test proves matching stays fast).
#[test]
fn backtracking_patterns_are_accepted() {
    for regex in [
        "(a+)+$",
        "(a|aa)+b",
        "(.*a){20}",
        "^(([a-z])+.)+[A-Z]([a-z])+$",
    ] {
        let errors = apply_with_good(&vs_with_header_regex("evil", regex));
        assert!(errors.is_empty(), "{regex}: {errors:#?}");
    }
}
