// EmailSender on AWS SES (v1 SendEmail). The SDK's own retries are off: a
// retried send after a timeout could mail twice, so the dispatcher decides.
import { SESClient, SendEmailCommand } from '@aws-sdk/client-ses';
import { SendError, type EmailSender } from './dispatcher.ts';
import type { Email } from './render.ts';

const THROTTLED = new Set(['Throttling', 'ThrottlingException', 'TooManyRequestsException', 'ServiceUnavailable', 'ServiceUnavailableException', 'InternalFailure']);
// Errors raised before the request reached SES: nothing was sent, a retry is safe.
const NOT_SENT = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

export function createSesSender(opts: { region: string; endpoint?: string | undefined; from: string; timeoutMs?: number }): EmailSender {
  const client = new SESClient({
    region: opts.region,
    maxAttempts: 1,
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

export function classify(err: unknown): SendError {
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { httpStatusCode?: number }; cause?: { code?: string } };
  const name = e.name ?? 'Error';
  const status = e.$metadata?.httpStatusCode;
  const code = e.code ?? e.cause?.code ?? '';
  const message = `${name}: ${e.message ?? String(err)}`;
  if (THROTTLED.has(name) || status === 429 || (status !== undefined && status >= 500)) return new SendError(message, 'retry', { cause: err });
  if (NOT_SENT.has(code)) return new SendError(message, 'retry', { cause: err });
  if (status !== undefined && status >= 400) return new SendError(message, 'failed', { cause: err });
  return new SendError(message, 'unknown', { cause: err });
}
