//! The `labpool` command. Everything lives in the library; see `labpool::cli`.

fn main() -> std::process::ExitCode {
    labpool::cli::main()
}
