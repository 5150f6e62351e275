/**
 * The C contract (bpf/include/kpx_types.h, compiled into the committed
 * objects) against its TypeScript mirror (src/contract/codecs.ts, tables.ts):
 * struct layouts and map key/value types from the objects' BTF, constants
 * from the header text.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findTool } from '../fixtures/tools.js';
import {
  BACKEND_FLAGS,
  CONTRACT_STRUCTS,
  socketFdKey,
  sockPeerValue,
  sockSendtoValue,
  CT_FIB,
  CT_FLAGS,
  ctKey,
  FILTER_ADDR_MUL,
  FILTER_ADDR_SHIFT,
  FILTER_ADDR_WORDS,
  FILTER_PORT_WORDS,
  filterValue,
  ctValue,
  KIND,
  NAME_LEN,
  PORT_NAME_LEN,
  SKIP,
  STAT,
  STAT_COUNT,
  STATE,
  sockRevnatKey,
  sockRevnatValue,
  u32Key,
  u64Value,
  type StructCodec,
} from '../../src/contract/codecs.js';
import { ALL_MAPS, DERIVED_MAPS, KERNEL_OWNED_MAPS, TABLES } from '../../src/contract/tables.js';

// dist/test/unit/ -> repo root (the tests run from the compiled tree).
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const BPF_DIR = join(ROOT, 'bpf');
const HEADER = join(BPF_DIR, 'include', 'kpx_types.h');

const BPFTOOL = findTool('bpftool');
const OBJECTS = readdirSync(BPF_DIR)
  .filter((f) => f.endsWith('.o'))
  .sort();

interface BtfMember {
  name: string;
  type_id: number;
  bits_offset: number;
  bitfield_size?: number;
}

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: BtfMember[];
  vars?: Array<{ type_id: number; offset: number; size: number }>;
}

class Btf {
  private readonly byId = new Map<number, BtfType>();

  constructor(readonly object: string, types: BtfType[]) {
    for (const t of types) this.byId.set(t.id, t);
  }

  static load(object: string): Btf {
    const out = execFileSync(BPFTOOL!, ['-j', 'btf', 'dump', 'file', join(BPF_DIR, object)], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    return new Btf(object, (JSON.parse(out) as { types: BtfType[] }).types);
  }

  type(id: number): BtfType {
    const t = this.byId.get(id);
    assert.ok(t, `${this.object}: BTF type id ${id} missing`);
    return t;
  }

  all(): BtfType[] {
    return [...this.byId.values()];
  }

  /** Byte size of a type, through typedefs, qualifiers and arrays. */
  sizeOf(id: number): number {
    const t = this.type(id);
    switch (t.kind) {
      case 'INT':
      case 'STRUCT':
      case 'UNION':
      case 'ENUM':
      case 'ENUM64':
      case 'FLOAT':
        return t.size!;
      case 'TYPEDEF':
      case 'VOLATILE':
      case 'CONST':
      case 'RESTRICT':
      case 'TYPE_TAG':
        return this.sizeOf(t.type_id!);
      case 'ARRAY':
        return t.nr_elems! * this.sizeOf(t.type_id!);
      case 'PTR':
        return 8; // BPF is a 64-bit target
      default:
        throw new Error(`${this.object}: no size for BTF ${t.kind} ${t.name} (id ${id})`);
    }
  }

  struct(name: string): BtfType {
    const found = this.all().filter((t) => t.kind === 'STRUCT' && t.name === name);
    assert.equal(found.length, 1, `${this.object}: expected exactly one BTF STRUCT named ${name}, found ${found.length}`);
    return found[0]!;
  }

  /** The map variables of the .maps section, by name -> their (anonymous) definition struct. */
  maps(): Map<string, BtfType> {
    const secs = this.all().filter((t) => t.kind === 'DATASEC' && t.name === '.maps');
    assert.equal(secs.length, 1, `${this.object}: expected one .maps DATASEC`);
    const maps = new Map<string, BtfType>();
    for (const v of secs[0]!.vars ?? []) {
      const variable = this.type(v.type_id);
      assert.equal(variable.kind, 'VAR', `${this.object}: .maps entry ${v.type_id} is a ${variable.kind}`);
      maps.set(variable.name, this.type(variable.type_id!));
    }
    return maps;
  }

  /** The type a map definition's key or value member points at. */
  mapMemberTarget(object: string, mapName: string, def: BtfType, member: 'key' | 'value'): BtfType {
    const m = def.members?.find((x) => x.name === member);
    assert.ok(m, `${object}: map ${mapName} has no ${member} member (declare it with __type(${member}, ...))`);
    const ptr = this.type(m.type_id);
    assert.equal(ptr.kind, 'PTR', `${object}: map ${mapName}.${member} is a ${ptr.kind}, not a PTR`);
    return this.type(ptr.type_id!);
  }
}

