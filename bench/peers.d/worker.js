// The pipeline a team would build instead of omnisync, for bench/peers: a graphile-worker task
// that sends the CRM row to the Omnidesk API with fetch. A trigger on the CRM table (see
// bench/peers) calls graphile_worker.add_job('sync_customer', {op, row}); this worker runs the
// jobs, PEER_CONCURRENCY at a time. Creates go out as a multipart POST with the fields omnisync
// sends; updates as an urlencoded PUT of updateCustomer. A non-2xx answer fails the job, and
// graphile-worker retries it with its backoff.
//
// Configuration as graphile-worker's documentation recommends for throughput
// (https://worker.graphile.org/docs/performance, and the option docs in dist/index.d.ts):
// concurrentJobs = M, maxPoolSize = max(10, M + 2), prepared statements on (the default),
// LISTEN/NOTIFY on 'jobs:insert' for new jobs (always on) with the default 2 s poll as the
// fallback, localQueue.size (PEER_LOCAL_QUEUE, default 500: the performance page's setting; 0
// turns it off) and completeJobBatchDelay = failJobBatchDelay = 0 (batched completions). Info
// and debug log lines (one per job) are dropped, as omnisync runs with [log] level = warn.
//
// Environment: PEER_DATABASE_URL, PEER_API_URL, PEER_API_KEY, PEER_CONCURRENCY (16),
// PEER_LOCAL_QUEUE (500).
"use strict";
const { run, Logger } = require("graphile-worker");

const api = process.env.PEER_API_URL;
const M = Number(process.env.PEER_CONCURRENCY || 16);
const localQueue = Number(process.env.PEER_LOCAL_QUEUE ?? 500);
const headers = { apiKey: process.env.PEER_API_KEY || "", Accept: "application/json" };

async function sync_customer(payload) {
    const row = payload.row;
    let res;
    if (payload.op === "INSERT") {
        const form = new FormData();
        form.append("brand_id", "1");
        form.append("primary_id", row.customer_no);
        if (row.first_name) form.append("firstname", row.first_name);
        if (row.last_name) form.append("lastname", row.last_name);
        if (row.email) form.append("extra_email", row.email);
        if (row.phone && row.phone.length >= 12) form.append("extra_telephone", row.phone);
        if (row.loyalty_tier != null) form.append("custom_tier", row.loyalty_tier);
        res = await fetch(api + "/api/v2/customer", { method: "POST", headers, body: form });
    } else {
        const form = new URLSearchParams({
            externalPrimaryID: row.customer_no,
            brandID: "1",
            firstname: row.first_name || "",
            lastname: row.last_name || "",
            custom_tier: row.loyalty_tier ?? "",
        });
        res = await fetch(api + "/api/v2/customer/updateCustomer", {
            method: "PUT",
            headers,
            body: form,
        });
    }
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
}

const logger = new Logger(() => (level, message) => {
    if (level === "error" || level === "warning") console.error(`${level}: ${message}`);
});

async function main() {
    const worker = {
        connectionString: process.env.PEER_DATABASE_URL,
        concurrentJobs: M,
        maxPoolSize: Math.max(10, M + 2),
        pollInterval: 2000,
        preparedStatements: true,
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
    };
    if (localQueue > 0) worker.localQueue = { size: localQueue };
    const runner = await run({ logger, preset: { worker }, taskList: { sync_customer } });
    // graphile-worker handles SIGTERM and SIGINT itself: a graceful stop.
    await runner.promise;
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
