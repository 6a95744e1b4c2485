//! The `ordo` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

/// Partition threads allocate and free small records at high rates; glibc's arenas contend
/// under that load, mimalloc's per-thread heaps do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // No transparent huge pages for this process, before any thread starts: each thread's first
    // pages of a mimalloc arena became a 2 MiB page, 3.5 MiB of resident memory per idle
    // partition thread (see the README's benchmarks). Best effort: a kernel without the
    // setting has no such pages either.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    ordo::cli::main()
}
