//! The parts of the crate import one way (README, "Where to change what"): each part may use the
//! parts listed before it, never one after it, so that a change to a lower part never needs a
//! change above it and the layers can be read bottom up. SQL lives in `store` only.
//!
//! And the crates of the workspace depend one way: `erasure-proof` (what an auditor builds alone)
//! has no database, web, async or HTTP dependency; `erasure-sim` depends on no other crate of the
//! workspace; the service depends on the simulator only through its optional `sim` feature.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The parts, lowest first. A part at index i may import only parts at indexes below i (and
/// parts on the same line, which do not import each other either: see `PEERS`).
const LAYERS: &[&[&str]] = &[
    // Telemetry (set up by `main`) imports no part; every part that makes a span uses it.
    &["secrets", "telemetry"],
    &["config"],
    &["domain", "jobs"],
    &["metrics"],
    &["upstream"],
    &["store"],
    &["audit"],
    &["engine", "guard", "webhooks"],
    // The use cases: every action, once, for the API, the console and the command line.
    &["app"],
    &["api"],
    &["console"],
    &["service"],
    &["demo"],
];

/// Imports the order would allow but the design does not: the use cases and the API never call
/// the aggregator themselves (they ask the guard's restoration check); the console acts through
/// the use cases and reads through the store, never the engine, the guard or the aggregator.
const FORBIDDEN: &[(&str, &str)] = &[
    ("app", "upstream"),
    ("api", "upstream"),
    ("console", "upstream"),
    ("console", "engine"),
    ("console", "guard"),
];

/// Parts outside the layers, which no part may import (none now).
const ALONE: &[&str] = &[];

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
                (Some(_), None) => false,
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

/// The parts of `crate::api` the console may use: the HTTP plumbing the two web adapters share
/// (the handlers' state, the session cookie's name, reading a bounded body). Never the API's
/// handlers: an action goes through `app`, as the API's own handlers do.
const CONSOLE_FROM_API: &[&str] = &[
    "AppState",
    "auth::SESSION_COOKIE",
    "input::body",
    "input::MAX_BATCH_BODY",
];

#[test]
fn the_adapters_act_through_the_use_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/console"), &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for (i, _) in code.match_indices("crate::api::") {
            let rest = &code[i + "crate::api::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if !CONSOLE_FROM_API
                .iter()
                .any(|allowed| path.starts_with(allowed))
            {
                wrong.push(format!("{} uses crate::api::{path}", file.display()));
            }
        }
    }
    // The command line and the demo make and change keys and people through `app` too.
    for file in ["src/main.rs", "src/demo.rs"] {
        let code = code_of(&std::fs::read_to_string(root.join(file)).unwrap());
        for module in ["store::keys::", "store::people::"] {
            // A call (a lower-case name after the path); naming a type is fine.
            let calls = code.match_indices(module).any(|(i, _)| {
                code[i + module.len()..].starts_with(|c: char| c.is_ascii_lowercase())
            });
            if calls {
                wrong.push(format!(
                    "{file} calls {module} (use app::keys, app::people)"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "adapters around the use cases:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn sql_is_written_in_the_store_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // The other crates of the workspace write no SQL either.
    rust_files(&root.join("crates"), &mut files);
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

/// The packages of `Cargo.lock`: name -> names of its dependencies (every kind: normal, build and
/// dev, so a check on it is stricter than one on normal dependencies alone).
fn lock_graph() -> std::collections::BTreeMap<String, Vec<String>> {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let mut graph = std::collections::BTreeMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        let mut deps = Vec::new();
        if let Some(list) = block.split("dependencies = [").nth(1) {
            let list = &list[..list.find(']').unwrap()];
            for item in list.split(',') {
                // `"name"` or `"name version"` when two versions are locked.
                let item = item.trim().trim_matches('"');
                if let Some(dep) = item.split(' ').next().filter(|d| !d.is_empty()) {
                    deps.push(dep.to_string());
                }
            }
        }
        // A package locked at two versions: the union of both (stricter).
        graph.entry(name).or_insert_with(Vec::new).extend(deps);
    }
    graph
}

/// Every package `root` depends on, directly or not (itself excluded).
fn closure(
    graph: &std::collections::BTreeMap<String, Vec<String>>,
    root: &str,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = graph[root].clone();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(graph.get(&name).cloned().unwrap_or_default());
        }
    }
    seen
}

#[test]
fn the_proof_crate_needs_no_database_web_or_async_runtime() {
    let graph = lock_graph();
    let deps = closure(&graph, "erasure-proof");
    assert!(
        deps.contains("ed25519-dalek") && deps.contains("sha2"),
        "{deps:?}"
    );
    let heavy: Vec<&String> = deps
        .iter()
        .filter(|d| {
            ["sqlx", "actix", "tokio", "reqwest", "hyper", "erasure"]
                .iter()
                .any(|p| d.starts_with(p))
        })
        .collect();
    assert!(
        heavy.is_empty(),
        "erasure-proof (the auditor's erasure-verify) must build without these: {heavy:?}"
    );
    // Nor does its source name them (a dependency could come back by another name).
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/proof/src"),
        &mut files,
    );
    for file in files {
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for name in ["sqlx::", "actix_web::", "tokio::", "reqwest::", "erasure::"] {
            assert!(!code.contains(name), "{} uses {name}", file.display());
        }
    }
}

#[test]
fn the_simulator_stands_alone_and_the_service_has_it_only_by_its_feature() {
    let graph = lock_graph();
    let sim = closure(&graph, "erasure-sim");
    for part in ["erasure", "erasure-proof", "sqlx", "reqwest"] {
        assert!(!sim.contains(part), "erasure-sim depends on {part}");
    }
    assert!(graph["erasure"].contains(&"erasure-sim".to_string()));
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let section = |name: &str| -> Vec<String> {
        let start = manifest
            .find(&format!("\n[{name}]\n"))
            .unwrap_or_else(|| panic!("Cargo.toml has no [{name}]"));
        manifest[start + name.len() + 4..]
            .lines()
            .take_while(|l| !l.starts_with('['))
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let normal: Vec<String> = section("dependencies")
        .into_iter()
        .filter(|l| l.starts_with("erasure-sim"))
        .collect();
    assert_eq!(normal.len(), 1, "one erasure-sim dependency: {normal:?}");
    assert!(
        normal[0].contains("optional = true"),
        "the service's erasure-sim dependency must be optional: {}",
        normal[0]
    );
    let features = section("features");
    assert!(
        features
            .iter()
            .any(|l| l.replace(' ', "") == r#"sim=["dep:erasure-sim"]"#),
        "the `sim` feature brings the simulator: {features:?}"
    );
    // The production image builds without it.
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("cargo build --release --locked --no-default-features --bin erasure"),
        "the Dockerfile's service build leaves the simulator out"
    );
    // Its source names no part of the service.
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/sim/src"),
        &mut files,
    );
    assert!(!files.is_empty());
    for file in files {
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        for name in ["erasure::", "erasure_proof::"] {
            assert!(!code.contains(name), "{} uses {name}", file.display());
        }
    }
}

/// The lines of a source file that are not comments (documentation may name other crates).
fn code_of(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}
