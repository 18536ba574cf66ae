//! Retention by destroying pseudonym keys (issue 23), time-compressed: every time the service
//! keeps (requests and epochs) is moved back as if 100 days passed, so that requests fall into
//! several epochs; the retention then runs as of three years later, from several processes at
//! once. What it destroys is gone from a full dump, look-ups no longer find those targets, newer
//! ones still answer, and every receipt, export and consistency proof still verifies.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::console::Console;
use common::{Options, TestApp};
use erasure::audit::seal::Sealer;
use erasure::config::RetentionSettings;
use erasure::service::ServiceConfig;
use serde_json::{Value, json};

/// As if `days` passed: every time of requests and epochs moves back (the audit log cannot
/// change and need not: retention never reads it).
async fn days_pass(app: &TestApp, days: i32) {
    sqlx::query(
        "update erasure_requests set received_at = received_at - make_interval(days => $1), \
             due_at = due_at - make_interval(days => $1), \
             completed_at = completed_at - make_interval(days => $1), \
             updated_at = updated_at - make_interval(days => $1)",
    )
    .bind(days)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("update pseudonym_epochs set starts_at = starts_at - make_interval(days => $1)")
        .bind(days)
        .execute(&app.db)
        .await
        .unwrap();
}

async fn lookup(app: &TestApp, scope: &str, target: &str) -> Value {
    lookup_at(app, &app.base, scope, target).await
}

/// The look-up, asked of the API at `base`.
async fn lookup_at(app: &TestApp, base: &str, scope: &str, target: &str) -> Value {
    let reply = app
        .http
        .post(format!("{base}/v1/subjects/lookup"))
        .bearer_auth(&app.auditor)
        .json(&json!({"scope": scope, "target_id": target}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 200);
    reply.json().await.unwrap()
}

/// Waits until new pseudonyms are made under epoch `version` (the service reloads its keys and
/// starts a due epoch every 200 ms in tests).
async fn wait_for_epoch(app: &TestApp, version: u32) {
    let prefix = format!("k{version}:");
    for _ in 0..100 {
        let found = lookup(app, "user", "424242").await;
        if found["subject_ref"].as_str().unwrap().starts_with(&prefix) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("epoch {version} did not start");
}

/// `erasure retention run --as-of … --yes` in `n` processes at once: their outputs.
async fn run_retention(app: &TestApp, as_of: DateTime<Utc>, n: usize) -> Vec<String> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            app.command("retention")
                .args(["run", "--as-of", &as_of.to_rfc3339(), "--yes"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|child| {
                let out = child.wait_with_output().unwrap();
                // Shown when the test fails (a compaction that could not run says why there).
                eprintln!("retention run: {}", String::from_utf8_lossy(&out.stderr));
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap()
            })
            .collect()
    })
    .await
    .unwrap()
}

/// `erasure audit verify` of a file: whether it passed.
fn verifies(kind: &str, text: &str, public_key: &str) -> bool {
    let path = std::env::temp_dir().join(format!(
        "erasure-retention-{}-{}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_erasure"))
        .args(["audit", "verify", kind, path.to_str().unwrap()])
        .args(["--public-key", public_key])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    out.status.success()
}

