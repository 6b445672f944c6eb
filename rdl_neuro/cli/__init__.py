"""The ``rdl-neuro`` command: ``main`` and one module per sub-command, plus the TOML configs.

==============================  ===============================================
``rdl_neuro.cli.main``          the parser and the entry point
``rdl_neuro.cli.config``        TOML configs: schema, checks, defaults
``rdl_neuro.cli.demo``          ``rdl-neuro demo``
``rdl_neuro.cli.train``         ``rdl-neuro train CONFIG``
``rdl_neuro.cli.evaluate``      ``rdl-neuro evaluate``
``rdl_neuro.cli.searchlight``   ``rdl-neuro searchlight``
==============================  ===============================================
"""
from rdl_neuro.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
