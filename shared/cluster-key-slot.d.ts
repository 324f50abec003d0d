/** The CRC16 hash slot of a key, as Redis Cluster computes it (the package ioredis itself uses). */
declare module 'cluster-key-slot' {
  function calculateSlot(key: string | Buffer): number;
  export default calculateSlot;
}
