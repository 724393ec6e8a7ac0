// Contract test for proto/runtime/v1/api.proto, skiff's own transcription of the CRI v1 API (cri-api v0.36.3).
// Both our proto and the upstream reference (../shared/cri-api/api.proto, next to the repo) are compiled with
// protoc into descriptor sets, normalised, and compared: any difference in package, services, RPCs, messages,
// fields, enums or enum values fails the test. Comments and layout are free to differ; the wire contract is not.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';
import {
  FileDescriptorSet,
  fieldDescriptorProto_LabelToJSON,
  fieldDescriptorProto_TypeToJSON,
  type DescriptorProto,
  type EnumDescriptorProto,
  type FileDescriptorProto,
} from 'ts-proto-descriptors';
import { describe, it, expect } from 'vitest';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const ourProtoPath = path.join(repoRoot, 'proto', 'runtime', 'v1', 'api.proto');
const referencePath = path.resolve(repoRoot, '..', 'shared', 'cri-api', 'api.proto');
const referenceExists = existsSync(referencePath);

/** The RPC count of CRI v1 as of cri-api v0.36.3: 35 in RuntimeService plus 6 in ImageService. */
const expectedRpcCount = 41;

interface ContractField {
  name: string;
  number: number;
  label: string;
  type: string;
  typeName: string;
  jsonName: string;
  proto3Optional: boolean;
  /** Index into the message's oneofs, or null when the field is in no oneof. */
  oneofIndex: number | null;
  deprecated: boolean;
}

interface ContractMessage {
  /** Fully qualified, e.g. `.runtime.v1.SecurityProfile` (nested messages and map entries included). */
  name: string;
  mapEntry: boolean;
  oneofs: string[];
  reserved: string[];
  /** Sorted by field number. */
  fields: ContractField[];
}

interface ContractEnum {
  name: string;
  reserved: string[];
  /** Sorted by number, then name. */
  values: { name: string; number: number }[];
}

interface ContractRpc {
  /** `Service/Method`. */
  name: string;
  inputType: string;
  outputType: string;
  clientStreaming: boolean;
  serverStreaming: boolean;
}

/** A normalised, sorted view of one proto file: everything that makes up the wire and gRPC contract. */
interface Contract {
  syntax: string;
  package: string;
  goPackage: string;
  services: string[];
  rpcs: ContractRpc[];
  messages: ContractMessage[];
  enums: ContractEnum[];
}

