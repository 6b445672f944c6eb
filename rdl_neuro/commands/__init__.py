"""Sub-commands of ``rdl-neuro``; each module defines ``register(subparsers)``."""
