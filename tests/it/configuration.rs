//! The configuration reference, docs/configuration.md, is what the command line defines: generated
//! by `erasure config-table` from the clap definitions, so it cannot drift (as openapi.rs holds the
//! OpenAPI document).

use std::path::Path;

fn generated() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_erasure"))
        .arg("config-table")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn committed_configuration_table_matches_the_command_line() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md is committed");
    assert!(
        committed == generated(),
        "docs/configuration.md differs from what the command line defines; regenerate it with\n\
         \n    cargo run -q -- config-table > docs/configuration.md\n"
    );
}

#[test]
fn every_setting_has_a_meaning_and_every_variable_read_is_listed() {
    let doc = generated();
    let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
    assert!(rows.len() > 50, "{} rows", rows.len());
    for row in &rows {
        let meaning = row
            .trim_end_matches('|')
            .rsplit(" | ")
            .next()
            .unwrap()
            .trim();
        assert!(meaning.len() > 10, "no meaning: {row}");
    }
    for setting in [
        "| `DATABASE_URL` | `--database-url` | `postgres://postgres@127.0.0.1:5432/erasure` |",
        "| `ERASURE_UPSTREAM_MAX_RPS` | `--upstream-max-rps` | `20` |",
        "| `ERASURE_LOG_FORMAT` | `--log-format` | `text` |",
        "| `ERASURE_CHECKPOINT_EVERY_ENTRIES` | `1000` |",
        "| `ERASURE_SIGNING_KEY` | (required) |",
    ] {
        assert!(doc.contains(setting), "{setting}");
    }
    // Every variable the service's source names (clap `env`, `std::env::var`, secrets) is listed.
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut missing = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("ERASURE_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let name = name.trim_end_matches('_');
            let name = name.strip_suffix("_FILE").unwrap_or(name);
            // The simulator's own settings (`ERASURE_SIM_*`) are `erasure-sim --help`'s.
            // `ERASURE_*` names the family, not a variable.
            if name.starts_with("ERASURE_SIM") || name == "ERASURE" {
                continue;
            }
            if !doc.contains(&format!("`{name}`")) {
                missing.push(format!("{name} ({})", file.display()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "variables not in the configuration table:\n{}",
        missing.join("\n")
    );
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
