//! What makes a bench's process allocate like the `costline` worker: the same allocator, and
//! transparent huge pages off, the worker's default (`pipeline.transparent_huge_pages`): with
//! them on, the kernel clears a 2 MiB page for each fresh stretch of batch memory, 4–10 % of a
//! time profile of the counting path.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Call before the benchmark's data is allocated (memory faulted in before keeps its pages).
pub fn set_up() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("could not turn transparent huge pages off ({e}): figures are not the worker's");
    }
}
