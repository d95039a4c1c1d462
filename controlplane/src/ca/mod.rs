//! Mesh CA: root of trust, CSR signing, node authorization.
