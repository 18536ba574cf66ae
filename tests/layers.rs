//! The parts of the crate import one way (README, "Where to change what"): each part may use the
//! parts listed before it, never one after it, so that a change to a lower part never needs a
//! change above it and the layers can be read bottom up. SQL lives in `store` only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The parts, lowest first. A part at index i may import only parts at indexes below i (and
/// parts on the same line, which do not import each other either: see `PEERS`).
const LAYERS: &[&[&str]] = &[
    &["secrets"],
    &["config"],
    &["domain", "jobs"],
    &["metrics"],
    &["upstream"],
    &["store"],
    &["audit"],
    &["engine", "guard", "webhooks"],
    &["api"],
    &["console"],
    &["service"],
    &["demo"],
];

/// Imports the order would allow but the design does not: the API never calls the aggregator
/// itself (it asks the guard's restoration check); the console acts through the API's functions
/// and reads through the store, never the engine, the guard or the aggregator.
const FORBIDDEN: &[(&str, &str)] = &[
    ("api", "upstream"),
    ("console", "upstream"),
    ("console", "engine"),
    ("console", "guard"),
];

/// Parts outside the layers: the simulator stands alone, telemetry is only set up by `main`.
const ALONE: &[&str] = &["sim", "telemetry"];

fn rank(part: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&part))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The part a source file belongs to: `src/<part>.rs` or `src/<part>/...`.
fn part_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?;
    Some(name.trim_end_matches(".rs").to_string())
}

/// The parts named by `crate::<part>` in the file (also inside `use crate::{a, b}` groups).
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

#[test]
fn parts_import_only_the_parts_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(part) = part_of(&src, file) else {
            continue;
        };
        if ["lib", "main"].contains(&part.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for used in imports(&text) {
            if used == part {
                continue;
            }
            checked += 1;
            let ok = match (rank(&part), rank(&used)) {
                _ if ALONE.contains(&part.as_str()) => false,
                _ if FORBIDDEN.contains(&(part.as_str(), used.as_str())) => false,
                (Some(p), Some(u)) => u < p,
                // `demo` starts the simulator for a first look.
                (Some(_), None) => part == "demo" && used == "sim",
                (None, _) => panic!("{part} is in no layer: add it to LAYERS or ALONE"),
            };
            if !ok {
                wrong.push(format!("{} uses crate::{used}", file.display()));
            }
        }
    }
    assert!(checked > 50, "the check found imports ({checked})");
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn sql_is_written_in_the_store_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let statements = [
        "sqlx::query",
        "query_as(",
        "query_scalar(",
        "sqlx::raw_sql",
        "copy_in_raw",
    ];
    let mut outside = Vec::new();
    for file in &files {
        let part = part_of(&src, file).unwrap_or_default();
        if part == "store" {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for s in statements {
            if text.contains(s) {
                outside.push(format!("{}: {s}", file.display()));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "SQL outside src/store:\n{}",
        outside.join("\n")
    );
}

#[test]
fn the_import_reader_sees_groups_and_paths() {
    let found = imports("use crate::{audit, store::Db};\nlet x = crate::metrics::global();");
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["audit", "metrics", "store"]
    );
}
