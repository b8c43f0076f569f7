//! `edge`: see [`warren_edge::cli`].

fn main() -> std::process::ExitCode {
    warren_edge::cli::main(std::env::args_os())
}
