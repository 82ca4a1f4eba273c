"""Certificates and TLS settings: peer mutual TLS on the Raft port, TLS for client listeners."""
