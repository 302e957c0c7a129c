import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PermanentError, UnavailableError, isUnavailable } from '../../shared/errors.ts';

test('connection-level failures count as a dependency being unavailable', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:3306'), { code: 'ECONNREFUSED' });
  const lost = Object.assign(new Error('Connection lost: The server closed the connection.'), { code: 'PROTOCOL_CONNECTION_LOST', fatal: true });
  for (const err of [refused, lost, new UnavailableError('SES is down'), new Error('wrapped', { cause: refused })]) assert.equal(isUnavailable(err), true, String(err));
});

test('errors about the work itself do not', () => {
  const tooLong = Object.assign(new Error("Data too long for column 'method'"), { code: 'ER_DATA_TOO_LONG', fatal: false });
  for (const err of [tooLong, new PermanentError('bad'), new Error('boom'), 'text', undefined]) assert.equal(isUnavailable(err), false, String(err));
});
