//! Unknown fields (the store's warnings): usually a typo or a field of another API
//! version, silently ignored.

use super::super::context::Context;
use super::super::finding::{resource_label, Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    ctx.store
        .warnings()
        .iter()
        .map(|w| {
            let at = if w.field.is_empty() {
                String::new()
            } else {
                format!("{}: ", w.field)
            };
            Finding::new(
                Severity::Warning,
                "unknown-field",
                resource_label(&w.kind, &w.namespace, &w.name),
                Some(&w.file),
                format!("{at}{}", w.message),
                format!("remove `{}` or correct its spelling/indentation", w.field),
            )
        })
        .collect()
}
