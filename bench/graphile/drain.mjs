// graphile-worker, the anchor of bench/drain.sh: N no-op jobs queued in bulk, then drained by one
// worker process. Run by bench/drain.sh (DATABASE_URL in the environment):
//
//   node drain.mjs queue N                  # migrate graphile_worker's schema, add N no-op jobs in one call
//   node drain.mjs work N CONCURRENCY [batched]
//
// `work` starts the runner (`run()`, no-op task `noop`) and, once it has completed N jobs
// (`job:complete`, emitted before the job's row is deleted), polls `graphile_worker._private_jobs`
// every 10 ms until the table is empty: that moment is the end of the drain, so a job counts as
// done only when its deletion is committed. It prints one line of JSON: the epoch seconds of the
// end, the jobs completed and failed, and the process's peak RSS. `batched` turns on
// graphile-worker's batching (localQueue and batched completions, its documented performance
// configuration); without it, every option is graphile-worker's default but the concurrency and
// a pool of CONCURRENCY + 2 connections (the size its documentation recommends).
import { run, runMigrations } from "graphile-worker";
import pg from "pg";

const [mode, nArg, concArg, batchArg] = process.argv.slice(2);
const N = parseInt(nArg, 10);
const connectionString = process.env.DATABASE_URL;
if (!connectionString || !N) {
    console.error("usage: DATABASE_URL=... node drain.mjs queue N | work N CONCURRENCY [batched]");
    process.exit(2);
}

if (mode === "queue") {
    await runMigrations({ connectionString });
    const client = new pg.Client({ connectionString });
    await client.connect();
    const t0 = process.hrtime.bigint();
    await client.query(
        `select graphile_worker.add_jobs(array(
           select ('noop', '{}'::json, null, null, null, null, null, null)::graphile_worker.job_spec
           from generate_series(1, $1::int)))`,
        [N],
    );
    const { rows } = await client.query("select count(*)::int as n from graphile_worker._private_jobs");
    await client.end();
    console.log(JSON.stringify({ queued: rows[0].n, seconds: Number(process.hrtime.bigint() - t0) / 1e9 }));
} else if (mode === "work") {
    const concurrency = parseInt(concArg, 10) || 1;
    const batched = batchArg === "batched";
    const options = {
        connectionString,
        concurrency,
        maxPoolSize: Math.max(10, concurrency + 2),
        noHandleSignals: true,
        taskList: { noop: async () => {} },
    };
    if (batched) {
        options.preset = {
            worker: {
                localQueue: { size: Math.max(500, concurrency * 4) },
                completeJobBatchDelay: 0,
                failJobBatchDelay: 0,
            },
        };
    }
    let completed = 0;
    let failed = 0;
    let reached;
    const allCompleted = new Promise((resolve) => (reached = resolve));
    const runner = await run(options);
    runner.events.on("job:complete", ({ error }) => {
        if (error) failed += 1;
        completed += 1;
        if (completed >= N) reached();
    });
    await allCompleted;
    const poll = new pg.Client({ connectionString });
    await poll.connect();
    let left = -1;
    for (;;) {
        const { rows } = await poll.query("select count(*)::int as n from graphile_worker._private_jobs");
        left = rows[0].n;
        if (left <= failed) break;
        await new Promise((r) => setTimeout(r, 10));
    }
    const end = Date.now() / 1000;
    await poll.end();
    const peakRssMiB = process.resourceUsage().maxRSS / 1024;
    await runner.stop();
    console.log(JSON.stringify({ end, completed, failed, concurrency, batched, peak_rss_mib: peakRssMiB }));
    process.exit(0);
} else {
    console.error(`unknown mode ${mode}`);
    process.exit(2);
}
