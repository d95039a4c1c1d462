//! PeerAuthentication rules.

use super::{syntax, Problems};
use crate::security::PeerAuthentication;

pub(super) fn peer_authentication(pa: &PeerAuthentication, p: &mut Problems) {
    syntax::workload_selector(p, "spec.selector", pa.selector.as_ref());
    if !pa.port_level_mtls.is_empty()
        && pa
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    {
        p.add(
            "spec.portLevelMtls",
            "port level mTLS settings require a workload selector",
        );
    }
}
