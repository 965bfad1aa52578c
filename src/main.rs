//! msgtrace's entry point: parse the command line, hand over to the library, exit.
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli: msgtrace::cli::Cli = argh::from_env();
    ExitCode::from(msgtrace::app::main(cli))
}
