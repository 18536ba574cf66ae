//! Security: API key management through the real binary, limits (headers, slow clients,
//! connections per client, request rate per key), hostile upstream answers, secrets kept out of
//! logs and errors. SECURITY.md links each control to its test here.

mod common;

use std::process::Stdio;

use common::{Options, TestApp};
use serde_json::{Value, json};

/// Runs `erasure keys <args>` and returns (success, stdout, stderr).
fn keys_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let out = app
        .command("keys")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

async fn status_with(app: &TestApp, key: &str) -> u16 {
    app.get("/v1/erasure-requests", key).await.0
}

fn list_json(app: &TestApp) -> Vec<Value> {
    let (ok, out, err) = keys_cli(app, &["list", "--json"]);
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_create_list_revoke_rotate() {
    let app = TestApp::spawn(Options {
        worker: false,
        guard: None,
        ..Options::empty_sim()
    })
    .await;

    // create prints the key alone; it works at once.
    let (ok, out, err) = keys_cli(
        &app,
        &["create", "--role", "requester", "--label", "ops team"],
    );
    assert!(ok, "{err}");
    let key = out.trim().to_string();
    assert_eq!(out, format!("{key}\n"), "the key alone on stdout");
    assert!(
        key.starts_with("ek_") && key.len() == 3 + 8 + 1 + 48,
        "{key}"
    );
    assert_eq!(status_with(&app, &key).await, 200);
    let prefix = key[3..11].to_string();

    // list shows id, prefix, role, label and times, never the key nor its digest.
    let (ok, table, _) = keys_cli(&app, &["list"]);
    assert!(ok);
    assert!(table.starts_with("id\tprefix\trole\tlabel\tcreated\texpires\trevoked\n"));
    assert!(
        table.contains(&prefix) && table.contains("ops team"),
        "{table}"
    );
    let secret = &key[12..];
    assert!(!table.contains(secret));
    let listed = list_json(&app);
    assert_eq!(listed.len(), 6, "five test keys and this one");
    let mine = listed.iter().find(|k| k["prefix"] == prefix).unwrap();
    let fields: Vec<&String> = mine.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        [
            "created_at",
            "expires_at",
            "id",
            "label",
            "prefix",
            "revoked_at",
            "role"
        ]
    );
    assert_eq!(mine["role"], "requester");
    assert!(mine["revoked_at"].is_null() && mine["expires_at"].is_null());
    for k in &listed {
        assert!(!k.to_string().contains(secret));
    }

    // Expiry on create: a key with --expires-in-days works now and shows its expiry; a key whose
    // expiry has passed is refused (401) like an unknown one.
    let (ok, out, _) = keys_cli(
        &app,
        &[
            "create",
            "--role",
            "auditor",
            "--label",
            "temp",
            "--expires-in-days",
            "1",
        ],
    );
    assert!(ok);
    let temp = out.trim().to_string();
    assert_eq!(status_with(&app, &temp).await, 200);
    let shown = list_json(&app)
        .into_iter()
        .find(|k| k["prefix"] == temp[3..11])
        .unwrap();
    assert!(shown["expires_at"].is_string(), "{shown}");
    sqlx::query("update api_keys set expires_at = now() - interval '1 second' where prefix = $1")
        .bind(&temp[3..11])
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(status_with(&app, &temp).await, 401);
    let (ok, _, err) = keys_cli(
        &app,
        &[
            "create",
            "--role",
            "auditor",
            "--label",
            "x",
            "--expires-in-days",
            "0",
        ],
    );
    assert!(!ok && err.contains("--expires-in-days"), "{err}");

    // rotate: a new key (alone on stdout) with the same role and label; the old one is revoked
    // at once by default.
    let (ok, out, err) = keys_cli(&app, &["rotate", &prefix]);
    assert!(ok, "{err}");
    let rotated = out.trim().to_string();
    assert_eq!(out, format!("{rotated}\n"));
    assert_ne!(rotated, key);
    assert_eq!(status_with(&app, &rotated).await, 200);
    assert_eq!(status_with(&app, &key).await, 401, "old key revoked");
    let new_row = list_json(&app)
        .into_iter()
        .find(|k| k["prefix"] == rotated[3..11])
        .unwrap();
    assert_eq!(new_row["role"], "requester");
    assert_eq!(new_row["label"], "ops team");
    // Rotating a revoked key is refused.
    let (ok, _, err) = keys_cli(&app, &["rotate", &prefix]);
    assert!(!ok && err.contains("revoked"), "{err}");

    // rotate with a grace period: the old key keeps working until it expires.
    let new_id = new_row["id"].as_str().unwrap().to_string();
    let (ok, out, err) = keys_cli(&app, &["rotate", &new_id, "--grace-minutes", "30"]);
    assert!(ok, "{err}");
    let third = out.trim().to_string();
    assert_eq!(status_with(&app, &third).await, 200);
    assert_eq!(status_with(&app, &rotated).await, 200, "still in its grace");
    let old = list_json(&app)
        .into_iter()
        .find(|k| k["id"] == new_id.as_str())
        .unwrap();
    assert!(old["expires_at"].is_string() && old["revoked_at"].is_null());

    // revoke by id and by prefix; effective on the very next request (also through another
    // process: the CLI is one, the server another).
    let (ok, _, err) = keys_cli(&app, &["revoke", &new_id]);
    assert!(ok, "{err}");
    assert_eq!(status_with(&app, &rotated).await, 401);
    let (ok, _, err) = keys_cli(&app, &["revoke", &third[3..11]]);
    assert!(ok, "{err}");
    assert_eq!(status_with(&app, &third).await, 401);
    let (ok, _, err) = keys_cli(&app, &["revoke", &third[3..11]]);
    assert!(ok && err.contains("already"), "{err}");

    // An unknown key: a clear error that does not echo what was typed (it may be a key).
    let (ok, _, err) = keys_cli(&app, &["revoke", "ek_deadbeef_0123456789abcdef"]);
    assert!(!ok && err.contains("no key has that id or prefix"), "{err}");
    assert!(!err.contains("0123456789abcdef"));
    app.stop().await;
}
