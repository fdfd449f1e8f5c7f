//! The `partkeeper` binary: parse arguments, set up logging, run the command, map the outcome to
//! an exit code (0 ok, 1 failure or problem found, 2 usage/configuration/connection error).

use clap::Parser;

fn main() {
    let cli = partkeeper::cli::Cli::parse();
    partkeeper::logging::init(cli.log_format, cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(partkeeper::commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", partkeeper::logging::chain(&e));
            e.exit_code()
        }
    };
    // Do not wait for lingering background tasks (pools, timers) at exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
