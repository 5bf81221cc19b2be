//! TODO: the `run` module.
