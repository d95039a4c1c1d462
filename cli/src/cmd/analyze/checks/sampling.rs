//! Telemetry sampling 100% of requests: every request produces spans (cost).

use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::Telemetry) {
        let Spec::Telemetry(t) = &s.object.spec else {
            continue;
        };
        for (i, tr) in t.tracing.iter().enumerate() {
            let Some(pct) = tr.random_sampling_percentage else {
                continue;
            };
            if pct < 100.0 {
                continue;
            }
            out.push(Finding::new(
                Severity::Warning,
                "full-trace-sampling",
                Context::label(&s.object),
                Context::file_of(s),
                format!("spec.tracing[{i}].randomSamplingPercentage is {pct}: every request is traced, which costs proxy CPU, network and collector storage"),
                "sample a small share (e.g. randomSamplingPercentage: 1.0) and force sampling per request with a `x-b3-sampled: 1` or traceparent flag when needed",
            ));
        }
    }
    out
}
