// The health check node port listeners over real sockets, inside a lab node's
// network namespace: a port that moves, two Services on one port, a port
// taken by someone else and then freed, listeners narrowed to some addresses,
// a Service that goes, and close() leaving nothing that keeps the process up.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { createLab, type Lab } from '../../src/lab/lab.js';
import { missingKernelPrerequisite } from '../fixtures/tools.js';

const DRIVER = fileURLToPath(new URL('./health-servers-driver.js', import.meta.url));

describe('health check node port listeners', { skip: missingKernelPrerequisite() }, () => {
  let lab: Lab;

  before(async () => {
    lab = await createLab({ pods: [] });
  });

  after(async () => {
    await lab?.close();
  });

  test('follow each sync, log a conflict or a taken port once, try again, and close everything', async () => {
    // The node's pod bridge address: a node address the narrowed listeners leave out.
    const driver = lab.spawn('node', [process.execPath, DRIVER, '10.244.0.1']);
    const exit = await Promise.race([driver.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000))]);
    assert.notEqual(exit, 'hung', `the driver did not exit after close(): a listener or timer kept it up\n${driver.stderr()}`);
    assert.equal(exit !== 'hung' && exit.code, 0, driver.stderr());
    const { steps, errors } = JSON.parse(driver.stdout().trim().split('\n').pop()!) as { steps: Record<string, unknown>; errors: string[] };
    assert.deepEqual(steps, {
      open: 200,
      moved: ['ECONNREFUSED', 200],
      shared: 200,
      sharedLogged: 1,
      taken: 1,
      retried: 200,
      narrowed: [200, 'ECONNREFUSED', 'ECONNREFUSED'],
      gone: 'ECONNREFUSED',
      closed: 'ECONNREFUSED',
    }, JSON.stringify(errors));
    assert.equal(errors.length, 2, `one line per problem: ${JSON.stringify(errors)}`);
  });
});
