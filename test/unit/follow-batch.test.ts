// ./follow.test.ts in batch framing.
process.env.TEST_FRAMING = 'batch';
await import('./follow.test.ts');
