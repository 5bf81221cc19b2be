//! Calls into jemalloc, the allocator of the `gangway` binary (src/main.rs).
//!
//! jemalloc gives each thread a cache of freed objects, up to 200 of each small size class,
//! so that most allocations take no lock. A cache is trimmed only as its thread allocates
//! and frees. A worker that served a burst of new connections and then went idle kept about
//! 1 MiB in it (docs/benchmarks.md, case 4). A thread that compiled and published a snapshot
//! keeps the garbage of the compile and of the previous snapshot the same way.
//! [`release_thread_cache`] hands those objects back to the arena, whose pages jemalloc's
//! background thread then returns to the kernel.

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

static JEMALLOC_IS_GLOBAL: AtomicBool = AtomicBool::new(false);

/// Records that jemalloc is the process's global allocator, as the binary sets it. Until
/// then [`release_thread_cache`] does nothing, so that programs that link the library with
/// another allocator, such as its tests, do not start jemalloc for nothing.
pub fn mark_jemalloc_global() {
    JEMALLOC_IS_GLOBAL.store(true, Ordering::Relaxed);
}

/// Returns the objects in the calling thread's jemalloc cache to the shared arena, and
/// whether it did. The thread's next allocations refill the cache from the arena.
pub fn release_thread_cache() -> bool {
    JEMALLOC_IS_GLOBAL.load(Ordering::Relaxed) && flush_thread_cache()
}

/// Flushes the calling thread's jemalloc cache. Returns `false` when the thread has no
/// cache, because caches are turned off (`_RJEM_MALLOC_CONF=tcache:false`).
fn flush_thread_cache() -> bool {
    // SAFETY: the name is NUL-terminated. `thread.tcache.flush` neither reads nor writes a
    // value, and jemalloc rejects it unless all value pointers are null and the length is 0.
    let result = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.tcache.flush".as_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            0,
        )
    };
    result == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_thread_cache_succeeds() {
        // jemalloc sets up the thread's cache on the first call. The call fails on a wrong
        // name or wrong arguments, and when `_RJEM_MALLOC_CONF` turns caches off.
        std::thread::spawn(|| {
            assert!(flush_thread_cache());
            assert!(flush_thread_cache());
        })
        .join()
        .unwrap();
    }
}
