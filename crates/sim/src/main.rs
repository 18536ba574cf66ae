//! `erasure-sim`: the aggregator simulator as its own server, the same as `erasure sim` (flags
//! and `ERASURE_SIM_*` variables: `erasure-sim --help`). The image the Dockerfile's `sim` target
//! builds runs it, since the service's production build has no simulator.

use std::process::ExitCode;

use clap::Parser;
use erasure_sim::SimArgs;

#[derive(Parser)]
#[command(
    name = "erasure-sim",
    version,
    about = "A simulator of the Oxlin (Linxo Connect) aggregator, with fault injection (fake data only)"
)]
struct Args {
    #[command(flatten)]
    sim: SimArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    match erasure_sim::run(Args::parse().sim).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
