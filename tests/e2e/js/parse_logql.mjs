// Parse LogQL with the grammar Grafana's query editor uses (@grafana/lezer-logql).
// stdin: a JSON array of query strings; stdout: a JSON array of {query, ok, error} where ok means the
// tree has no error node (lezer marks syntax errors with nodes of type "⚠").
import { parser } from '@grafana/lezer-logql';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const queries = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const out = queries.map((query) => {
  const tree = parser.parse(query);
  let error = null;
  tree.iterate({
    enter: (node) => {
      if (error === null && node.type.isError) {
        error = `syntax error at ${node.from}: ${JSON.stringify(query.slice(node.from, node.from + 20))}`;
      }
    },
  });
  return { query, ok: error === null, error };
});
process.stdout.write(JSON.stringify(out));
