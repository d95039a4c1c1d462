//! Validation errors of the store (bad fields, route weights not summing to 100,
//! duplicates): resources the control plane rejects.

use meshwork_api::ApiError;

use super::super::context::Context;
use super::super::finding::{resource_label, Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    ctx.store.errors().iter().map(finding).collect()
}

fn finding(e: &ApiError) -> Finding {
    let at = if e.field.is_empty() {
        String::new()
    } else {
        format!("{}: ", e.field)
    };
    let line = if e.line > 0 {
        format!(" (line {})", e.line)
    } else {
        String::new()
    };
    let fix = if e.message.contains("weight") {
        "make the weights of the route's destinations add up to 100".to_string()
    } else if e.message.starts_with("duplicate") {
        "rename one of the two definitions or delete one".to_string()
    } else {
        format!(
            "correct {} as the message says",
            if e.field.is_empty() {
                "the document"
            } else {
                &e.field
            }
        )
    };
    Finding::new(
        Severity::Error,
        "invalid-resource",
        resource_label(&e.kind, &e.namespace, &e.name),
        Some(&e.file),
        format!(
            "{at}{}{line}; the control plane rejects this resource",
            e.message
        ),
        fix,
    )
}
