//! The `presence` binary: everything it does is in `presence::cli`.

fn main() -> std::process::ExitCode {
    presence::cli::main()
}
