/**
 * The ebpf datapath's tables in the kernel, with no traffic: a model large
 * enough that every map is read back in several batches (4,096 entries
 * each) lands whole, reads back byte for byte, and a restarted datapath
 * that adopts the pinned maps finds nothing to write. A pinned map of
 * another shape (an older build's struct, another --map-sizes) is replaced,
 * with the other control-plane tables. A datapath's programs take over the
 * links only once its first sync has landed. The programs are loaded into
 * the lab's own bpffs and attached to the lab's cgroup only.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, unlinkSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { pino } from 'pino';
import { compile } from '../../src/compile/compile.js';
import { EbpfDatapath, LinkTakeoverError, linkPinPath, readPinnedTables, removePins, TableFullError } from '../../src/datapath/ebpf.js';
import { linkInfo, mapDelete, mapLookup, mapShape, mapUpdate, objGet } from '../../src/datapath/libbpf.js';
import { CT_FIB, CT_FLAGS, backendValue, ctKey, ctValue, filterValue, frontendKey, frontendValue, slotKey, u32Key, type CtValue } from '../../src/contract/codecs.js';
import { listServicePorts } from '../../src/inspect/listing.js';
import { createLab, type Lab } from '../../src/lab/lab.js';
import { wholeModel } from '../../src/model/incremental.js';
import { NODE_PORT_ADDRESS, type Model, type ServicePort } from '../../src/model/types.js';
import { withPinned } from '../fixtures/pinned.js';
import { missingKernelPrerequisite } from '../fixtures/tools.js';

const log = pino({ level: 'silent' });
/** Slots and backends: 3 per Service, over two batches of kpx_slots and kpx_backends. */
const SERVICES = 3_000;

function servicePort(i: number, generation: number): ServicePort {
  const address = (a: number, b: number) => `10.${100 + generation}.${a}.${b}`;
  return {
    ref: { namespace: 'bench', name: `svc-${String(i).padStart(5, '0')}`, portName: '', protocol: 'TCP' },
    frontends: [{ kind: 'ClusterIP', address: `10.96.${i >> 8}.${i & 255}`, port: 80 }],
    backends: [0, 1, 2].map((k) => ({ address: address(i >> 6, ((i & 63) << 2) | k), port: 8080, state: 'ready' as const, local: false })),
  };
}

function model(generation: number): Model {
  return {
    servicePorts: Array.from({ length: SERVICES }, (_, i) => servicePort(i, generation)),
    ignored: [],
    rejected: [],
    healthChecks: [],
    nodeAddresses: ['172.18.0.2'],
  };
}

/** Each table as sorted hex key=value lines: byte identity, whatever the order. */
function bytes(tables: ReturnType<typeof readPinnedTables>): Record<string, string[]> {
  return Object.fromEntries(
    Object.entries(tables).map(([name, content]) => [name, [...content.values()].map((e) => `${e.key.toString('hex')}=${e.value.toString('hex')}`).sort()]),
  );
}

/** The numbers of the set bits of a kpx_filter value (addr_bits from 0, nodeport_bits from 2^20), read as a little-endian CPU does. */
function setBits(value: Buffer): number[] {
  const bits: number[] = [];
  value.forEach((byte, i) => {
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) bits.push(i * 8 + b);
  });
  return bits;
}

/** The bits a filter of these frontends needs, by kpx_filter_addr_bit written out in 64-bit integers. */
function expectedBits(frontends: ReturnType<typeof readPinnedTables>['frontends']): number[] {
  const bits = new Set<number>();
  for (const { key } of frontends.values()) {
    const addr = BigInt(key.readUInt32LE(0));
    bits.add(addr === 0n ? 2 ** 20 + key.readUInt16BE(4) : Number(((addr * 2654435761n) & 0xffffffffn) >> 12n));
  }
  return [...bits].sort((a, b) => a - b);
}

/** The set bits of the pinned kpx_filter, and those its frontends need. */
function filterState(bpffs: string): { bits: number[]; needed: number[] } {
  const value = withPinned(`${bpffs}/kpx_filter`, (fd) => mapLookup(fd, u32Key.encode({ id: 0 }), filterValue.size));
  assert.ok(value, 'kpx_filter has its entry');
  return { bits: setBits(value), needed: expectedBits(readPinnedTables(bpffs).frontends) };
}

