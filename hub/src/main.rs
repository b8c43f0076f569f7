//! `hub`: see [`warren_hub::cli`].

fn main() -> std::process::ExitCode {
    warren_hub::cli::main(std::env::args_os())
}
