import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { loadConfig, loadFunctionConfig, redactUrl } from '../../shared/config.ts';
import { ConfigError } from '../../shared/errors.ts';

const shape = { HTTP_PORT: z.coerce.number().int().min(1).max(65535).default(3000), TRIGGER_TOKEN: z.string().min(8) };
const urls = { AMQP_URL: 'amqp://fn:pw@127.0.0.1:5672', MYSQL_URL: 'mysql://fn:pw@127.0.0.1:3306/sluice' };

test('defaults fill what is unset; empty strings count as unset', () => {
  const c = loadFunctionConfig(shape, { ...urls, TRIGGER_TOKEN: '12345678', LOG_LEVEL: '', HTTP_PORT: '' });
  assert.equal(c.AMQP_URL, urls.AMQP_URL);
  assert.equal(c.LOG_LEVEL, 'info');
  assert.equal(c.HTTP_PORT, 3000);
});

test('one error names every bad or missing variable', () => {
  assert.throws(
    () => loadFunctionConfig(shape, { AMQP_URL: 'http://x', MYSQL_URL: urls.MYSQL_URL, HTTP_PORT: 'eighty', LOG_LEVEL: 'loud' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      const text = err.problems.join('\n');
      for (const name of ['AMQP_URL', 'HTTP_PORT', 'LOG_LEVEL', 'TRIGGER_TOKEN is required']) assert.match(text, new RegExp(name));
      assert.equal(err.problems.length, 4);
      return true;
    },
  );
});

test('redactUrl masks the password of a URL and nothing else', () => {
  const cases: [string, string][] = [
    ['amqp://user:s3cret@host:5672', 'amqp://user:***@host:5672'],
    ['amqps://user:s3cret@host:5671/vhost?heartbeat=10', 'amqps://user:***@host:5671/vhost?heartbeat=10'],
    ['mysql://sluice:p@ss:w0rd@db:3306/sluice', 'mysql://sluice:***@db:3306/sluice'], // the last "@" ends the userinfo
    ['http://user:pw@127.0.0.1:15672', 'http://user:***@127.0.0.1:15672'],
    ['mysql://db:3306/x?user=a&password=hunter2&ssl=true', 'mysql://db:3306/x?user=a&password=***&ssl=true'],
    ['user:pw@host:5672', 'user:***@host:5672'], // no scheme
    ['amqp://guest@host', 'amqp://guest@host'], // no password
    ['amqp://host:5672', 'amqp://host:5672'],
    ['not a url', 'not a url'],
    ['connect to amqp://a:b@h failed, then mysql://c:d@i/x too', 'connect to amqp://a:***@h failed, then mysql://c:***@i/x too'],
  ];
  for (const [input, expected] of cases) assert.equal(redactUrl(input), expected, input);
});

test('config errors never print a password: URLs masked, secrets not echoed at all', () => {
  const own = {
    TRIGGER_TOKEN: z.string().min(40, 'must be at least 40 characters'),
    DB_PASSWORD: z.string().regex(/^[a-z]+$/, 'must be lowercase letters'),
    API_SECRET: z.string().min(40, 'is too short'),
    SES_URL: z.url().refine((v) => v.startsWith('https:'), 'must start with https://'),
  };
  const env = {
    AMQP_URL: 'http://fn:amqp-pass-123@broker:5672',
    MYSQL_URL: 'mysql//fn:mysql-pass-456@db/x', // malformed: still no password in the error
    TRIGGER_TOKEN: 'short-token-789',
    DB_PASSWORD: 'Db-Pass-000',
    API_SECRET: 'secret-111',
    SES_URL: 'http://ses:ses-pass-222@ses:8005',
  };
  assert.throws(
    () => loadFunctionConfig(own, env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      const text = err.message;
      for (const secret of ['amqp-pass-123', 'mysql-pass-456', 'short-token-789', 'Db-Pass-000', 'secret-111', 'ses-pass-222']) {
        assert.ok(!text.includes(secret), `${secret} printed in:\n${text}`);
      }
      assert.match(text, /AMQP_URL="http:\/\/fn:\*\*\*@broker:5672": must be a URL starting with amqp:\/\//);
      assert.match(text, /MYSQL_URL="mysql\/\/fn:\*\*\*@db\/x": must be a URL/);
      assert.match(text, /SES_URL="http:\/\/ses:\*\*\*@ses:8005": must start with https:\/\//);
      assert.match(text, /TRIGGER_TOKEN is invalid: must be at least 40 characters/);
      assert.match(text, /DB_PASSWORD is invalid: must be lowercase letters/);
      assert.match(text, /API_SECRET is invalid: is too short/);
      return true;
    },
  );
  // A value that is fine is never printed either way.
  assert.equal(loadConfig({ X_TOKEN: z.string() }, { X_TOKEN: 'ok' }).X_TOKEN, 'ok');
});

test('log lines carry no secret: fields censored, URL passwords masked in fields and messages', async () => {
  const { pino } = await import('pino');
  const { redactionOptions } = await import('../../shared/log.ts');
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info', ...redactionOptions }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  log.info({ password: 'pw-1', token: 'tok-2', authorization: 'Bearer tok-3', req: { headers: { authorization: 'Bearer tok-4' }, url: '/v1/runs' } }, 'fields');
  log.info({ url: 'amqp://fn:pw-5@broker:5672', amqpUrl: 'amqps://fn:pw-6@broker', err: 'connect to mysql://fn:pw-7@db:3306/x refused', opts: { mysqlAdminUrl: 'mysql://root:pw-8@db' } }, 'urls');
  log.child({ fn: 'x' }).warn('could not reach http://admin:pw-9@rabbit:15672/api');
  const out = JSON.stringify(lines);
  for (let i = 1; i <= 9; i++) assert.ok(!out.includes(`-${i}`), `secret ${i} logged: ${out}`);
  assert.equal(lines[0]!.password, '[redacted]');
  assert.deepEqual(lines[0]!.req, { headers: { authorization: '[redacted]' }, url: '/v1/runs' });
  assert.equal(lines[1]!.url, 'amqp://fn:***@broker:5672');
  assert.equal(lines[1]!.err, 'connect to mysql://fn:***@db:3306/x refused');
  assert.deepEqual(lines[1]!.opts, { mysqlAdminUrl: 'mysql://root:***@db' });
  assert.equal(lines[2]!.msg, 'could not reach http://admin:***@rabbit:15672/api');
});
