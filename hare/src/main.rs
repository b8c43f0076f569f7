//! `hare`: see the library.

fn main() -> std::process::ExitCode {
    hare::main(std::env::args_os())
}
