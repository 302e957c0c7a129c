import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { loadFunctionConfig } from '../../shared/config.ts';
import { ConfigError } from '../../shared/errors.ts';

const shape = { HTTP_PORT: z.coerce.number().int().min(1).max(65535).default(3000), TRIGGER_TOKEN: z.string().min(8) };

test('defaults fill what is unset; empty strings count as unset', () => {
  const c = loadFunctionConfig(shape, { TRIGGER_TOKEN: '12345678', AMQP_URL: '' });
  assert.equal(c.AMQP_URL, 'amqp://guest:guest@127.0.0.1:5672');
  assert.equal(c.MYSQL_URL, 'mysql://sluice:sluice@127.0.0.1:3306/sluice');
  assert.equal(c.HTTP_PORT, 3000);
});

test('one error names every bad or missing variable', () => {
  assert.throws(
    () => loadFunctionConfig(shape, { AMQP_URL: 'http://x', HTTP_PORT: 'eighty', LOG_LEVEL: 'loud' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      const text = err.problems.join('\n');
      for (const name of ['AMQP_URL', 'HTTP_PORT', 'LOG_LEVEL', 'TRIGGER_TOKEN is required']) assert.match(text, new RegExp(name));
      assert.equal(err.problems.length, 4);
      return true;
    },
  );
});
