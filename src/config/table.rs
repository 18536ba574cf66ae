//! The configuration reference (`docs/configuration.md`): every setting's variable, flag, default
//! and meaning, rendered from the command line's own definitions (the clap `Arg`s' `env`, `long`,
//! default and help) and the few settings read from the environment alone ([`ENV_ONLY`]), so the
//! document cannot drift from the code (`erasure config-table`; `tests/it/configuration.rs`).
//!
//! Pure: it renders what it is given and reads no environment, no file, no secret value.

use std::collections::BTreeMap;

use clap::{Arg, Command};

use crate::secrets::Keys;

/// A setting read from the environment only (no flag): keys and secrets, which never go on a
/// command line where a process list shows them, and a few tuning knobs.
#[derive(Debug, Clone, Copy)]
pub struct EnvOnly {
    pub variable: &'static str,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every setting read from the environment without a flag (grep `std::env::var` and
/// `secret_from_env`; the test checks that every `ERASURE_*` name of `src/` is in the document).
pub const ENV_ONLY: &[EnvOnly] = &[
    EnvOnly {
        variable: Keys::SIGNING,
        default: "(required)",
        meaning: "Ed25519 seed, 64 hex characters, that signs checkpoints and receipts (its \
                  public key: `erasure audit public-key`). Or a file: `ERASURE_SIGNING_KEY_FILE`.",
    },
    EnvOnly {
        variable: Keys::DATA,
        default: "(required)",
        meaning: "AES-256-GCM key, 64 hex characters, sealing the ids of open requests, what a \
                  multi-call inventory has read, the pseudonym epochs' keys and webhook secrets. \
                  Or a file: `ERASURE_DATA_KEY_FILE`.",
    },
    EnvOnly {
        variable: Keys::PSEUDONYM,
        default: "(none)",
        meaning: "A pseudonym key of an earlier release: migrated once into the epoch of its \
                  version (`ERASURE_PSEUDONYM_KEY_VERSION`); not needed otherwise. Or a file: \
                  `ERASURE_PSEUDONYM_KEY_FILE`.",
    },
    EnvOnly {
        variable: "ERASURE_PSEUDONYM_KEY_VERSION",
        default: "`1`",
        meaning: "The version (epoch) of `ERASURE_PSEUDONYM_KEY`.",
    },
    EnvOnly {
        variable: Keys::PSEUDONYM_OLD,
        default: "(none)",
        meaning: "Earlier releases' retired pseudonym keys, `version:hexkey,...`: migrated into \
                  epochs the same way. Epochs rotate by themselves: do not configure new keys. \
                  Or a file: `ERASURE_PSEUDONYM_OLD_KEYS_FILE`.",
    },
    EnvOnly {
        variable: "ERASURE_UPSTREAM_CLIENT_SECRET",
        default: "(required by `serve` with workers and `worker`)",
        meaning: "The application's client secret at the aggregator. Or a file: \
                  `ERASURE_UPSTREAM_CLIENT_SECRET_FILE`.",
    },
    EnvOnly {
        variable: "ERASURE_OIDC_CLIENT_SECRET",
        default: "(none: a public client, PKCE alone)",
        meaning: "The console's client secret at the OpenID Provider (docs/sso.md). Or a file: \
                  `ERASURE_OIDC_CLIENT_SECRET_FILE`.",
    },
    EnvOnly {
        variable: "ERASURE_CHECKPOINT_EVERY_ENTRIES",
        default: "`1000`",
        meaning: "A checkpoint is signed as soon as this many audit entries wait, even before \
                  `ERASURE_CHECKPOINT_SECS` have passed.",
    },
    EnvOnly {
        variable: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: "(none: traces off)",
        meaning: "Where traces are exported over OTLP/HTTP (protobuf), e.g. \
                  `http://otel-collector:4318` (`/v1/traces` is added; \
                  `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` names the full URL instead). Unset: no \
                  span is made. With `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, \
                  `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER` and `OTEL_SDK_DISABLED` as the \
                  OpenTelemetry specification says (docs/operations.md, \"Traces\").",
    },
    EnvOnly {
        variable: "OTEL_EXPORTER_OTLP_PROTOCOL",
        default: "`http/protobuf`",
        meaning: "The OTLP protocol: `http/protobuf` only (`grpc` and `http/json` are refused at \
                  start). `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` wins over it.",
    },
    EnvOnly {
        variable: "OTEL_SERVICE_NAME",
        default: "`erasure`",
        meaning: "The traces' `service.name` (also taken from `OTEL_RESOURCE_ATTRIBUTES`).",
    },
    EnvOnly {
        variable: "OTEL_RESOURCE_ATTRIBUTES",
        default: "(none)",
        meaning: "More attributes of every trace's resource, `key=value,...` (e.g. \
                  `deployment.environment.name=prod`).",
    },
    EnvOnly {
        variable: "RUST_LOG",
        default: "`info`",
        meaning: "The log level, and filters by module (`tracing-subscriber`'s `EnvFilter` \
                  syntax, e.g. `info,erasure::engine=debug`).",
    },
];

/// Subcommands whose settings are not the service's: the simulator has its own
/// (`ERASURE_SIM_*`: `erasure-sim --help`).
const NOT_THE_SERVICE: &[&str] = &["sim"];

/// Subcommands read last, so that a variable several commands share is described where the
/// service reads it (`demo` reads some of the same).
const LAST: &[&str] = &["demo"];

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub variable: String,
    pub flag: String,
    pub default: String,
    pub meaning: String,
}