describe('ebpf tables in the kernel, larger than one read batch', { skip: missingKernelPrerequisite() }, () => {
  let lab: Lab;
  before(async () => {
    lab = await createLab({ pods: [] });
  });
  after(async () => {
    await lab?.close();
  });

  test('a full sync lands byte for byte, and a restarted datapath adopts it without a write', () => {
    const bpffs = `${lab.bpffsPath}/tables`;
    const first = EbpfDatapath.open({ bpffs, log });
    try {
      const result = first.sync(wholeModel(model(0)));
      assert.equal(result.full, true);
      assert.equal(result.written, SERVICES * 8 + 1, 'per Service 1 frontend, 3 slots, 3 backends, 1 service entry; 1 node address');
    } finally {
      first.close();
    }
    const expected = bytes(compile(model(0), { services: new Map(), backends: new Map() }).tables);
    assert.deepEqual(bytes(readPinnedTables(bpffs)), expected);

    const restarted = EbpfDatapath.open({ bpffs, log });
    try {
      assert.deepEqual(restarted.sync(wholeModel(model(0))), { written: 0, removed: 0, full: true }, 'every key compared with the kernel: nothing differs');
      // Every backend moves: the adopted IDs are freed, new ones written, the old entries removed.
      const moved = restarted.sync(wholeModel(model(1), 1));
      assert.equal(moved.removed, SERVICES * 3, 'the old backends');
    } finally {
      restarted.close();
    }
    assert.deepEqual(
      listServicePorts(readPinnedTables(bpffs)).map((l) => [l.name, l.backends.map((b) => b.address)]),
      model(1).servicePorts.map((sp) => [sp.ref.name, sp.backends.map((b) => b.address)]),
    );
  });

  test('a pinned map of another shape is replaced; the new programs attach once the first sync has filled it', () => {
    const bpffs = `${lab.bpffsPath}/upgrade`;
    const slotsPin = `${bpffs}/kpx_slots`;
    const valueSize = () => withPinned(slotsPin, (fd) => mapShape(fd).valueSize);
    const small = model(0).servicePorts.slice(0, 10);
    const smallModel: Model = { ...model(0), servicePorts: small };
    const first = EbpfDatapath.open({ bpffs, log });
    first.sync(wholeModel(smallModel));
    first.close();
    // An older build's kpx_slots: 8-byte values (no backend address).
    unlinkSync(slotsPin);
    execFileSync('bpftool', ['map', 'create', slotsPin, 'type', 'hash', 'key', '8', 'value', '8', 'entries', '1024', 'name', 'kpx_slots']);
    try {
      const stopped = EbpfDatapath.open({ bpffs, cgroup: lab.cgroupPath, log });
      assert.equal(valueSize(), 12, "this build's map is pinned in its place");
      assert.equal(existsSync(linkPinPath(bpffs, 'kpx_connect4')), false, 'no program of this build attached before its maps are filled');
      stopped.close();
      assert.equal(valueSize(), 8, 'stopped before its first sync: the old map is back on its pin');

      const upgraded = EbpfDatapath.open({ bpffs, cgroup: lab.cgroupPath, log });
      try {
        const result = upgraded.sync(wholeModel(smallModel));
        assert.equal(result.written, small.length * 8 + 1, 'every control-plane table replaced with kpx_slots, and filled');
        assert.equal(existsSync(linkPinPath(bpffs, 'kpx_connect4')), true, 'attached after the first sync');
        assert.equal(valueSize(), 12);
      } finally {
        upgraded.close();
      }
      // Another size asked for: the same replacement, nothing refused.
      const resized = EbpfDatapath.open({ bpffs, cgroup: lab.cgroupPath, mapSizes: { kpx_slots: 2048 }, log });
      try {
        resized.sync(wholeModel(smallModel));
        assert.equal(withPinned(slotsPin, (fd) => mapShape(fd).maxEntries), 2048);
        assert.deepEqual(
          listServicePorts(readPinnedTables(bpffs)).map((l) => l.backends.length),
          small.map(() => 3),
        );
      } finally {
        resized.close();
      }
    } finally {
      removePins(bpffs, lab.cgroupPath);
    }
  });

  test('programs take over the links only when the first sync lands: until then the previous ones keep serving', () => {
    const bpffs = `${lab.bpffsPath}/takeover`;
    const pin = linkPinPath(bpffs, 'kpx_connect4');
    const programOnLink = () => withPinned(pin, (fd) => linkInfo(fd).progId);
    const small: Model = { ...model(0), servicePorts: model(0).servicePorts.slice(0, 10) };
    try {
      const first = EbpfDatapath.open({ bpffs, cgroup: lab.cgroupPath, log });
      const firstProgram = first.programId('kpx_connect4');
      try {
        assert.equal(existsSync(pin), false, 'nothing attached before the maps are filled');
        first.sync(wholeModel(small));
        assert.equal(programOnLink(), firstProgram);
      } finally {
        first.close();
      }
      // The restart of an agent (or one killed mid-upgrade): its programs are loaded, the maps may not be filled yet.
      const restarted = EbpfDatapath.open({ bpffs, cgroup: lab.cgroupPath, log });
      try {
        assert.notEqual(restarted.programId('kpx_connect4'), firstProgram);
        assert.equal(programOnLink(), firstProgram, 'the previous program serves until the first sync lands');
        restarted.sync(wholeModel(small));
        assert.equal(programOnLink(), restarted.programId('kpx_connect4'));
      } finally {
        restarted.close();
      }
    } finally {
      removePins(bpffs, lab.cgroupPath);
    }
  });

  test('programs that cannot take over every link give the swapped ones back; the sync landed and says it cannot go on', () => {
    const bpffs = `${lab.bpffsPath}/takeover-fails`;
    const programOn = (program: string) => withPinned(linkPinPath(bpffs, program), (fd) => linkInfo(fd).progId);
    const small: Model = { ...model(0), servicePorts: model(0).servicePorts.slice(0, 10) };
    try {
      const first = EbpfDatapath.open({ bpffs, cgroup: lab.cgroupPath, log });
      first.sync(wholeModel(small));
      const before = ['kpx_connect4', 'kpx_getpeername4'].map(programOn);
      first.close();
      // The last link pin is not a link any more (a map pinned there): taking it over fails after the others were swapped.
      unlinkSync(linkPinPath(bpffs, 'kpx_post_bind4'));
      execFileSync('bpftool', ['map', 'create', linkPinPath(bpffs, 'kpx_post_bind4'), 'type', 'array', 'key', '4', 'value', '4', 'entries', '1', 'name', 'not_a_link']);
      const next = EbpfDatapath.open({ bpffs, cgroup: lab.cgroupPath, log });
      try {
        const changed: Model = { ...small, servicePorts: model(1).servicePorts.slice(0, 10) };
        assert.throws(() => next.sync(wholeModel(changed)), (err: Error) => err instanceof LinkTakeoverError && /could not take over the links/.test(err.message));
        assert.deepEqual(['kpx_connect4', 'kpx_getpeername4'].map(programOn), before, 'the swapped links have their previous programs back');
        assert.deepEqual(
          listServicePorts(readPinnedTables(bpffs)).map((l) => l.backends.map((b) => b.address)),
          changed.servicePorts.map((sp) => sp.backends.map((b) => b.address)),
          'the sync itself landed',
        );
      } finally {
        next.close();
      }
    } finally {
      unlinkSync(linkPinPath(bpffs, 'kpx_post_bind4'));
      removePins(bpffs, lab.cgroupPath);
    }
  });

  test('an upgrade carries tracked flows over into the grown kpx_ct, zero-extended, when its programs take over', () => {
    const bpffs = `${lab.bpffsPath}/carry`;
    const ctPin = `${bpffs}/kpx_ct`;
    const small: Model = { ...model(0), servicePorts: model(0).servicePorts.slice(0, 10) };
    const key = ctKey.encode({ saddr: '192.0.2.7', daddr: '172.18.0.2', sport: 40000, dport: 30080, proto: 6 });
    const flow: CtValue = {
      saddr: '172.18.0.2',
      daddr: '10.244.2.7',
      sport: 61234,
      dport: 8443,
      backend_id: 3,
      last_seen_ns: 123_456_789n,
      flags: CT_FLAGS.redirect,
      fib: CT_FIB.none,
      fib_ifindex: 0,
      fib_nexthop: '0.0.0.0',
      fib_dmac: '00:00:00:00:00:00',
      fib_smac: '00:00:00:00:00:00',
    };
    try {
      const first = EbpfDatapath.open({ bpffs, log });
      first.sync(wholeModel(small));
      first.close();
      // The build before the kept FIB result: 32-byte values, one tracked flow in them.
      unlinkSync(ctPin);
      execFileSync('bpftool', ['map', 'create', ctPin, 'type', 'lru_hash', 'key', '16', 'value', '32', 'entries', '1024', 'name', 'kpx_ct']);
      withPinned(ctPin, (fd) => mapUpdate(fd, key, ctValue.encode(flow).subarray(0, 32)));

      const upgraded = EbpfDatapath.open({ bpffs, cgroup: lab.cgroupPath, log });
      try {
        assert.equal(withPinned(ctPin, (fd) => mapLookup(fd, key, ctValue.size)), undefined, 'the new kpx_ct starts empty');
        upgraded.sync(wholeModel(small));
        const carried = withPinned(ctPin, (fd) => mapLookup(fd, key, ctValue.size));
        assert.ok(carried, 'the flow is in the new kpx_ct once the programs took over');
        assert.deepEqual(ctValue.decode(carried), flow);
      } finally {
        upgraded.close();
      }
    } finally {
      removePins(bpffs, lab.cgroupPath);
    }
  });

  test('drift in the kernel is put right by the next sync after a reread, with the compiler kept', () => {
    const bpffs = `${lab.bpffsPath}/drift`;
    const small: Model = { ...model(0), servicePorts: model(0).servicePorts.slice(0, 5) };
    const expected = bytes(compile(small, { services: new Map(), backends: new Map() }).tables);
    const dp = EbpfDatapath.open({ bpffs, log });
    try {
      dp.sync(wholeModel(small));
      const fd = (map: string) => objGet(`${bpffs}/${map}`);
      const [slots, frontends, backends] = [fd('kpx_slots'), fd('kpx_frontends'), fd('kpx_backends')];
      try {
        mapDelete(slots, slotKey.encode({ service_id: 1, slot: 2 }));
        const fe = small.servicePorts[0]!.frontends[0]!;
        mapUpdate(frontends, frontendKey.encode({ addr: fe.address, port: fe.port, proto: 6 }), frontendValue.encode({ service_id: 1, backend_count: 0, kind: 1 }));
        mapUpdate(backends, u32Key.encode({ id: 999 }), backendValue.encode({ addr: '192.0.2.1', port: 1, proto: 6, flags: 0 }));
      } finally {
        [slots, frontends, backends].forEach((f) => closeSync(f));
      }
      assert.notDeepEqual(bytes(readPinnedTables(bpffs)), expected);
      dp.reread();
      assert.deepEqual(dp.sync(wholeModel(small, 1)), { written: 2, removed: 1, full: false }, 'the slot and the frontend rewritten, the stray backend removed');
      assert.deepEqual(bytes(readPinnedTables(bpffs)), expected);
    } finally {
      dp.close();
      removePins(bpffs);
    }
  });

  test('kpx_filter has the bit of every frontend the kernel holds and no other, through changes, drift and a restart', () => {
    const bpffs = `${lab.bpffsPath}/filter`;
    const withNodePort = (sp: ServicePort, i: number): ServicePort =>
      i % 10 === 0 ? { ...sp, frontends: [...sp.frontends, { kind: 'NodePort', address: NODE_PORT_ADDRESS, port: 30000 + i }] } : sp;
    const of = (from: number, to: number): Model => ({ ...model(0), servicePorts: model(0).servicePorts.slice(from, to).map((sp, i) => withNodePort(sp, from + i)) });
    const filterIs = (what: string) => {
      const { bits, needed } = filterState(bpffs);
      assert.deepEqual(bits, needed, what);
    };
    const zeroFilter = () => withPinned(`${bpffs}/kpx_filter`, (fd) => mapUpdate(fd, u32Key.encode({ id: 0 }), Buffer.alloc(filterValue.size)));
    try {
      const dp = EbpfDatapath.open({ bpffs, log });
      try {
        dp.sync(wholeModel(of(0, 100)));
        filterIs('after the first sync');
        dp.sync(wholeModel(of(50, 150), 1));
        filterIs('after half the frontends went and others came');
        const fe = of(50, 51).servicePorts[0]!.frontends[0]!;
        withPinned(`${bpffs}/kpx_frontends`, (fd) => mapDelete(fd, frontendKey.encode({ addr: fe.address, port: fe.port, proto: 6 })));
        dp.reread();
        dp.sync(wholeModel(of(51, 150), 2));
        filterIs('after a frontend deleted behind its back, a reread and a sync without it');
        zeroFilter();
        dp.reread();
        assert.deepEqual(dp.sync(wholeModel(of(51, 150), 3)), { written: 0, removed: 0, full: false }, 'no table entry differs');
        filterIs('a filter of unknown content is written whole by the sync after a reread');
      } finally {
        dp.close();
      }
      zeroFilter();
      const restarted = EbpfDatapath.open({ bpffs, log });
      try {
        restarted.sync(wholeModel(of(51, 150)));
        filterIs('a restart writes the filter whole, even when no table entry differs');
        restarted.sync(wholeModel(of(0, 10), 1));
        filterIs('after a restart that adopted the maps');
      } finally {
        restarted.close();
      }
    } finally {
      removePins(bpffs);
    }
  });

  test('kpx_sync_seq is odd only while a sync writes: even after each, two more than before it, two more again once the first sync\'s programs took over, and a restart goes on from it', () => {
    const bpffs = `${lab.bpffsPath}/seq`;
    const seq = () => withPinned(`${bpffs}/kpx_sync_seq`, (fd) => mapLookup(fd, u32Key.encode({ id: 0 }), 8)!.readBigUInt64LE(0));
    try {
      const dp = EbpfDatapath.open({ bpffs, log });
      try {
        dp.sync(wholeModel(model(0)));
        assert.equal(seq(), 4n, 'after the first sync and the takeover');
        dp.sync(wholeModel(model(1), 1));
        assert.equal(seq(), 6n, 'after the second');
      } finally {
        dp.close();
      }
      const restarted = EbpfDatapath.open({ bpffs, log });
      try {
        restarted.sync(wholeModel(model(1)));
        assert.equal(seq(), 10n, 'after a restart and a first sync that wrote no entry');
      } finally {
        restarted.close();
      }
    } finally {
      removePins(bpffs);
    }
  });

  test('maps near their size: what no lookup reaches goes first; a map that still fills up part-way says so', () => {
    const bpffs = `${lab.bpffsPath}/full`;
    const ports = model(0).servicePorts;
    const of = (servicePorts: ServicePort[]): Model => ({ ...model(0), servicePorts });
    const listed = () => listServicePorts(readPinnedTables(bpffs)).map((l) => [l.name, l.backends.map((b) => b.address)]);
    const expected = (servicePorts: ServicePort[]) => servicePorts.map((sp) => [sp.ref.name, sp.backends.map((b) => b.address)]);
    // Room for 4 frontends: Services 2-5 replace 1-4, Service 1's frontend going first.
    const roomy = EbpfDatapath.open({ bpffs, mapSizes: { kpx_frontends: 4 }, log });
    try {
      roomy.sync(wholeModel(of(ports.slice(0, 4))));
      roomy.sync(wholeModel(of(ports.slice(1, 5)), 1));
      assert.deepEqual(listed(), expected(ports.slice(1, 5)));
    } finally {
      roomy.close();
      removePins(bpffs);
    }
    // Room for 4 slots: Service 1 goes from 3 endpoints to 1 as Service 2 goes from 1 to 3. Service 2's new
    // slots go in before Service 1's go out (its frontend still counts 3 until rewritten): 6 of 4.
    const first = (sp: ServicePort, n: number): ServicePort => ({ ...sp, backends: sp.backends.slice(0, n) });
    const dp = EbpfDatapath.open({ bpffs, mapSizes: { kpx_slots: 4 }, log });
    try {
      dp.sync(wholeModel(of([first(ports[0]!, 3), first(ports[1]!, 1)])));
      // Service 3 comes too, without endpoints (no slots): the failure is past the filter write that lets its frontend in.
      assert.throws(
        () => dp.sync(wholeModel(of([first(ports[0]!, 1), first(ports[1]!, 3), first(ports[2]!, 0)]), 1)),
        (err: Error) => err instanceof TableFullError && /kpx_slots filled up during the update/.test(err.message),
      );
      const failed = filterState(bpffs);
      assert.deepEqual(failed.needed.filter((bit) => !failed.bits.includes(bit)), [], 'after the failure the filter still lets every frontend in');
      dp.sync(wholeModel(of([first(ports[0]!, 1), first(ports[1]!, 1)]), 2));
      assert.deepEqual(listed(), expected([first(ports[0]!, 1), first(ports[1]!, 1)]), 'what the failed sync wrote part-way is gone');
      const recovered = filterState(bpffs);
      assert.deepEqual(recovered.bits, recovered.needed, 'the sync after the failure leaves the filter exact');
    } finally {
      dp.close();
      removePins(bpffs);
    }
    // kpx_backends is an array indexed by ID (from 1): 12 entries hold IDs 1-11, and the twelfth backend is refused before any write.
    const array = EbpfDatapath.open({ bpffs, mapSizes: { kpx_backends: 12 }, log });
    try {
      assert.throws(
        () => array.sync(wholeModel(of(ports.slice(0, 4)))),
        (err: Error) => err instanceof TableFullError && /kpx_backends is full: ID 12 is past its 12 entries; nothing was written/.test(err.message),
      );
      assert.deepEqual(listed(), [], 'nothing was written');
      array.sync(wholeModel(of(ports.slice(0, 3)), 1));
      assert.deepEqual(listed(), expected(ports.slice(0, 3)));
    } finally {
      array.close();
      removePins(bpffs);
    }
  });
});
