//! The `ordo` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

/// Partition threads allocate and free small records at high rates; glibc's arenas contend
/// under that load, mimalloc's per-thread heaps do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ordo::cli::main()
}
