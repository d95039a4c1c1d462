//! Authorization policy evaluation.
