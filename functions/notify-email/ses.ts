// EmailSender on AWS SES (v1 SendEmail).
//
// SES has no idempotency key, so a second SendEmail after one SES accepted is a second email.
// Whether a failed call may be sent again therefore depends on *when* it failed:
//   - SES answered that it did not take the request: throttling (Throttling "Maximum sending
//     rate exceeded", 429), or we never reached it (connection refused, DNS, connect timeout)
//     -> 'retry' (the dispatcher backs off and sends again);
//   - SES answered 4xx for any other reason (MessageRejected, invalid address, ...) -> 'failed';
//   - anything that may have come after SES accepted the mail: a 5xx (SES can fail after it
//     queued the message), a timeout or abort after the request was sent, a connection reset /
//     socket hang-up, or an error we cannot place -> 'unknown': never sent again.
//
// The SDK's own retries are off (`maxAttempts: 1`): its standard strategy retries 5xx,
// TimeoutError (ECONNRESET / EPIPE / ETIMEDOUT are renamed so) and AbortError by itself,
// which would resend an ambiguous request behind our back. The dispatcher is the one retrier,
// and it retries only what `classify` calls 'retry' (throttling and "not reached").
import { SESClient, SendEmailCommand } from '@aws-sdk/client-ses';
import { SendError, type EmailSender } from './dispatcher.ts';
import type { Email } from './render.ts';

/** SES refused the request for now and did nothing with it (SES v1 answers Throttling with HTTP 400). */
const THROTTLING = new Set(['Throttling', 'ThrottlingException', 'TooManyRequestsException', 'RequestThrottled', 'RequestThrottledException', 'SlowDown']);
const THROTTLING_MESSAGE = /maximum sending rate exceeded|rate exceeded|too many requests/i;
/** 4xx answers that say the request was not taken and may succeed later (request timeout, clock skew, expired credentials). */
const REFUSED_FOR_NOW = new Set(['RequestTimeout', 'RequestTimeoutException', 'RequestExpired', 'RequestTimeTooSkewed', 'ExpiredToken', 'ExpiredTokenException']);
/** Errors raised before a connection to SES existed: nothing was sent, a retry is safe. */
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);
/** @smithy/node-http-handler's connectionTimeout: the socket never connected. */
const CONNECT_TIMEOUT = /did not establish a connection/i;

export interface SesSenderOptions {
  region: string;
  endpoint?: string | undefined;
  from: string;
  /** Whole call; past it the answer is 'unknown' (the request may have been read). */
  timeoutMs?: number;
  /** TCP connect; past it nothing was sent, so it is retried. */
  connectTimeoutMs?: number;
}

export function createSesSender(opts: SesSenderOptions): EmailSender {
  const client = new SESClient({
    region: opts.region,
    // One attempt per send: the dispatcher alone decides what may go again (see above).
    maxAttempts: 1,
    // Options of the SDK's default Node handler (@smithy/node-http-handler).
    requestHandler: { connectionTimeout: opts.connectTimeoutMs ?? 5_000 },
    ...(opts.endpoint
      ? {
          endpoint: opts.endpoint,
          // The emulator accepts any credentials; real SES uses the default provider chain.
          credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'local', secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'local' },
        }
      : {}),
  });
  return {
    async send(email: Email) {
      try {
        const out = await client.send(
          new SendEmailCommand({
            Source: opts.from,
            Destination: { ToAddresses: [email.to] },
            Message: {
              Subject: { Data: email.subject, Charset: 'UTF-8' },
              Body: { Text: { Data: email.text, Charset: 'UTF-8' }, Html: { Data: email.html, Charset: 'UTF-8' } },
            },
          }),
          { abortSignal: AbortSignal.timeout(opts.timeoutMs ?? 15_000) },
        );
        return out.MessageId ?? 'unknown';
      } catch (err) {
        throw classify(err);
      }
    },
  };
}

interface SdkErrorShape {
  name?: string;
  code?: string;
  message?: string;
  $fault?: 'client' | 'server';
  $retryable?: { throttling?: boolean };
  $metadata?: { httpStatusCode?: number };
  cause?: { code?: string };
}

/** Whether a failed SendEmail may be sent again ('retry'), failed for good ('failed'), or may have gone out ('unknown'). */
export function classify(err: unknown): SendError {
  const e = (typeof err === 'object' && err !== null ? err : {}) as SdkErrorShape;
  const name = e.name ?? 'Error';
  const status = e.$metadata?.httpStatusCode;
  const code = e.code ?? e.cause?.code ?? '';
  const text = e.message ?? String(err);
  const message = `${name}: ${text}`;
  const out = (outcome: 'retry' | 'failed' | 'unknown') => new SendError(message, outcome, { cause: err });

  // SES answered "not now" and took nothing.
  const throttled = THROTTLING.has(name) || status === 429 || e.$retryable?.throttling === true || (status !== undefined && status < 500 && THROTTLING_MESSAGE.test(text));
  if (throttled) return out('retry');
  // Never reached SES.
  if (status === undefined && (NOT_SENT.has(code) || (name === 'TimeoutError' && CONNECT_TIMEOUT.test(text)))) return out('retry');
  // A 5xx (or a server fault): SES may have accepted the mail before it failed.
  if ((status !== undefined && status >= 500) || e.$fault === 'server') return out('unknown');
  if (status !== undefined && status >= 400) return out(REFUSED_FOR_NOW.has(name) ? 'retry' : 'failed');
  // No answer at all: timeout, abort, reset, hang-up after the request went out, or something we cannot place.
  return out('unknown');
}
