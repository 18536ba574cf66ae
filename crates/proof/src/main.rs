//! `erasure-verify`: verifies a receipt or an export of the erasure service offline, with only
//! the public verifier key; exits 0 only when every signature, proof and hash holds. The same
//! command as `erasure audit verify`, built alone (`cargo install --path crates/proof`).

use std::process::ExitCode;

use clap::Parser;
use erasure_proof::cli::{self, VerifyArgs};

#[derive(Parser)]
#[command(
    name = "erasure-verify",
    version,
    about = "Verify a receipt or an export of the erasure service offline, with only the public \
             key. Exits 0 only when every signature, proof and hash holds."
)]
struct Args {
    #[command(flatten)]
    verify: VerifyArgs,
}

fn main() -> ExitCode {
    cli::verify(&Args::parse().verify)
}
