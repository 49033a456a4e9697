//! The `galbridge` binary: all behaviour lives in the library ([`galbridge::cli::main`]).

fn main() -> std::process::ExitCode {
    galbridge::cli::main()
}
