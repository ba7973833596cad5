"""Running testbed on other Linux hosts over SSH (paramiko).

- ``errors``: ``RemoteError`` and one subclass per fault a person can act on.
- ``ssh``: resolving ``user@host[:port]`` like OpenSSH (``~/.ssh/config``),
  connecting with known_hosts checking, running argv lists (quoted, never
  shell strings) under a wrapper that ends the command when the connection
  drops, SFTP copies.
- ``install``: finding or installing testbed on the remote (a wheel built
  from the local checkout, installed into ``~/.cache/testbed/venv``).
- ``session``: one command on one host (``--host``): doctor, ship files,
  run, stream, pull results home, clean up after a lost connection.
- ``sweep``: a workload's matrix spread over several hosts (``--hosts``).

Importing this package does not import paramiko; the modules that need it do.
"""
