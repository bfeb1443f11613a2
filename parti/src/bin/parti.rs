//! `parti`: look at a fleet on NATS — `parti status`, `parti describe PARTITION`,
//! `parti watch`. See `parti --help`.

fn main() -> std::process::ExitCode {
    parti::cli::main()
}
