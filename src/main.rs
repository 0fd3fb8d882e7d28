fn main() -> std::process::ExitCode {
    queue_worker::cli::main()
}
