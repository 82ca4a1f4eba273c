"""A minimal etcd v3 client for the benchmarks: stubs generated from a wire-compatible subset of
etcd's published protos (rpc.proto, kv.proto), and EtcdCluster, which runs local etcd members."""
