import { QUEUES } from '../../infra/topology.ts';
import { consumerConfigShape } from '../../shared/config.ts';
import { MAX_LINE_BYTES } from '../../shared/weblog/lines.ts';

export const configShape = {
  ...consumerConfigShape,
  // A body is one line, cut by the trigger at its MAX_LINE_BYTES, or (batch framing) lines up to
  // the trigger's FRAMING_BATCH_BYTES (64 KiB), of which one may be a line of MAX_LINE_BYTES.
  MESSAGE_MAX_BYTES: consumerConfigShape.MESSAGE_MAX_BYTES.default(MAX_LINE_BYTES),
};
export const QUEUE = QUEUES.logLake;
