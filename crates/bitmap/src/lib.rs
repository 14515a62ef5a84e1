//! Dirty bitmap (being written).
