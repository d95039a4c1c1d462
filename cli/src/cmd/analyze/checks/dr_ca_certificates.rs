//! Istio's `destinationrule.CaCertificateAnalyzer`: a DestinationRule that originates TLS
//! (`SIMPLE` or `MUTUAL`) without `caCertificates` does not verify the server's
//! certificate.
//!
//! - `tls-no-server-verification` (IST0128 NoServerCertificateVerificationDestinationLevel
//!   for `trafficPolicy.tls`, IST0129 ...PortLevel for `portLevelSettings[].tls`; warning).
//!   As in Istio, a `credentialName` counts as verifying only on a DestinationRule with a
//!   `workloadSelector` (it names a secret of the selected gateway).

use meshwork_api::networking::ClientTlsSettings;
use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

/// The TLS mode when the settings originate TLS without verifying the server.
fn unverified(tls: Option<&ClientTlsSettings>, selector: bool) -> Option<&str> {
    let tls = tls?;
    let mode = tls.mode.as_deref()?;
    if !matches!(mode, "SIMPLE" | "MUTUAL") {
        return None;
    }
    let has_ca = tls
        .ca_certificates
        .as_deref()
        .is_some_and(|c| !c.is_empty());
    let credential = tls
        .credential_name
        .as_deref()
        .is_some_and(|c| !c.is_empty());
    let verified = has_ca || (credential && selector);
    (!verified).then_some(mode)
}

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = &s.object.spec else {
            continue;
        };
        let Some(tp) = &dr.traffic_policy else {
            continue;
        };
        let (name, ns) = (&s.object.name, &s.object.namespace);
        let selector = dr.workload_selector.is_some();
        let finding = |code, field: String, at: String, mode: &str| {
            Finding::new(
                Severity::Warning,
                "tls-no-server-verification",
                Context::label(&s.object),
                Context::file_of(s),
                format!(
                    "DestinationRule {name} in namespace {ns} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {}{at}",
                    dr.host
                ),
                format!("set {field}.caCertificates (or credentialName with a workloadSelector) so that the server's certificate is verified"),
            )
            .with_code(code)
        };
        if let Some(mode) = unverified(tp.tls.as_ref(), selector) {
            out.push(finding(
                "IST0128",
                "spec.trafficPolicy.tls".into(),
                String::new(),
                mode,
            ));
        }
        for (i, p) in tp.port_level_settings.iter().enumerate() {
            if let Some(mode) = unverified(p.tls.as_ref(), selector) {
                let port = p.port.as_ref().map(|p| p.number).unwrap_or_default();
                out.push(finding(
                    "IST0129",
                    format!("spec.trafficPolicy.portLevelSettings[{i}].tls"),
                    format!(" at port number:{port}"),
                    mode,
                ));
            }
        }
    }
    out
}
