//! The `galbridge` binary: all behaviour lives in the library ([`galbridge::cli::main`]).

/// mimalloc instead of the C library's allocator: a sync run allocates and frees many small JSON values, and the
/// static musl build deployed to Azure has a notoriously slow `malloc`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    galbridge::cli::main()
}
