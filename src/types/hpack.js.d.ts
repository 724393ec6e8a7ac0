// The small part of hpack.js (no bundled types) that src/cri/authority.ts uses.
declare module 'hpack.js' {
  interface DecodedHeader {
    name: string;
    value: string;
    neverIndex: boolean;
  }
  interface Decompressor {
    write(block: Buffer): void;
    execute(cb?: (err: Error | null) => void): void;
    read(): DecodedHeader | null;
    on(event: 'error', cb: (err: Error) => void): void;
  }
  const hpack: {
    decompressor: { create(options: { table: { maxSize: number } }): Decompressor };
  };
  export default hpack;
}
