//! The `gangway` binary: parses the command line and runs the subcommand.

use std::process::ExitCode;

use clap::Parser;
use gangway::cli::{Cli, Command};

// jemalloc returns freed pages to the kernel on a timer, from a background thread, so that
// memory freed when idle connections are parked (src/proxy/park.rs) leaves the resident
// set. With glibc's malloc, 10,000 parked connections kept 7.7 KiB each, against 0.8 KiB
// with these settings (docs/benchmarks.md, case 4). Each thread's cache is also trimmed
// after every 1 MiB allocated instead of every 64 KiB: at the default, the trimming was
// 3 % of the proxy's instructions per request, and the idle figure did not change.
// Objects of 8 KiB, the size of hyper's connection buffers, come four to a slab of 8 pages
// (32 KiB with 4 KiB pages) instead of one to a slab of 2 pages. jemalloc keeps a 128-byte
// record for every slab it has had at once and never returns their memory. With one object
// per slab, the records left by a burst of 10,000 new connections took 2 MiB
// (docs/benchmarks.md). The environment variable `_RJEM_MALLOC_CONF` overrides these
// settings.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 112] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,\
tcache_gc_incr_bytes:1048576,slab_sizes:8192-8192:8\0";

fn main() -> ExitCode {
    gangway::alloc::mark_jemalloc_global();
    // rustls is built with ring only, and installing ring as the process default lets code
    // that asks rustls for the default provider find it. Installing fails only when a
    // provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => gangway::run::run(*args),
        Command::Check(args) => gangway::check::check(&args),
        Command::Demo(args) => gangway::demo::demo(args),
    }
}
