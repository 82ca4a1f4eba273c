"""The replica process and its operator commands: serving one replica (replica.py), the
server.py command line (cli.py), the local cluster launcher, and membership administration."""
