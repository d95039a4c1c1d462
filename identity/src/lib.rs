//! SPIFFE identities, certificates and rustls configuration.
