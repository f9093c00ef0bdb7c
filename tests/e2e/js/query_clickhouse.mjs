// Runs queries through the official ClickHouse JavaScript client (@clickhouse/client, HTTP): a client
// implementation independent of ours and of clickhouse-connect, for tests/e2e/test_query_clients.py.
//   node query_clickhouse.mjs <url> <username> <password> <database> <gzip|none>   < requests.json
// requests.json: [{"query": "...", "format": "JSONEachRow", "query_params": {...}, "settings": {...}}, ...]
// Prints {"ping": <client.ping() result>, "results": [{"rows": <rs.json()>, "query_id": ...} |
// {"error": {"code": ..., "type": ..., "message": ...}}, ...]}
import { createClient } from '@clickhouse/client';

const [url, username, password, database, compression] = process.argv.slice(2);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const requests = JSON.parse(Buffer.concat(chunks).toString('utf8'));

const gzip = compression === 'gzip';
const client = createClient({ url, username, password, database,
                              compression: { request: gzip, response: gzip }, request_timeout: 60000 });
const ping = await client.ping();
const results = [];
for (const r of requests) {
  try {
    const rs = await client.query({ query: r.query, format: r.format, query_params: r.query_params,
                                    clickhouse_settings: r.settings, query_id: r.query_id });
    results.push({ rows: await rs.json(), query_id: rs.query_id });
  } catch (e) {
    results.push({ error: { code: e.code ?? null, type: e.type ?? null, message: String(e.message) } });
  }
}
await client.close();
console.log(JSON.stringify({ ping: { success: ping.success }, results }));
