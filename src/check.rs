//! TODO: the `check` module.
