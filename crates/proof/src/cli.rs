//! The `verify` command: `erasure audit verify` and `erasure-verify` both parse [`VerifyArgs`]
//! and call [`verify`], so their flags, output and exit codes are the same.
//!
//! Output: `OK: <summary>` on stdout and exit 0 when everything holds; `FAILED: <why>` on stderr
//! and exit 1 when it does not; `error: <why>` on stderr and exit 1 when a file cannot be read.
//! It reads the files it is given and nothing else: no network, no database, no secret.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::verify;

/// The arguments of the command.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// A receipt (GET /v1/erasure-requests/{id}/receipt).
    #[arg(long, conflicts_with = "export", required_unless_present = "export")]
    pub receipt: Option<PathBuf>,
    /// An export in JSON Lines (GET /v1/audit/export?format=jsonl).
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// The verifier key, or a file holding it (`erasure audit public-key`).
    #[arg(long)]
    pub public_key: String,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every signature, proof and hash holds: the summary.
    Holds(String),
    /// Something does not hold: why.
    Fails(String),
}

/// Verifies the receipt or export the arguments name; `Err` when a file cannot be read or no
/// file was named.
pub fn check(args: &VerifyArgs) -> Result<Verdict, String> {
    let key = match std::fs::read_to_string(&args.public_key) {
        Ok(text) => text.trim().to_string(),
        Err(_) => args.public_key.trim().to_string(),
    };
    let (path, is_receipt) = match (&args.receipt, &args.export) {
        (Some(p), _) => (p, true),
        (None, Some(p)) => (p, false),
        (None, None) => return Err("give --receipt FILE or --export FILE".into()),
    };
    let cannot_read = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let verdict = if is_receipt {
        let text = std::fs::read_to_string(path).map_err(cannot_read)?;
        verify::verify_receipt(&text, &key).map(|s| s.to_string())
    } else {
        // Streamed: memory stays flat whatever the size of the export.
        let file = std::fs::File::open(path).map_err(cannot_read)?;
        verify::verify_export_reader(BufReader::new(file), &key).map(|s| s.to_string())
    };
    Ok(match verdict {
        Ok(summary) => Verdict::Holds(summary),
        Err(e) => Verdict::Fails(e.to_string()),
    })
}

/// Runs the command: prints the verdict and returns the exit code (0 only when it holds).
pub fn verify(args: &VerifyArgs) -> ExitCode {
    match check(args) {
        Ok(Verdict::Holds(summary)) => {
            println!("OK: {summary}");
            ExitCode::SUCCESS
        }
        Ok(Verdict::Fails(why)) => {
            eprintln!("FAILED: {why}");
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!("error: {why}");
            ExitCode::FAILURE
        }
    }
}
