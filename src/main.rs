//! `cells-updater`: thin entry point; everything lives in the library and `cli`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
