//! TODO: the `cli` module.
