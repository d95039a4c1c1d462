//! Reading untrusted YAML: the guards every reader (objects, the mesh ConfigMap) shares.

/// Deepest flow-collection nesting a document may have. The YAML parser refuses more than
/// 128 levels anyway, but only after scanning the whole document in time quadratic in the
/// depth (100 000 nested `[` take most of a minute); this linear pre-scan refuses first.
pub(crate) const MAX_NESTING: usize = 1000;

/// Whether `[`/`{` ever stand more than `max` deep. Brackets inside scalars count too, so
/// this over-estimates; no real document has a thousand unclosed brackets.
pub(crate) fn nested_deeper_than(text: &str, max: usize) -> bool {
    let mut depth = 0usize;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Formats a serde_ignored path as `spec.http[0].foo`.
pub(crate) fn ignored_path(p: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match p {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_prescan_counts_flow_brackets() {
        assert!(!nested_deeper_than("a: [[{b: c}]]", 3));
        assert!(nested_deeper_than("a: [[{b: [c]}]]", 3));
        // Closing brackets bring the depth back down; stray ones do not go below zero.
        assert!(!nested_deeper_than("]]] [[] ] [[] ]", 2));
        assert!(nested_deeper_than(&"[".repeat(1001), MAX_NESTING));
    }
}
