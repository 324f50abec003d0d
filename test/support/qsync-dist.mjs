// The qsync CLI from the compiled package (dist/), as an installed package
// runs it: bin/qsync.js in a checkout runs the TypeScript sources through tsx,
// which costs about a second of CPU more for every process the tests start.
const cli = await import('../../dist/consumer/cli/main.js');
process.exitCode = await cli.main(process.argv.slice(2));
