//! The stored Merkle tree (migration 0005): built by the sequencer as the log grows, equal to the
//! RFC 6962 definition, append-only, and what roots and proofs are read from.

use crate::common;

use erasure::audit::checkpoint::Signer;
use erasure::audit::log::{self, AuditLog};
use erasure::audit::merkle::{self, Hash};
use erasure::store::{self, Db};
use rand::Rng;

async fn append(db: &Db, n: usize) {
    sqlx::query(
        "insert into audit_entries (request_id, actor, event, data) \
         select gen_random_uuid(), 'test', 'received', jsonb_build_object('n', g) \
         from generate_series(1, $1) g",
    )
    .bind(n as i64)
    .execute(db)
    .await
    .unwrap();
}

async fn leaf_hashes(db: &Db) -> Vec<Hash> {
    let rows: Vec<Vec<u8>> =
        sqlx::query_scalar("select leaf_hash from audit_leaves order by leaf_index")
            .fetch_all(db)
            .await
            .unwrap();
    rows.into_iter().map(|h| h.try_into().unwrap()).collect()
}

async fn nodes(db: &Db, table: &str) -> Vec<(i16, i64, Vec<u8>)> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select level, idx, hash from {table} order by level, idx"
    )))
    .fetch_all(db)
    .await
    .unwrap()
}

/// Every complete subtree of the leaves, by level and index, with its RFC 6962 hash.
fn expected_nodes(leaves: &[Hash]) -> Vec<(i16, i64, Vec<u8>)> {
    let mut out = Vec::new();
    for level in 1..63 {
        let width = 1usize << level;
        if width > leaves.len() {
            break;
        }
        for i in 0..leaves.len() / width {
            let root = merkle::root(&leaves[i * width..(i + 1) * width]);
            out.push((level as i16, i as i64, root.to_vec()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequencer_keeps_the_rfc6962_tree_and_proofs_read_it() {
    let url = common::fresh_database().await;
    let db = store::connect(&url, 4).await.unwrap();
    let signer = Signer::new("test", &rand::random());
    let audit = AuditLog::new(db.clone(), signer, "test/log");
    let mut rng = rand::rng();
    let mut sizes = vec![];
    // Growth in uneven steps, some larger than the sequencer's chunk of 5,000.
    for step in [1, 1, 2, 5, 3, 60, 7, 5_100, 129, 1, 900] {
        append(&db, step).await;
        let cp = audit.sync(true).await.unwrap().unwrap();
        let leaves = leaf_hashes(&db).await;
        assert_eq!(cp.size as usize, leaves.len());
        assert_eq!(
            cp.root,
            merkle::root(&leaves),
            "checkpoint root at {}",
            cp.size
        );
        sizes.push(cp.size);
    }
    let leaves = leaf_hashes(&db).await;
    assert_eq!(
        nodes(&db, "audit_tree").await,
        expected_nodes(&leaves),
        "every complete subtree, once, with its RFC 6962 hash"
    );

    for &size in &sizes {
        let tree = &leaves[..size as usize];
        assert_eq!(log::root(&db, size).await.unwrap(), merkle::root(tree));
        let indexes: Vec<u64> = (0..20).map(|_| rng.random_range(0..size)).collect();
        let proofs = log::inclusion_proofs(&db, &indexes, size).await.unwrap();
        for (i, proof) in indexes.iter().zip(proofs) {
            assert_eq!(
                proof,
                merkle::inclusion_proof(tree, *i as usize),
                "{i} of {size}"
            );
        }
        for &old in sizes.iter().filter(|&&old| old <= size) {
            assert_eq!(
                log::consistency_proof(&db, old, size).await.unwrap(),
                merkle::consistency_proof(tree, old as usize),
                "{old} -> {size}"
            );
        }
        let start = rng.random_range(0..=size);
        let end = rng.random_range(start..=size);
        assert_eq!(
            log::range_proof(&db, start, end, size).await.unwrap(),
            merkle::range_proof(tree, start as usize, end as usize),
            "{start}..{end} of {size}"
        );
    }

    // Append-only, like the other audit tables.
    for sql in [
        "update audit_tree set hash = hash",
        "delete from audit_tree",
        "truncate audit_tree",
    ] {
        let err = sqlx::raw_sql(sql).execute(&db).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }

    // The migration's backfill (for a log sequenced before the tree was stored) gives the same
    // nodes: run it again on an emptied table (triggers disabled by the owner for the test only).
    let migration = std::fs::read_to_string("migrations/0005_audit_tree.sql").unwrap();
    let backfill = &migration[migration.find("do $$").expect("the backfill block")..];
    sqlx::raw_sql(
        "create table tree_before as select * from audit_tree; \
         alter table audit_tree disable trigger user; truncate audit_tree; \
         alter table audit_tree enable trigger user",
    )
    .execute(&db)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(backfill.to_string()))
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(
        nodes(&db, "audit_tree").await,
        nodes(&db, "tree_before").await
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_comes_after_m_entries_without_waiting_n_seconds() {
    let url = common::fresh_database().await;
    let db = store::connect(&url, 4).await.unwrap();
    let signer = Signer::new("test", &rand::random());
    let audit = std::sync::Arc::new(AuditLog::new(db.clone(), signer, "test/log"));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(audit.clone().run(
        std::time::Duration::from_secs(3600),
        50,
        stop.clone(),
    ));
    // The first round runs at once, on the empty log.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let size = || async {
        let size: Option<i64> = sqlx::query_scalar("select max(size) from audit_checkpoints")
            .fetch_one(&db)
            .await
            .unwrap();
        size.unwrap_or(0)
    };
    append(&db, 49).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        size().await,
        0,
        "49 entries wait: below the bound, an hour to go"
    );
    append(&db, 1).await;
    let t0 = std::time::Instant::now();
    while size().await < 50 {
        assert!(t0.elapsed().as_secs() < 5, "no checkpoint at 50 entries");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    append(&db, 20).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(size().await, 50, "20 more wait for the next bound");
    append(&db, 30).await;
    let t0 = std::time::Instant::now();
    while size().await < 100 {
        assert!(t0.elapsed().as_secs() < 5, "no checkpoint at 100 entries");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.unwrap();
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_sequenced_by_an_older_release_get_their_tree_nodes() {
    let url = common::fresh_database().await;
    let db = store::connect(&url, 4).await.unwrap();
    let signer = Signer::new("test", &rand::random());
    let audit = AuditLog::new(db.clone(), signer, "test/log");
    append(&db, 37).await;
    audit.sync(true).await.unwrap().unwrap();
    // A process of the release before 0005 appended leaves without tree nodes during a rolling
    // upgrade: here, the nodes above leaf 20 are removed (the owner disables the append-only
    // triggers for the test only).
    sqlx::raw_sql(
        "alter table audit_tree disable trigger user; \
         delete from audit_tree where ((idx + 1) << level) > 20; \
         alter table audit_tree enable trigger user",
    )
    .execute(&db)
    .await
    .unwrap();
    append(&db, 3).await;
    let cp = audit.sync(true).await.unwrap().unwrap();
    let leaves = leaf_hashes(&db).await;
    assert_eq!(cp.size, 40);
    assert_eq!(cp.root, merkle::root(&leaves));
    assert_eq!(nodes(&db, "audit_tree").await, expected_nodes(&leaves));
    let proofs = log::inclusion_proofs(&db, &[25, 39], 40).await.unwrap();
    assert_eq!(proofs[0], merkle::inclusion_proof(&leaves, 25));
    assert_eq!(proofs[1], merkle::inclusion_proof(&leaves, 39));
    db.close().await;
}
