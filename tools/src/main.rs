//! The `s3repl` binary: everything is in the `s3repl_tools` library.

fn main() -> std::process::ExitCode {
    s3repl_tools::main()
}
