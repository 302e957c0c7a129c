#!/usr/bin/env node
// The `sluice` command. Plain JavaScript, so that it runs on any Node far enough to say why it
// cannot go on: the command itself is TypeScript (cli/), which Node runs directly from 24 on
// (type stripping), with no build step.
const REQUIRED_MAJOR = 24;
const major = Number(process.versions.node.split('.')[0]);
if (!(major >= REQUIRED_MAJOR)) {
  process.stderr.write(
    `sluice: needs Node ${REQUIRED_MAJOR} or newer, and this is Node ${process.versions.node} (${process.execPath}).\n` +
      `Run it as \`npx sluice …\` from the project folder (npx puts the project's own Node ${REQUIRED_MAJOR}, ` +
      `installed by \`npm ci\`, first on PATH), or install Node ${REQUIRED_MAJOR}.\n`,
  );
  process.exit(2);
}
const { main } = await import('../cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
