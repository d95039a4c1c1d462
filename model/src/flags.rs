//! The flags both proxies take to reach the control plane and its CA, and the endpoints
//! they make ([`ControlPlane`]): one definition, so the two proxies cannot drift apart.

use std::path::PathBuf;

use crate::endpoint::{ControlPlane, EndpointError};

/// A flag whose endpoint does not validate.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {source}")]
pub struct FlagError {
    pub flag: &'static str,
    #[source]
    pub source: EndpointError,
}

/// `--control-plane`, `--control-plane-root`, `--control-plane-server-name`, `--ca-address`.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct ControlPlaneFlags {
    /// Control plane config stream (MeshConfig.Stream).
    #[cfg_attr(
        feature = "clap",
        arg(
            long,
            env = "MESHWORK_CONTROL_PLANE",
            default_value = "http://127.0.0.1:15010"
        )
    )]
    pub control_plane: String,
    /// PEM file of the mesh roots the control plane's TLS certificate (https://) must chain
    /// to, e.g. the `meshwork-ca-root-cert` ConfigMap's `root-cert.pem`; re-read at each
    /// connection, so a rotated root is picked up.
    #[cfg_attr(feature = "clap", arg(long, env = "MESHWORK_CONTROL_PLANE_ROOT"))]
    pub control_plane_root: Option<PathBuf>,
    /// Verify the control plane's certificate for this name instead of the address's host.
    #[cfg_attr(
        feature = "clap",
        arg(long, env = "MESHWORK_CONTROL_PLANE_SERVER_NAME")
    )]
    pub control_plane_server_name: Option<String>,
    /// CA endpoint (IstioCertificateService); defaults to --control-plane.
    #[cfg_attr(feature = "clap", arg(long, env = "MESHWORK_CA_ADDRESS"))]
    pub ca_address: Option<String>,
}

impl ControlPlaneFlags {
    /// The config stream's address, with the control plane's TLS roots.
    pub fn config_endpoint(&self) -> Result<ControlPlane, FlagError> {
        self.endpoint(&self.control_plane, "--control-plane")
    }

    /// The CA's address (`--ca-address`, else the control plane's).
    pub fn ca_endpoint(&self) -> Result<ControlPlane, FlagError> {
        match &self.ca_address {
            Some(ca) => self.endpoint(ca, "--ca-address"),
            None => self.config_endpoint(),
        }
    }

    fn endpoint(&self, url: &str, flag: &'static str) -> Result<ControlPlane, FlagError> {
        let cp = ControlPlane::new(url)
            .with_roots_file(self.control_plane_root.clone())
            .with_server_name(self.control_plane_server_name.clone());
        cp.validate().map_err(|source| FlagError { flag, source })?;
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_defaults_to_the_control_plane_and_bad_urls_name_their_flag() {
        let flags = ControlPlaneFlags {
            control_plane: "http://127.0.0.1:15010".into(),
            ..Default::default()
        };
        assert_eq!(
            flags.ca_endpoint().unwrap().to_string(),
            flags.config_endpoint().unwrap().to_string()
        );
        let bad = ControlPlaneFlags {
            control_plane: "http://127.0.0.1:15010".into(),
            ca_address: Some("ftp://ca".into()),
            ..Default::default()
        };
        let e = bad.ca_endpoint().unwrap_err();
        assert_eq!(e.flag, "--ca-address", "{e}");
    }
}
