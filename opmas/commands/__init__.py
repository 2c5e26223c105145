"""Sub-commands of ``opmas``: each module here defines ``register(subparsers)``."""
