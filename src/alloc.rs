//! Calls into jemalloc, the allocator of the `gangway` binary (src/main.rs).
//!
//! jemalloc gives each thread a cache of freed objects, up to 200 of each small size class,
//! so that most allocations take no lock. A cache shrinks only when its thread allocates
//! again. A worker that served a burst of requests and then went idle would keep about
//! 1 MiB in it (docs/benchmarks.md, case 4), and so would the thread that compiled the last
//! snapshot. [`release_thread_cache`] hands those objects back to the arena, whose pages
//! jemalloc's background thread then returns to the kernel.

use std::ptr;

/// Returns the objects in the calling thread's jemalloc cache to the shared arena.
///
/// The thread's next allocations refill the cache from the arena. Returns `false` when the
/// thread has no cache, because caches are turned off (`_RJEM_MALLOC_CONF=tcache:false`).
pub fn release_thread_cache() -> bool {
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
    fn release_thread_cache_after_malloc() {
        // The test binary allocates with the system allocator, so the thread gets a jemalloc
        // cache only by calling jemalloc itself.
        std::thread::spawn(|| {
            // SAFETY: a 4 KiB allocation, freed once, by the allocator that made it.
            unsafe {
                let object = tikv_jemalloc_sys::malloc(4096);
                assert!(!object.is_null());
                tikv_jemalloc_sys::free(object);
            }
            assert!(release_thread_cache());
            // Once more, with nothing cached: still a thread with a cache.
            assert!(release_thread_cache());
        })
        .join()
        .unwrap();
    }
}
