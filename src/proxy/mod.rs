//! The data plane: listeners, request routing against the live snapshot, and upstream pools.
