//! Compiler benchmarks: a full compile of 1,000 and 10,000 Ingresses, and one changed Ingress
//! applied to a 10,000-Ingress cluster (a copy of the store with the change, then a compile),
//! which is the work a provider does for each edit.
//!
//! Run with `cargo bench --bench compile`. bench/run.sh runs it and reads the medians from
//! `target/criterion/`.

mod fixtures;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gangway::compile::{CompileOptions, compile};
use gangway::store::Store;

/// Cluster sizes of the full-compile benchmark.
const SIZES: [usize; 2] = [1_000, 10_000];

/// Cluster size of the change benchmark.
const CHANGE_SIZE: usize = 10_000;

fn check_compiled(store: &Store, ingresses: usize, options: &CompileOptions) {
    let (snapshot, report) = compile(store, options);
    fixtures::assert_complete(&snapshot, &report, ingresses);
}

fn full_compile(c: &mut Criterion) {
    let options = CompileOptions::default();
    let mut group = c.benchmark_group("compile");
    for size in SIZES {
        let store = fixtures::cluster(size);
        check_compiled(&store, size, &options);
        group.bench_with_input(BenchmarkId::from_parameter(size), &store, |b, store| {
            b.iter(|| compile(black_box(store), &options));
        });
    }
    group.finish();
}

fn one_change(c: &mut Criterion) {
    let options = CompileOptions::default();
    let store = fixtures::cluster(CHANGE_SIZE);
    check_compiled(&store, CHANGE_SIZE, &options);
    let mut group = c.benchmark_group("apply_change");
    group.bench_function(BenchmarkId::from_parameter(CHANGE_SIZE), |b| {
        let mut index = 0;
        b.iter(|| {
            // A different Ingress each time, so no iteration reuses the previous one's work.
            index = (index + 1) % CHANGE_SIZE;
            let changed = fixtures::with_changed_ingress(black_box(&store), index);
            compile(&changed, &options)
        });
    });
    group.finish();
}

criterion_group!(benches, full_compile, one_change);
criterion_main!(benches);
