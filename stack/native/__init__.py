"""The Compose topology as supervised local processes (Debian's binaries, no Docker)."""