/** Runs protoc (an argument array, no shell) on `source` saved as runtime/v1/api.proto in a temp dir. */
function compile(source: string): Uint8Array {
  const dir = mkdtempSync(path.join(tmpdir(), 'skiff-cri-contract-'));
  try {
    mkdirSync(path.join(dir, 'runtime', 'v1'), { recursive: true });
    writeFileSync(path.join(dir, 'runtime', 'v1', 'api.proto'), source);
    const out = path.join(dir, 'api.pb');
    execFileSync('protoc', [`--descriptor_set_out=${out}`, `--proto_path=${dir}`, 'runtime/v1/api.proto'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new Uint8Array(readFileSync(out));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * The reference with `[debug_redact = true]` removed. Upstream puts that field option on four AuthConfig fields,
 * and Debian 12's protoc 3.21.12, which skiff builds with, predates that option and rejects it
 * ('Option "debug_redact" unknown'). It changes only how generated code prints a field, not the wire contract, so
 * dropping it loses nothing this test compares. If upstream ever spells it differently we fail here, loudly.
 */
function readReference(): string {
  const stripped = readFileSync(referencePath, 'utf8').replace(/\s*\[\s*debug_redact\s*=\s*true\s*\]/g, '');
  if (stripped.includes('debug_redact')) {
    throw new Error(
      `${referencePath}: debug_redact in an unexpected form; extend the stripping in readReference`,
    );
  }
  return stripped;
}

/**
 * Full names (`.pkg.Message.field`) of the fields whose oneof_index is actually present on the wire.
 * ts-proto-descriptors decodes an absent oneof_index as 0, which would make "in no oneof" and "in the first
 * oneof" look alike, so presence is read from the raw descriptor bytes instead.
 */
function fieldsWithOneofIndex(set: Uint8Array): Set<string> {
  const found = new Set<string>();
  const text = (b: Uint8Array | undefined): string => new TextDecoder().decode(b);
  const message = (buf: Uint8Array, scope: string): void => {
    const m = rawFields(buf);
    const name = `${scope}.${text(m.bytes.get(1)?.[0])}`; // DescriptorProto.name
    for (const f of m.bytes.get(2) ?? []) {
      // DescriptorProto.field: FieldDescriptorProto.name = 1, oneof_index = 9
      const fd = rawFields(f);
      if (fd.varints.has(9)) found.add(`${name}.${text(fd.bytes.get(1)?.[0])}`);
    }
    for (const n of m.bytes.get(3) ?? []) message(n, name); // DescriptorProto.nested_type
  };
  for (const file of rawFields(set).bytes.get(1) ?? []) {
    // FileDescriptorSet.file: FileDescriptorProto.package = 2, message_type = 4
    const fd = rawFields(file);
    const pkg = text(fd.bytes.get(2)?.[0]);
    for (const m of fd.bytes.get(4) ?? []) message(m, pkg ? `.${pkg}` : '');
  }
  return found;
}

/** The length-delimited values (by field number) and the numbers of the varint fields of one encoded message. */
function rawFields(buf: Uint8Array): { bytes: Map<number, Uint8Array[]>; varints: Set<number> } {
  const r = new BinaryReader(buf);
  const bytes = new Map<number, Uint8Array[]>();
  const varints = new Set<number>();
  while (r.pos < r.len) {
    const [no, wireType] = r.tag();
    if (wireType === WireType.LengthDelimited) {
      bytes.set(no, [...(bytes.get(no) ?? []), r.bytes()]);
    } else {
      if (wireType === WireType.Varint) varints.add(no);
      r.skip(wireType, no);
    }
  }
  return { bytes, varints };
}

const byName = <T extends { name: string }>(a: T, b: T): number =>
  a.name < b.name ? -1 : a.name > b.name ? 1 : 0;

/** Compiles `source` and reduces its single file to a Contract. */
function contractOf(source: string): Contract {
  const bytes = compile(source);
  const set = FileDescriptorSet.decode(bytes);
  expect(set.file).toHaveLength(1);
  const file: FileDescriptorProto = set.file[0]!;
  const inOneof = fieldsWithOneofIndex(bytes);
  const messages: ContractMessage[] = [];
  const enums: ContractEnum[] = [];

  const addEnum = (e: EnumDescriptorProto, scope: string): void => {
    enums.push({
      name: `${scope}.${e.name}`,
      reserved: [...e.reservedRange.map((r) => `${r.start}..${r.end}`), ...e.reservedName].sort(),
      values: e.value
        .map((v) => ({ name: v.name, number: v.number }))
        .sort((a, b) => a.number - b.number || byName(a, b)),
    });
  };
  const addMessage = (m: DescriptorProto, scope: string): void => {
    const name = `${scope}.${m.name}`;
    messages.push({
      name,
      mapEntry: m.options?.mapEntry ?? false,
      oneofs: m.oneofDecl.map((o) => o.name),
      reserved: [...m.reservedRange.map((r) => `${r.start}..${r.end}`), ...m.reservedName].sort(),
      fields: m.field
        .map((f) => ({
          name: f.name,
          number: f.number,
          label: fieldDescriptorProto_LabelToJSON(f.label),
          type: fieldDescriptorProto_TypeToJSON(f.type),
          typeName: f.typeName,
          jsonName: f.jsonName,
          proto3Optional: f.proto3Optional,
          oneofIndex: inOneof.has(`${name}.${f.name}`) ? f.oneofIndex : null,
          deprecated: f.options?.deprecated ?? false,
        }))
        .sort((a, b) => a.number - b.number || byName(a, b)),
    });
    m.nestedType.forEach((n) => {
      addMessage(n, name);
    });
    m.enumType.forEach((e) => {
      addEnum(e, name);
    });
  };
  const root = file.package ? `.${file.package}` : '';
  file.messageType.forEach((m) => {
    addMessage(m, root);
  });
  file.enumType.forEach((e) => {
    addEnum(e, root);
  });

  return {
    syntax: file.syntax,
    package: file.package,
    goPackage: file.options?.goPackage ?? '',
    services: file.service.map((s) => s.name).sort(),
    rpcs: file.service
      .flatMap((s) =>
        s.method.map((r) => ({
          name: `${s.name}/${r.name}`,
          inputType: r.inputType,
          outputType: r.outputType,
          clientStreaming: r.clientStreaming,
          serverStreaming: r.serverStreaming,
        })),
      )
      .sort(byName),
    messages: messages.sort(byName),
    enums: enums.sort(byName),
  };
}

/** Entries of `a` and `b` keyed by `key`: names only in a, only in b, and pairs present in both. */
function match<T>(
  a: T[],
  b: T[],
  key: (t: T) => string,
): { onlyA: string[]; onlyB: string[]; both: [T, T][] } {
  const mapB = new Map(b.map((t) => [key(t), t]));
  const keysA = new Set(a.map(key));
  return {
    onlyA: [...keysA].filter((k) => !mapB.has(k)),
    onlyB: [...mapB.keys()].filter((k) => !keysA.has(k)),
    both: a.flatMap((t): [T, T][] => {
      const other = mapB.get(key(t));
      return other === undefined ? [] : [[t, other]];
    }),
  };
}

/** Human-readable differences of `b` relative to `a` (e.g. ours vs reference); empty when they are equal. */
function diffDescriptors(a: Contract, b: Contract): string[] {
  const out: string[] = [];
  const show = (v: unknown): string => JSON.stringify(v);
  const same = (what: string, x: unknown, y: unknown): void => {
    if (show(x) !== show(y)) out.push(`${what}: ${show(x)} vs ${show(y)}`);
  };
  const sets = (what: string, onlyA: string[], onlyB: string[]): void => {
    for (const n of onlyA) out.push(`${what} ${n} only in first`);
    for (const n of onlyB) out.push(`${what} ${n} only in second`);
  };

  same('syntax', a.syntax, b.syntax);
  same('package', a.package, b.package);
  same('go_package', a.goPackage, b.goPackage);
  const services = match(a.services, b.services, (s) => s);
  sets('service', services.onlyA, services.onlyB);

  const rpcs = match(a.rpcs, b.rpcs, (r) => r.name);
  sets('rpc', rpcs.onlyA, rpcs.onlyB);
  for (const [x, y] of rpcs.both) {
    same(`rpc ${x.name} input`, x.inputType, y.inputType);
    same(`rpc ${x.name} output`, x.outputType, y.outputType);
    same(`rpc ${x.name} client streaming`, x.clientStreaming, y.clientStreaming);
    same(`rpc ${x.name} server streaming`, x.serverStreaming, y.serverStreaming);
  }

  const messages = match(a.messages, b.messages, (m) => m.name);
  sets('message', messages.onlyA, messages.onlyB);
  for (const [x, y] of messages.both) {
    same(`message ${x.name} map entry`, x.mapEntry, y.mapEntry);
    same(`message ${x.name} oneofs`, x.oneofs, y.oneofs);
    same(`message ${x.name} reserved`, x.reserved, y.reserved);
    const fields = match(x.fields, y.fields, (f) => f.name);
    const fieldName = (n: string): string => `${x.name}.${n}`;
    sets('field', fields.onlyA.map(fieldName), fields.onlyB.map(fieldName));
    for (const [fx, fy] of fields.both) {
      for (const k of Object.keys(fx) as (keyof ContractField)[]) {
        if (k !== 'name') same(`field ${x.name}.${fx.name} ${k}`, fx[k], fy[k]);
      }
    }
  }

  const enums = match(a.enums, b.enums, (e) => e.name);
  sets('enum', enums.onlyA, enums.onlyB);
  for (const [x, y] of enums.both) {
    same(`enum ${x.name} reserved`, x.reserved, y.reserved);
    const values = match(x.values, y.values, (v) => v.name);
    const valueName = (n: string): string => `${x.name}.${n}`;
    sets('enum value', values.onlyA.map(valueName), values.onlyB.map(valueName));
    for (const [vx, vy] of values.both) same(`enum value ${x.name}.${vx.name} number`, vx.number, vy.number);
  }
  return out;
}

const ourSource = (): string => readFileSync(ourProtoPath, 'utf8');
const field = (c: Contract, message: string, name: string): ContractField | undefined =>
  c.messages.find((m) => m.name === `.runtime.v1.${message}`)?.fields.find((f) => f.name === name);

describe('CRI v1 contract (proto/runtime/v1/api.proto)', () => {
  it.skipIf(!referenceExists)('is identical to the upstream cri-api v0.36.3 reference', () => {
    const ours = contractOf(ourSource());
    const reference = contractOf(readReference());

    const rpcNames = (c: Contract): string[] => c.rpcs.map((r) => r.name);
    const missing = rpcNames(reference).filter((n) => !rpcNames(ours).includes(n));
    const extra = rpcNames(ours).filter((n) => !rpcNames(reference).includes(n));
    expect
      .soft({ missing, extra }, 'RPCs missing from / extra in our proto')
      .toEqual({ missing: [], extra: [] });
    expect.soft(rpcNames(reference), 'RPCs in the reference').toHaveLength(expectedRpcCount);
    expect.soft(rpcNames(ours), 'RPCs in our proto').toHaveLength(expectedRpcCount);

    expect
      .soft(diffDescriptors(ours, reference), 'differences, ours (first) vs reference (second)')
      .toEqual([]);
    expect(ours).toEqual(reference);
  });

  it('has the expected shape on its own', () => {
    const ours = contractOf(ourSource());
    expect(ours.syntax).toBe('proto3');
    expect(ours.package).toBe('runtime.v1');
    expect(ours.goPackage).toBe('k8s.io/cri-api/pkg/apis/runtime/v1');
    expect(ours.services).toEqual(['ImageService', 'RuntimeService']);
    const names = ours.rpcs.map((r) => r.name);
    expect(names).toHaveLength(expectedRpcCount);
    expect(names.filter((n) => n.startsWith('RuntimeService/'))).toHaveLength(35);
    expect(names.filter((n) => n.startsWith('ImageService/'))).toHaveLength(6);
    expect(ours.rpcs.find((r) => r.name === 'RuntimeService/GetContainerEvents')).toEqual({
      name: 'RuntimeService/GetContainerEvents',
      inputType: '.runtime.v1.GetEventsRequest',
      outputType: '.runtime.v1.ContainerEventResponse',
      clientStreaming: false,
      serverStreaming: true,
    });
    expect(ours.rpcs.filter((r) => r.clientStreaming)).toEqual([]);

    expect(field(ours, 'VersionResponse', 'runtime_api_version')).toMatchObject({
      number: 4,
      type: 'TYPE_STRING',
      label: 'LABEL_OPTIONAL',
    });
    expect(field(ours, 'ContainerConfig', 'linux')).toMatchObject({
      number: 15,
      type: 'TYPE_MESSAGE',
      typeName: '.runtime.v1.LinuxContainerConfig',
    });
    expect(field(ours, 'PodSandboxConfig', 'labels')).toMatchObject({
      number: 6,
      label: 'LABEL_REPEATED',
      typeName: '.runtime.v1.PodSandboxConfig.LabelsEntry',
    });
    expect(field(ours, 'SecurityProfile', 'profile_type')?.typeName).toBe(
      '.runtime.v1.SecurityProfile.ProfileType',
    );
    expect(field(ours, 'AuthConfig', 'registry_token')).toMatchObject({ number: 6, type: 'TYPE_STRING' });
    expect(ours.enums.find((e) => e.name === '.runtime.v1.ContainerState')?.values).toEqual([
      { name: 'CONTAINER_CREATED', number: 0 },
      { name: 'CONTAINER_RUNNING', number: 1 },
      { name: 'CONTAINER_EXITED', number: 2 },
      { name: 'CONTAINER_UNKNOWN', number: 3 },
    ]);
  });

  // Proves the comparison can fail: each mutation of a copy of our proto must be reported by diffDescriptors.
  it.each([
    {
      what: 'a renumbered field',
      from: 'LinuxContainerConfig linux = 15;',
      to: 'LinuxContainerConfig linux = 25;',
      expected: 'field .runtime.v1.ContainerConfig.linux number: 15 vs 25',
    },
    {
      what: 'a changed field type',
      from: 'string runtime_api_version = 4;',
      to: 'bytes runtime_api_version = 4;',
      expected: 'field .runtime.v1.VersionResponse.runtime_api_version type: "TYPE_STRING" vs "TYPE_BYTES"',
    },
    {
      what: 'a lost stream flag',
      from: 'returns (stream ContainerEventResponse)',
      to: 'returns (ContainerEventResponse)',
      expected: 'rpc RuntimeService/GetContainerEvents server streaming: true vs false',
    },
    {
      what: 'a renamed enum value',
      from: 'SANDBOX_NOTREADY = 1;',
      to: 'SANDBOX_NOT_READY = 1;',
      expected: 'enum value .runtime.v1.PodSandboxState.SANDBOX_NOTREADY only in first',
    },
    {
      what: 'a field moved into a oneof',
      from: 'string localhost_ref = 2;',
      to: 'oneof ref { string localhost_ref = 2; }',
      expected: 'field .runtime.v1.SecurityProfile.localhost_ref oneofIndex: null vs 0',
    },
  ])('reports $what', ({ from, to, expected }) => {
    const source = ourSource();
    expect(source.split(from)).toHaveLength(2);
    const original = contractOf(source);
    const mutated = contractOf(source.replace(from, to));
    const diff = diffDescriptors(original, mutated);
    expect(diff).toContain(expected);
    expect(mutated).not.toEqual(original);
  });
});
