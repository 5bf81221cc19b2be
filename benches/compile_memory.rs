//! Peak heap memory of one compile of 10,000 Ingresses, measured with dhat's allocator.
//!
//! Heap bytes allocated by the compile itself are counted from the moment the profiler
//! starts, after the store is built, so the store's own size is reported separately. Prints one
//! JSON object, which bench/run.sh reads:
//! `cargo bench --bench compile_memory`.

#[allow(dead_code, reason = "this benchmark uses only the full cluster")]
mod fixtures;

use std::hint::black_box;

use gangway::compile::{CompileOptions, compile};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Ingresses in the measured cluster.
const INGRESSES: usize = 10_000;

fn main() {
    let options = CompileOptions::default();

    let store_profiler = dhat::Profiler::builder().testing().build();
    let store = fixtures::cluster(INGRESSES);
    let store_bytes = dhat::HeapStats::get().curr_bytes;
    drop(store_profiler);

    let compile_profiler = dhat::Profiler::builder().testing().build();
    let (snapshot, report) = compile(black_box(&store), &options);
    let stats = dhat::HeapStats::get();
    drop(compile_profiler);

    fixtures::assert_complete(&snapshot, &report, INGRESSES);
    println!(
        "{{\"ingresses\": {INGRESSES}, \"store_bytes\": {store_bytes}, \
         \"compile_peak_bytes\": {}, \"snapshot_and_report_bytes\": {}, \
         \"compile_allocations\": {}}}",
        stats.max_bytes, stats.curr_bytes, stats.total_blocks
    );
}
