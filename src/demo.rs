//! TODO: the `demo` module.
