// Sends logs to an OTLP/gRPC endpoint with the OpenTelemetry JS SDK (@opentelemetry/exporter-logs-otlp-grpc,
// grpc-js underneath): an OTLP client implementation independent of ours and of grpcio.
//   node send_logs.mjs <endpoint> <gzip|none> <count> <service>
// Record i: body "js line <i> took <i % 97> ms", severity INFO (every 10th ERROR), attributes
// {"i": i, "kind": "js"}, timestamp 2026-11-29T08:00:00Z + i ms. Prints a JSON summary on success.
import { diag, DiagConsoleLogger, DiagLogLevel } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-grpc';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchLogRecordProcessor, LoggerProvider } from '@opentelemetry/sdk-logs';

const [endpoint, compression, countArg, service] = process.argv.slice(2);
const count = Number(countArg);
diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);  // export failures go to stderr

let failed = 0;
const exporter = new OTLPLogExporter({ url: endpoint, compression });
const realExport = exporter.export.bind(exporter);
exporter.export = (records, done) => realExport(records, (result) => {
  if (result.code !== 0) { failed += records.length; console.error('export failed:', result.error); }
  done(result);
});
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': service, 'host.name': 'js-host' }),
  processors: [new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 512, scheduledDelayMillis: 50,
                                              maxQueueSize: count + 1 })],
});
const logger = provider.getLogger('e2e-js', '1.2.3');
const t0 = Date.UTC(2026, 10, 29, 8, 0, 0);
for (let i = 0; i < count; i++) {
  const error = i % 10 === 0;
  logger.emit({
    timestamp: t0 + i,
    severityNumber: error ? SeverityNumber.ERROR : SeverityNumber.INFO,
    severityText: error ? 'ERROR' : 'INFO',
    body: `js line ${i} took ${i % 97} ms`,
    attributes: { i, kind: 'js' },
  });
}
await provider.forceFlush();
await provider.shutdown();
console.log(JSON.stringify({ sent: count, failed }));
process.exit(failed ? 1 : 0);
