"""Generated gRPC stubs for the subset of etcd v3.4's API used by the benchmarks.

Regenerate with ``bench/etcdpb/gen.sh``; do not edit the ``*_pb2*.py`` files.
"""
