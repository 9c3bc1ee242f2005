//! The `ferry` command. Everything lives in the library; see [`ferry_host::cli`].

fn main() -> std::process::ExitCode {
    ferry_host::cli::main()
}
