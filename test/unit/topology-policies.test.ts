// The broker policies of the topology (infra/topology.ts queuePolicies), which the migrate step
// applies: every queue exactly one of ours, a delivery limit and its .dlq as target, retry queues
// at-least-once, .dlq queues unlimited (-1 on 4.x; 3.x refuses -1 and has no limit by default).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DELIVERY_LIMIT, POLICY_PREFIX, deadLetterQueue, queuePolicies, retryQueue, topology } from '../../infra/topology.ts';

const matching = (name: string, major: number) => queuePolicies(topology, major).filter((p) => new RegExp(p.pattern).test(name));

for (const major of [3, 4]) {
  test(`RabbitMQ ${major}.x: each queue, retry and dead-letter queue matches exactly one policy of ours`, () => {
    for (const q of topology.queues) {
      const [main, ...more] = matching(q.name, major);
      assert.equal(more.length, 0, `${q.name}: one policy`);
      assert.deepEqual(main!.definition, { 'delivery-limit': DELIVERY_LIMIT, 'dead-letter-exchange': deadLetterQueue(q.name), 'dead-letter-strategy': 'at-least-once', overflow: 'reject-publish' });
      const retry = matching(retryQueue(q.name), major);
      assert.deepEqual(retry.map((p) => p.name), [`${POLICY_PREFIX}retry`]);
      assert.deepEqual(retry[0]!.definition, { 'delivery-limit': DELIVERY_LIMIT, 'dead-letter-strategy': 'at-least-once', overflow: 'reject-publish' });
      const dlq = matching(deadLetterQueue(q.name), major);
      assert.deepEqual(dlq.map((p) => p.name), [`${POLICY_PREFIX}dlq`]);
      assert.equal(dlq[0]!.definition['delivery-limit'], major >= 4 ? -1 : undefined, '.dlq: no limit');
      assert.equal(dlq[0]!.definition['dead-letter-exchange'], undefined, '.dlq: dead-letters nowhere');
    }
    for (const p of queuePolicies(topology, major)) assert.deepEqual([p['apply-to'], p.name.startsWith(POLICY_PREFIX), p.priority > 0], ['queues', true, true]);
  });
}

test('no policy of ours matches a queue the topology does not name (patterns are anchored and escaped)', () => {
  for (const name of ['logs.lakeX', 'logsXlake', 'x.logs.lake', 'logs.lake.retry.dlq', 'logs.stats', 'logs.stats.dlq', 'amq.gen-1']) {
    assert.deepEqual(matching(name, 4), [], name);
  }
});