/// The settings of `cli` that have a variable, each once, in the order the commands define them.
pub fn rows(cli: &Command) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    collect(cli, &mut rows, &mut index);
    rows
}

fn collect(cmd: &Command, rows: &mut Vec<Row>, index: &mut BTreeMap<String, usize>) {
    for arg in cmd.get_arguments() {
        let Some(row) = row_of(arg) else {
            continue;
        };
        match index.get(&row.variable) {
            // Described already; a later definition only fills in a missing meaning.
            Some(&i) if rows[i].meaning.is_empty() => rows[i].meaning = row.meaning,
            Some(_) => {}
            None => {
                index.insert(row.variable.clone(), rows.len());
                rows.push(row);
            }
        }
    }
    let subs: Vec<&Command> = cmd
        .get_subcommands()
        .filter(|s| !NOT_THE_SERVICE.contains(&s.get_name()))
        .collect();
    let (last, first): (Vec<&Command>, Vec<&Command>) =
        subs.into_iter().partition(|s| LAST.contains(&s.get_name()));
    for sub in first.into_iter().chain(last) {
        collect(sub, rows, index);
    }
}

fn row_of(arg: &Arg) -> Option<Row> {
    let variable = arg.get_env()?.to_string_lossy().into_owned();
    let flag = arg
        .get_long()
        .map(|l| format!("`--{l}`"))
        .unwrap_or_default();
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    let default = if defaults.is_empty() {
        "(none)".to_string()
    } else if arg.is_hide_default_value_set() {
        "(set, not shown)".to_string()
    } else {
        format!("`{}`", defaults.join(","))
    };
    let help = arg
        .get_long_help()
        .or_else(|| arg.get_help())
        .map(|h| h.to_string())
        .unwrap_or_default();
    Some(Row {
        variable,
        flag,
        default,
        meaning: sentence(&help),
    })
}

/// Help text on one line, ending with a full stop.
fn sentence(text: &str) -> String {
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if !line.is_empty() && !line.ends_with(['.', '!', '?']) {
        line.push('.');
    }
    line
}

/// A table cell: one line, with `|` escaped.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The whole of `docs/configuration.md`.
pub fn markdown(cli: &Command) -> String {
    let mut out = String::from(
        "# Configuration\n\
         \n\
         <!-- Generated by `erasure config-table` from the command line's definitions (src/config.rs,\n\
         \x20    src/main.rs) and src/config/table.rs; regenerate with\n\
         \x20    `cargo run -q -- config-table > docs/configuration.md`. tests/it/configuration.rs checks it. -->\n\
         \n\
         Environment first: each variable of the first table also has the flag shown, which wins over\n\
         it. Keys are 64 hex characters (32 bytes; make one with `openssl rand -hex 32`); each key and\n\
         secret can also be read from a file named by the variable with a `_FILE` suffix\n\
         (`ERASURE_DATA_KEY_FILE=/run/secrets/data_key`). Secrets are never printed.\n\
         \n\
         ## Flags and variables\n\
         \n\
         | variable | flag | default | meaning |\n\
         |---|---|---|---|\n",
    );
    for row in rows(cli) {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            row.variable,
            cell(&row.flag),
            cell(&row.default),
            cell(&row.meaning)
        ));
    }
    out.push_str(
        "\n\
         ## Variables only\n\
         \n\
         Keys and secrets have no flag, so that they never show in a process list; the standard\n\
         variables of OpenTelemetry (`OTEL_*`) and of logging (`RUST_LOG`) have none either.\n\
         \n\
         | variable | default | meaning |\n\
         |---|---|---|\n",
    );
    for setting in ENV_ONLY {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            setting.variable,
            cell(setting.default),
            cell(&sentence(setting.meaning))
        ));
    }
    out.push_str(
        "\n\
         The simulator (`erasure sim`, `erasure-sim`) has its own settings, `ERASURE_SIM_*`: see\n\
         `erasure-sim --help`.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        /// Where it listens.
        #[arg(long, env = "X_BIND", default_value = "127.0.0.1:1")]
        bind: String,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        /// Shares X_BIND, described above; adds X_SECRET_ID.
        Demo {
            #[arg(long, env = "X_BIND")]
            bind: Option<String>,
            /// A value | with a bar.
            #[arg(
                long,
                env = "X_SECRET_ID",
                default_value = "s",
                hide_default_value = true
            )]
            id: String,
        },
        /// Not the service's: left out.
        Sim {
            #[arg(long, env = "X_SIM")]
            sim: Option<String>,
        },
        /// No variable: nothing to list.
        Plain {
            #[arg(long)]
            flag: bool,
        },
    }

    #[test]
    fn rows_come_from_the_args_once_each_without_the_simulator() {
        use clap::CommandFactory;
        let rows = rows(&Cli::command());
        let names: Vec<&str> = rows.iter().map(|r| r.variable.as_str()).collect();
        assert_eq!(names, ["X_BIND", "X_SECRET_ID"]);
        assert_eq!(rows[0].flag, "`--bind`");
        assert_eq!(rows[0].default, "`127.0.0.1:1`");
        assert_eq!(rows[0].meaning, "Where it listens.");
        assert_eq!(rows[1].default, "(set, not shown)");
        let md = markdown(&Cli::command());
        assert!(
            md.contains("| `X_SECRET_ID` | `--id` | (set, not shown) | A value \\| with a bar. |")
        );
        assert!(md.contains("| `ERASURE_SIGNING_KEY` | (required) |"));
    }
}
