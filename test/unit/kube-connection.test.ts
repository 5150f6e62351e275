// How the agent reaches the API server from a kubeconfig: what each kind of
// credential puts into a request, read without a network. The exec plugin
// goes through @kubernetes/client-node, as real clusters' plugins would.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import yaml from 'js-yaml';
import { connectToApiServer } from '../../src/source/kube-connection.js';

const dir = mkdtempSync(join(tmpdir(), 'kpx-kubeconfig-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function kubeconfig(name: string, cluster: object, user: object | undefined): string {
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    yaml.dump({
      apiVersion: 'v1',
      kind: 'Config',
      'current-context': 'ctx',
      clusters: [{ name: 'c', cluster }],
      users: user === undefined ? [] : [{ name: 'u', user }],
      contexts: [{ name: 'ctx', context: { cluster: 'c', ...(user === undefined ? {} : { user: 'u' }) } }],
    }),
  );
  return file;
}

test('a bearer token from the kubeconfig, or from a token file read afresh for every request (rotation)', async () => {
  const withToken = await connectToApiServer({ kubeconfig: kubeconfig('token', { server: 'https://10.0.0.1:6443' }, { token: 'abc' }) });
  assert.equal(withToken.server.href, 'https://10.0.0.1:6443/');
  assert.deepEqual((await withToken.requestOptions()).headers, { Authorization: 'Bearer abc' });

  writeFileSync(join(dir, 'token-file'), 'first\n');
  const withFile = await connectToApiServer({ kubeconfig: kubeconfig('token-file', { server: 'https://10.0.0.1:6443' }, { tokenFile: 'token-file' }) });
  assert.deepEqual((await withFile.requestOptions()).headers, { Authorization: 'Bearer first' }, 'a relative path is relative to the kubeconfig');
  writeFileSync(join(dir, 'token-file'), 'rotated\n');
  assert.deepEqual((await withFile.requestOptions()).headers, { Authorization: 'Bearer rotated' });
});

test('basic auth, and no credentials at all', async () => {
  const basic = await connectToApiServer({ kubeconfig: kubeconfig('basic', { server: 'https://api:6443' }, { username: 'admin', password: 's3cret' }) });
  assert.deepEqual((await basic.requestOptions()).headers, { Authorization: `Basic ${Buffer.from('admin:s3cret').toString('base64')}` });
  const anonymous = await connectToApiServer({ kubeconfig: kubeconfig('anonymous', { server: 'https://api:6443' }, undefined) });
  assert.deepEqual((await anonymous.requestOptions()).headers, {});
});

test('TLS material from files (relative to the kubeconfig) or inline data; insecure-skip-tls-verify; tls-server-name; --master wins', async () => {
  writeFileSync(join(dir, 'ca.pem'), 'CA FILE');
  writeFileSync(join(dir, 'client.pem'), 'CERT FILE');
  const fromFiles = await connectToApiServer({
    kubeconfig: kubeconfig(
      'files',
      { server: 'https://api:6443', 'certificate-authority': 'ca.pem', 'tls-server-name': 'kubernetes' },
      { 'client-certificate': 'client.pem', 'client-key-data': Buffer.from('KEY DATA').toString('base64') },
    ),
  });
  const tls = await fromFiles.requestOptions();
  assert.equal(String(tls.ca), 'CA FILE');
  assert.equal(String(tls.cert), 'CERT FILE');
  assert.equal(String(tls.key), 'KEY DATA');
  assert.equal(tls.rejectUnauthorized, true);
  assert.equal(tls.servername, 'kubernetes');

  const insecure = await connectToApiServer({
    kubeconfig: kubeconfig('insecure', { server: 'https://api:6443', 'insecure-skip-tls-verify': true }, { token: 't' }),
    master: 'http://127.0.0.1:8080',
  });
  assert.equal(insecure.server.href, 'http://127.0.0.1:8080/');
  assert.equal((await insecure.requestOptions()).rejectUnauthorized, false);
});

test('an exec credential plugin runs through client-node and its token is sent', async () => {
  const plugin = join(dir, 'plugin.sh');
  writeFileSync(
    plugin,
    `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-plugin"}}'\n`,
  );
  chmodSync(plugin, 0o755);
  const conn = await connectToApiServer({
    kubeconfig: kubeconfig('exec', { server: 'https://api:6443' }, { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: plugin, interactiveMode: 'Never' } }),
  });
  assert.equal(conn.server.href, 'https://api:6443/');
  const headers = (await conn.requestOptions()).headers as Record<string, string>;
  assert.equal(headers.Authorization, 'Bearer from-plugin');
});

test('a kubeconfig that names what it does not hold is refused with the missing piece', async () => {
  const file = join(dir, 'broken.yaml');
  writeFileSync(file, yaml.dump({ 'current-context': 'nope', contexts: [], clusters: [], users: [] }));
  await assert.rejects(connectToApiServer({ kubeconfig: file }), /kubeconfig: no context named "nope"/);
  await assert.rejects(connectToApiServer({ kubeconfig: kubeconfig('no-server', {}, undefined) }), /the cluster has no server/);
});

test('without a kubeconfig and outside a cluster, the reason is given', async () => {
  const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
  delete process.env.KUBERNETES_SERVICE_HOST;
  delete process.env.KUBERNETES_SERVICE_PORT;
  try {
    await assert.rejects(connectToApiServer({}), /not in a cluster \(KUBERNETES_SERVICE_HOST\/PORT unset\)/);
  } finally {
    if (saved.host !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved.host;
    if (saved.port !== undefined) process.env.KUBERNETES_SERVICE_PORT = saved.port;
  }
});