async fn destroyed_entries(app: &TestApp) -> Vec<Value> {
    sqlx::query_scalar(
        "select data from audit_entries where event = 'pseudonym_epoch_destroyed' order by id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn metric(app: &TestApp, name: &str) -> String {
    let text = app.http.get(app.url("/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .to_string()
}

/// Whether the table's file on disk holds `bytes` (after a checkpoint wrote out what was changed
/// in memory): the dump shows only live rows, the file could hold a dead one.
async fn table_file_holds(app: &TestApp, table: &str, bytes: &[u8]) -> bool {
    sqlx::query("checkpoint").execute(&app.db).await.unwrap();
    let (dir, file): (String, String) = sqlx::query_as(
        "select current_setting('data_directory'), pg_relation_filepath($1::regclass)",
    )
    .bind(table)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let data = std::fs::read(format!("{dir}/{file}")).expect("the test reads PostgreSQL's files");
    data.windows(bytes.len()).any(|w| w == bytes)
}

fn pg_dump(url: &str) -> String {
    let pg_dump = ["pg_dump", "/usr/lib/postgresql/15/bin/pg_dump"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok()
        })
        .expect("pg_dump");
    let dump = std::process::Command::new(pg_dump)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    String::from_utf8_lossy(&dump.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_destroys_expired_epochs_once_and_everything_still_verifies() {
    let app = TestApp::spawn(Options::default()).await;
    let users = app.user_ids();
    let account = app.seed_accounts(1)[0].clone();

    // Epoch 1 is the configured key, migrated; 100 days later epoch 2 starts (random).
    wait_for_epoch(&app, 1).await;
    days_pass(&app, 100).await;
    wait_for_epoch(&app, 2).await;
    // Under epoch 2: an account erased (the guard keeps its pseudonyms).
    let (_, a) = app
        .post(
            "/v1/erasure-requests",
            &app.requester,
            json!({"scope": "account", "target_id": account}),
        )
        .await;
    let a = a["id"].as_str().unwrap().to_string();
    let done = app.wait_state(&a, "completed", 30).await;
    assert!(done["subject_ref"].as_str().unwrap().starts_with("k2:"));
    let guarded: i64 = sqlx::query_scalar(
        "select count(*) from erased_accounts where request_id = $1::uuid and cardinality(refs) > 0",
    )
    .bind(&a)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(guarded > 0, "the guard keeps the account's pseudonyms");

    // 100 days later, epoch 3: one erasure completed, one open (held back by its not-before time).
    days_pass(&app, 100).await;
    wait_for_epoch(&app, 3).await;
    let b = app.submit("user", &users[0]).await;
    app.wait_state(&b, "completed", 30).await;
    let c = app.submit_later("user", &users[1]).await;
    assert!(lookup(&app, "account", &account).await["erased"] == true);

    // 100 days later, epoch 4 is current.
    days_pass(&app, 100).await;
    wait_for_epoch(&app, 4).await;
    assert_eq!(
        metric(&app, "erasure_pseudonym_epochs_live").await,
        "erasure_pseudonym_epochs_live 4"
    );

    // What an auditor holds before: A's receipt, the whole export, a checkpoint.
    let (status, receipt_before) = app
        .get_text(&format!("/v1/erasure-requests/{a}/receipt"), &app.auditor)
        .await;
    assert_eq!(status, 200, "{receipt_before}");
    let (_, export_before) = app
        .get_text("/v1/audit/export?format=jsonl", &app.auditor)
        .await;
    let (_, first) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    let vkey = first["public_key"].as_str().unwrap().to_string();

    // Epoch 2's key, as stored and in clear (the test holds the data key).
    let sealed: Vec<u8> =
        sqlx::query_scalar("select key_sealed from pseudonym_epochs where version = 2")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let plain = Sealer::new(&app.keys.data)
        .open_with(b"pseudonym-epoch:2", &sealed)
        .unwrap();
    let dump = pg_dump(&app.db_url);
    assert!(
        dump.contains(&hex::encode(&sealed)),
        "the dump shows bytea in hex"
    );
    assert!(table_file_holds(&app, "pseudonym_epochs", &sealed).await);

    // Another API process that would reload its keys only in an hour: it holds epoch 2's key.
    let stale = erasure::service::start(ServiceConfig {
        bind: Some("127.0.0.1:0".into()),
        upstream: None,
        retention: RetentionSettings {
            refresh: Duration::from_secs(3600),
            ..common::fast_retention()
        },
        ..app.extra_config()
    })
    .await
    .unwrap();
    let stale_base = format!("http://{}", stale.addr.unwrap());
    let found = lookup_at(&app, &stale_base, "account", &account).await;
    assert_eq!(found["erased"], true, "{found}");

    // Three years after epoch 3 ended, from three processes at once: epochs 1 (no request) and
    // 2 (A) go, each once; epoch 3 stays for its open request, epoch 4 is current.
    let as_of = Utc::now() + chrono::Duration::days(1095 + 1);
    let outputs = run_retention(&app, as_of, 3).await;
    let said: String = outputs.concat();
    assert_eq!(
        said.matches("epoch 1 destroyed: 0 requests").count(),
        1,
        "{said}"
    );
    assert_eq!(
        said.matches("epoch 2 destroyed: 1 requests").count(),
        1,
        "{said}"
    );
    assert!(!said.contains("epoch 3 destroyed"), "{said}");
    let entries = destroyed_entries(&app).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(
        (&entries[0]["epoch"], &entries[0]["requests"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(
        (&entries[1]["epoch"], &entries[1]["requests"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(entries[1]["retention_days"], 1095);

    // Gone from the database, sealed and in clear; the records themselves stay.
    let dump = pg_dump(&app.db_url);
    assert!(
        !dump.contains(&hex::encode(&sealed)),
        "the sealed key is still in the dump"
    );
    assert!(
        !dump.contains(&hex::encode(&plain)),
        "the key is in the dump"
    );
    assert!(
        !table_file_holds(&app, "pseudonym_epochs", &sealed).await,
        "a dead row version still holds the sealed key on disk"
    );
    assert!(
        dump.contains(done["subject_ref"].as_str().unwrap()),
        "the request's record stays"
    );
    let stripped: (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where cardinality(refs) = 0 and connection_ref is null) \
         from erased_accounts where request_id = $1::uuid",
    )
    .bind(&a)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        stripped.0, stripped.1,
        "the guard's pseudonyms of A are emptied"
    );

    // Look-ups: A is no longer found (not even by the process that still holds the key in
    // memory: it checks which epochs are live), B (epoch 3) still is.
    let found = lookup_at(&app, &stale_base, "account", &account).await;
    assert_eq!(found["requests"], json!([]), "{found}");
    stale.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let gone = lookup(&app, "account", &account).await;
    assert_eq!(gone["erased"], false, "{gone}");
    assert_eq!(gone["requests"], json!([]), "{gone}");
    assert_eq!(gone["retention_days"], 1095, "{gone}");
    assert!(
        gone["note"]
            .as_str()
            .unwrap()
            .contains("no record of this target is held within the retention period"),
        "{gone}"
    );
    let auditor = Console::sign_in(&app, &app.auditor).await;
    let (_, _, page) = auditor
        .post(
            "/requests/search",
            &[("scope", "account"), ("target_id", &account)],
        )
        .await;
    assert!(
        page.contains("no record of this target is held within the retention period")
            && page.contains("Records are kept 1095 days"),
        "the console's look-up says so too: {page}"
    );
    let kept = lookup(&app, "user", &users[0]).await;
    assert_eq!(kept["erased"], true, "{kept}");
    assert_eq!(kept["requests"][0]["id"], b.as_str());
    assert!(kept.get("note").is_none(), "{kept}");
    assert_eq!(
        metric(&app, "erasure_pseudonym_epochs_live").await,
        "erasure_pseudonym_epochs_live 2"
    );

    // Everything an auditor held still verifies, and what they get now too.
    assert!(verifies("--receipt", &receipt_before, &vkey));
    assert!(verifies("--export", &export_before, &vkey));
    let (status, receipt_after) = app
        .get_text(&format!("/v1/erasure-requests/{a}/receipt"), &app.auditor)
        .await;
    assert_eq!(status, 200, "{receipt_after}");
    assert!(verifies("--receipt", &receipt_after, &vkey));
    let leaves = |r: &str| -> Vec<Value> {
        let r: Value = serde_json::from_str(r).unwrap();
        r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["leaf"].clone())
            .collect()
    };
    assert_eq!(
        leaves(&receipt_before),
        leaves(&receipt_after),
        "A's entries are unchanged"
    );
    let (_, export_after) = app
        .get_text("/v1/audit/export?format=jsonl", &app.auditor)
        .await;
    assert!(verifies("--export", &export_after, &vkey));
    let (_, second) = app.get("/v1/audit/checkpoint", &app.auditor).await;
    assert!(
        second["size"].as_u64() > first["size"].as_u64(),
        "the destructions are in the log"
    );
    common::assert_log_extends(&app, &first, &second).await;

    // Again: nothing more to destroy while C is open.
    let again = run_retention(&app, as_of, 1).await;
    assert_eq!(again, ["no epoch past the retention\n"]);
    assert_eq!(destroyed_entries(&app).await.len(), 2);

    // The status page and the report state the retention and the oldest live epoch.
    let (_, page) = auditor.get("/").await;
    assert!(page.contains("for 1095 days after"), "{page}");
    assert!(
        page.contains("Oldest live pseudonym epoch: started"),
        "{page}"
    );
    let (_, report) = app.get_text("/v1/audit/report", &app.auditor).await;
    assert!(report.contains("for 1095 days after"), "{report}");
    assert!(report.contains("(2 live, 2 destroyed)"), "{report}");

    // Once C is closed, epoch 3 goes too, and B with it.
    let (status, body) = app
        .post(
            &format!("/v1/erasure-requests/{c}/cancel"),
            &app.requester,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let outputs = run_retention(&app, as_of, 2).await;
    assert_eq!(
        outputs
            .concat()
            .matches("epoch 3 destroyed: 2 requests")
            .count(),
        1,
        "{outputs:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let gone = lookup(&app, "user", &users[0]).await;
    assert_eq!(gone["requests"], json!([]), "{gone}");
    assert_eq!(
        metric(&app, "erasure_pseudonym_epochs_live").await,
        "erasure_pseudonym_epochs_live 1"
    );
    app.stop().await;
}

/// Whether the key of epoch `version` exists.
async fn epoch_live(app: &TestApp, version: i32) -> bool {
    sqlx::query_scalar("select key_sealed is not null from pseudonym_epochs where version = $1")
        .bind(version)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// `erasure retention run` with `args`: whether it succeeded, its stdout and its stderr.
async fn retention_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let mut cmd = app.command("retention");
    cmd.arg("run")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_as_of_a_future_date_is_previewed_and_applied_only_when_confirmed() {
    let app = TestApp::spawn(Options::default()).await;
    let user = app.user_ids()[0].clone();
    wait_for_epoch(&app, 1).await;
    let id = app.submit("user", &user).await;
    app.wait_state(&id, "completed", 30).await;
    assert_eq!(lookup(&app, "user", &user).await["erased"], true);

    // Epoch 1 is current (no later epoch yet). It ends 90 days after it started
    // (ERASURE_PSEUDONYM_EPOCH_DAYS), so 1095 days after that its key is due for destruction.
    let as_of = (Utc::now() + chrono::Duration::days(90 + 1095 + 2)).to_rfc3339();

    // A dry run says what it would destroy and changes nothing.
    let (ok, said, err) = retention_cli(&app, &["--as-of", &as_of, "--dry-run"]).await;
    assert!(ok, "{err}");
    assert!(
        said.contains("epoch 1 would be destroyed: 1 requests"),
        "{said}"
    );
    assert!(epoch_live(&app, 1).await);
    assert!(destroyed_entries(&app).await.is_empty());
    assert_eq!(lookup(&app, "user", &user).await["erased"], true);
    // As of now, nothing is due.
    let (ok, said, err) = retention_cli(&app, &["--dry-run"]).await;
    assert!(ok, "{err}");
    assert!(said.contains("no epoch"), "{said}");

    // For real, as of a future date: refused without --yes, with the reason.
    let (ok, said, err) = retention_cli(&app, &["--as-of", &as_of]).await;
    assert!(!ok, "a future run went ahead unconfirmed: {said}");
    assert!(
        err.contains("in the future") && err.contains("--dry-run") && err.contains("--yes"),
        "{err}"
    );
    assert!(epoch_live(&app, 1).await);
    assert!(destroyed_entries(&app).await.is_empty());

    // Confirmed: destroyed, and the target is no longer found.
    let (ok, said, err) = retention_cli(&app, &["--as-of", &as_of, "--yes"]).await;
    assert!(ok, "{err}");
    assert!(said.contains("epoch 1 destroyed: 1 requests"), "{said}");
    assert!(!epoch_live(&app, 1).await);
    assert_eq!(destroyed_entries(&app).await.len(), 1);
    let gone = lookup(&app, "user", &user).await;
    assert_eq!(gone["requests"], json!([]), "{gone}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_key_is_migrated_once_and_then_not_needed() {
    let app = TestApp::spawn(Options::no_worker()).await;
    let id = app.submit("user", "5150").await;
    let (_, recorded) = app
        .get(&format!("/v1/erasure-requests/{id}"), &app.auditor)
        .await;
    let api = |keys: erasure::secrets::Keys| ServiceConfig {
        bind: Some("127.0.0.1:0".into()),
        upstream: None,
        keys,
        ..app.extra_config()
    };

    // Without any pseudonym key configured, another process finds the request by its target.
    let unconfigured = erasure::secrets::Keys {
        pseudonym: None,
        pseudonym_old: vec![],
        ..app.keys.clone()
    };
    let other = erasure::service::start(api(unconfigured)).await.unwrap();
    let base = format!("http://{}", other.addr.unwrap());
    let found = lookup_at(&app, &base, "user", "5150").await;
    assert_eq!(found["requests"][0]["id"], id.as_str(), "{found}");
    assert_eq!(found["subject_ref"], recorded["subject_ref"]);
    other.stop().await.unwrap();

    // Another key under the version of a stored epoch is refused, naming neither key.
    let other_key = erasure::secrets::Key32::random();
    let wrong = erasure::secrets::Keys {
        pseudonym: Some(other_key.clone()),
        ..app.keys.clone()
    };
    let err = match erasure::service::start(api(wrong)).await {
        Ok(_) => panic!("a different key under version 1 was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("configured with another key"), "{err}");
    assert!(!err.contains(&other_key.to_hex()), "{err}");
    let epochs: i64 = sqlx::query_scalar("select count(*) from pseudonym_epochs")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(epochs, 1, "nothing was imported");
    app.stop().await;
}
