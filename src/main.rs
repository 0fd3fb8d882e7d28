// mimalloc instead of glibc's malloc: the worker allocates and frees small buffers on every
// message, often on different runtime threads, and glibc's arenas spent about a fifth of the
// worker's CPU time on it (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    queue_worker::cli::main()
}
