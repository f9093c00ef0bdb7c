// Sends logs to an OTLP endpoint with the OpenTelemetry JS SDK: an OTLP client implementation independent
// of ours, of grpcio and of the Collector. Transports: grpc (@opentelemetry/exporter-logs-otlp-grpc on grpc-js),
// http-proto (exporter-logs-otlp-proto) and http-json (exporter-logs-otlp-http, the OTLP/JSON encoding).
//   node send_logs.mjs <grpc|http-proto|http-json> <endpoint URL> <gzip|none> <count> <service>
// Record i: body "js line <i> took <i % 97> ms", severity INFO (every 10th ERROR), attributes
// {"i": i, "kind": "js"}, timestamp 2026-11-29T08:00:00Z + i ms. Prints a JSON summary on success.
import { diag, DiagConsoleLogger, DiagLogLevel } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { OTLPLogExporter as GrpcExporter } from '@opentelemetry/exporter-logs-otlp-grpc';
import { OTLPLogExporter as JsonExporter } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPLogExporter as ProtoExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BatchLogRecordProcessor, LoggerProvider } from '@opentelemetry/sdk-logs';

const [transport, url, compression, countArg, service] = process.argv.slice(2);
const Exporter = { grpc: GrpcExporter, 'http-proto': ProtoExporter, 'http-json': JsonExporter }[transport];
if (!Exporter) throw new Error(`unknown transport ${transport}`);
const count = Number(countArg);
diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);  // export failures go to stderr

let failed = 0;
const exporter = new Exporter({ url, compression });
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