/** Codecs of the maps the kernel writes (not in TABLES). */
const KERNEL_OWNED_CODECS: Record<string, { key: StructCodec<object>; value: StructCodec<object> }> = {
  kpx_sock_revnat: { key: sockRevnatKey, value: sockRevnatValue },
  kpx_sock_peer: { key: socketFdKey, value: sockPeerValue },
  kpx_sock_sendto: { key: socketFdKey, value: sockSendtoValue },
  kpx_ct: { key: ctKey, value: ctValue },
  kpx_stats: { key: u32Key, value: u64Value },
};

/** Codecs of the maps the control plane derives from the tables (DERIVED_MAPS). */
const DERIVED_CODECS: Record<string, { key: StructCodec<object>; value: StructCodec<object> }> = {
  kpx_filter: { key: u32Key, value: filterValue },
  kpx_sync_seq: { key: u32Key, value: u64Value },
};

function codecsOfMap(map: string): { key: StructCodec<object>; value: StructCodec<object> } {
  const table = Object.values(TABLES).find((t) => t.map === map);
  if (table) return { key: table.key, value: table.value };
  const derived = DERIVED_CODECS[map];
  if (derived) return derived;
  const owned = KERNEL_OWNED_CODECS[map];
  assert.ok(owned, `no codecs known for map ${map}: add it to TABLES or to KERNEL_OWNED_CODECS in this test`);
  return owned;
}

test('there are committed BPF objects to check', () => {
  assert.ok(OBJECTS.length > 0, `no bpf/*.o under ${BPF_DIR}`);
  for (const object of ['kpx_sock.o', 'kpx_net.o']) assert.ok(OBJECTS.includes(object), `bpf/${object} missing; objects: ${OBJECTS.join(', ')}`);
});

test('ALL_MAPS is TABLES plus the derived and kernel-owned maps', () => {
  assert.deepEqual(ALL_MAPS, ['kpx_frontends', 'kpx_slots', 'kpx_backends', 'kpx_services', 'kpx_node_addrs', ...DERIVED_MAPS, ...KERNEL_OWNED_MAPS]);
  assert.deepEqual([...DERIVED_MAPS], Object.keys(DERIVED_CODECS));
  assert.deepEqual([...KERNEL_OWNED_MAPS], Object.keys(KERNEL_OWNED_CODECS));
});

for (const object of OBJECTS) {
  test(`${object}: every contract struct matches its codec field by field`, (t) => {
    if (!BPFTOOL) {
      t.skip('bpftool not installed');
      return;
    }
    const btf = Btf.load(object);
    assert.ok(CONTRACT_STRUCTS.length >= 10, 'CONTRACT_STRUCTS lost entries');
    for (const codec of CONTRACT_STRUCTS) {
      const s = btf.struct(codec.cName);
      assert.equal(s.size, codec.size, `${object}: sizeof(struct ${codec.cName})`);
      const members = (s.members ?? []).map((m) => {
        assert.equal(m.bitfield_size ?? 0, 0, `${object}: ${codec.cName}.${m.name} is a bitfield`);
        assert.equal(m.bits_offset % 8, 0, `${object}: ${codec.cName}.${m.name} not byte aligned`);
        return { c: m.name, offset: m.bits_offset / 8, size: btf.sizeOf(m.type_id) };
      });
      assert.deepEqual(
        members,
        codec.fields.map((f) => ({ c: f.c, offset: f.offset, size: f.size })),
        `${object}: struct ${codec.cName} (BTF, actual) vs codecs.ts (expected)`,
      );
    }
  });

  test(`${object}: every map's key and value types are the codecs' types`, (t) => {
    if (!BPFTOOL) {
      t.skip('bpftool not installed');
      return;
    }
    const btf = Btf.load(object);
    const maps = btf.maps();
    for (const map of ALL_MAPS) {
      const def = maps.get(map);
      assert.ok(def, `${object}: map ${map} not in .maps (has: ${[...maps.keys()].join(', ')})`);
      const codecs = codecsOfMap(map);
      for (const member of ['key', 'value'] as const) {
        const target = btf.mapMemberTarget(object, map, def, member);
        const codec = codecs[member];
        assert.equal(target.name, codec.cName, `${object}: ${map} ${member} type name`);
        assert.equal(btf.sizeOf(target.id), codec.size, `${object}: ${map} ${member} size`);
      }
    }
    // Check the TABLES entries by table name as well, so a wrong TABLES.map would show.
    for (const [table, spec] of Object.entries(TABLES)) {
      const def = maps.get(spec.map);
      assert.ok(def, `${object}: TABLES.${table}.map ${spec.map} not in .maps`);
      assert.equal(btf.sizeOf(btf.mapMemberTarget(object, spec.map, def, 'key').id), spec.key.size, `${table} key size`);
      assert.equal(btf.sizeOf(btf.mapMemberTarget(object, spec.map, def, 'value').id), spec.value.size, `${table} value size`);
    }
  });
}

