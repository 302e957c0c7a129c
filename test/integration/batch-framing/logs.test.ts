// ../logs.test.ts with the trigger in batch framing (test/integration/harness.ts FRAMING).
process.env.TEST_FRAMING = 'batch';
await import('../logs.test.ts');
