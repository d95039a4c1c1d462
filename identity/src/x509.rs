//! Reading the parts of a leaf certificate the mesh cares about.

use std::time::{Duration, SystemTime};

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a leaf certificate cannot be read as a mesh workload certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    #[error("not a parsable X.509 certificate: {0}")]
    Parse(String),
    #[error("invalid subjectAltName extension: {0}")]
    SubjectAltName(String),
    #[error("no URI subject alternative name (a SPIFFE id is required)")]
    NoUriSan,
    #[error("{} URI subject alternative names ({}), expected exactly one SPIFFE id", .0.len(), .0.join(", "))]
    SeveralUriSans(Vec<String>),
}

/// The identity-relevant fields of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeafInfo {
    pub uri: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Lowercase hex, no separators.
    pub serial: String,
}

pub(crate) fn leaf_spiffe_id(der: &[u8]) -> Result<LeafInfo, LeafError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| LeafError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| LeafError::SubjectAltName(e.to_string()))?;
    let mut uris: Vec<String> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(uri.to_string()),
            _ => None,
        })
        .collect();
    let uri = match uris.len() {
        0 => return Err(LeafError::NoUriSan),
        1 => uris.remove(0),
        _ => return Err(LeafError::SeveralUriSans(uris)),
    };
    let validity = cert.validity();
    Ok(LeafInfo {
        uri,
        not_before: to_system_time(validity.not_before.timestamp()),
        not_after: to_system_time(validity.not_after.timestamp()),
        serial: cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;
    use rcgen::SanType;

    #[test]
    fn rejects_several_uris() {
        let ca = TestCa::new("td");
        let (_, leaf) = ca.issue_raw(vec![
            SanType::URI("spiffe://td/ns/a/sa/a".try_into().unwrap()),
            SanType::URI("spiffe://td/ns/a/sa/b".try_into().unwrap()),
        ]);
        let err = leaf_spiffe_id(&leaf).unwrap_err();
        assert!(
            matches!(err, LeafError::SeveralUriSans(ref u) if u.len() == 2),
            "{err}"
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(leaf_spiffe_id(b"nope"), Err(LeafError::Parse(_))));
    }
}
