//! hadisk on-disk metadata (being written).