/** KPX_<NAME> numeric defines of kpx_types.h. */
function headerDefines(): Map<string, number> {
  const defines = new Map<string, number>();
  for (const line of readFileSync(HEADER, 'utf8').split('\n')) {
    const m = /^\s*#\s*define\s+(KPX_\w+)\s+(\S+)/.exec(line);
    if (!m) continue;
    assert.match(m[2]!, /^\d+$/, `${m[1]} is not a plain decimal number: ${m[2]}`);
    defines.set(m[1]!, Number(m[2]));
  }
  return defines;
}

/** CLUSTER_IP, ClusterIP, serving-terminating... -> clusterip, servingterminating. */
function norm(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]/g, '');
}

test('header parsing finds the expected defines', () => {
  const defines = headerDefines();
  assert.equal(defines.get('KPX_KIND_CLUSTER_IP'), 1);
  assert.equal(defines.get('KPX_NAME_LEN'), 64);
  assert.equal(defines.get('KPX_SKIP_SERVICE_PROXY_NAME'), 3);
  assert.equal(defines.has('KPX_TYPES_H'), false, 'the include guard is not a numeric define');
});

test('KPX_* constants of kpx_types.h equal KIND, STATE, SKIP, BACKEND_FLAGS, CT_FLAGS, CT_FIB, NAME_LEN, PORT_NAME_LEN, FILTER_*', () => {
  const defines = headerDefines();
  const groups: Array<[string, Record<string, number>]> = [
    ['KPX_KIND_', KIND],
    ['KPX_STATE_', STATE],
    ['KPX_SKIP_', SKIP],
    ['KPX_BACKEND_', BACKEND_FLAGS],
    ['KPX_CT_', CT_FLAGS],
    ['KPX_FIB_', CT_FIB],
  ];
  const checked = new Set<string>();
  for (const [prefix, table] of groups) {
    const fromC = new Map<string, number>();
    for (const [name, value] of defines) {
      if (!name.startsWith(prefix)) continue;
      fromC.set(norm(name.slice(prefix.length)), value);
      checked.add(name);
    }
    const fromTs = new Map(Object.entries(table).map(([k, v]) => [norm(k), v] as const));
    const sort = (m: Map<string, number>) => [...m].sort(([a], [b]) => a.localeCompare(b));
    assert.deepEqual(sort(fromTs), sort(fromC), `${prefix}* (codecs.ts, actual) vs kpx_types.h (expected)`);
  }
  assert.equal(NAME_LEN, defines.get('KPX_NAME_LEN'), 'NAME_LEN');
  assert.equal(PORT_NAME_LEN, defines.get('KPX_PORT_NAME_LEN'), 'PORT_NAME_LEN');
  checked.add('KPX_NAME_LEN').add('KPX_PORT_NAME_LEN');
  const filter = { FILTER_ADDR_MUL, FILTER_ADDR_SHIFT, FILTER_ADDR_WORDS, FILTER_PORT_WORDS };
  for (const [name, value] of Object.entries(filter)) {
    assert.equal(value, defines.get(`KPX_${name}`), name);
    checked.add(`KPX_${name}`);
  }
  const unchecked = [...defines.keys()].filter((d) => !checked.has(d));
  assert.deepEqual(unchecked, [], 'numeric defines in kpx_types.h with no mirror checked by this test');
});

/** The enumerators of `enum <name>` in kpx_types.h, in order; none may set its value. */
function headerEnum(name: string): string[] {
  const m = new RegExp(`enum\\s+${name}\\s*\\{([^}]*)\\}`).exec(readFileSync(HEADER, 'utf8'));
  assert.ok(m, `enum ${name} not found in kpx_types.h`);
  const names = m[1]!
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const n of names) assert.match(n, /^KPX_\w+$/, `enum ${name}: ${n} is not a plain enumerator`);
  return names;
}

test('enum kpx_stat of kpx_types.h equals STAT and STAT_COUNT, and sizes kpx_stats', (t) => {
  const names = headerEnum('kpx_stat');
  assert.equal(names.at(-1), 'KPX_STAT_COUNT', 'the count comes last');
  const fromC = names.slice(0, -1).map((n, i) => [norm(n.slice('KPX_STAT_'.length)), i]);
  assert.deepEqual(
    Object.entries(STAT).map(([k, v]) => [norm(k), v]),
    fromC,
    'STAT (codecs.ts, actual) vs enum kpx_stat (expected)',
  );
  assert.equal(STAT_COUNT, names.length - 1, 'STAT_COUNT');
  if (!BPFTOOL) {
    t.skip('bpftool not installed: max_entries unchecked');
    return;
  }
  for (const object of OBJECTS) {
    const btf = Btf.load(object);
    const def = btf.maps().get('kpx_stats');
    assert.ok(def, `${object}: no kpx_stats map`);
    // __uint(max_entries, N) is a pointer to an array of N ints.
    const member = def.members?.find((m) => m.name === 'max_entries');
    assert.ok(member, `${object}: kpx_stats has no max_entries`);
    assert.equal(btf.type(btf.type(member.type_id).type_id!).nr_elems, STAT_COUNT, `${object}: kpx_stats max_entries`);
  }
});
