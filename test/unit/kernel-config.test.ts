import assert from 'node:assert/strict';
import { test } from 'node:test';
import { configHz, objectKconfig } from '../../src/datapath/kernel-config.js';

test('configHz reads CONFIG_HZ from a kernel config, 0 when it has none', () => {
  const config = '# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\nCONFIG_HZ_PERIODIC=y\n';
  assert.equal(configHz(config), 250);
  assert.equal(configHz('CONFIG_HZ_1000=y\n'), 0);
  assert.equal(configHz(undefined), 0);
});

test('objectKconfig is one line libbpf parses as a kconfig value', () => {
  assert.equal(objectKconfig(1000), 'CONFIG_HZ=1000\n');
  assert.equal(objectKconfig(0), 'CONFIG_HZ=0\n');
});
