//! Incremental translation of typed resources into the mesh model.
