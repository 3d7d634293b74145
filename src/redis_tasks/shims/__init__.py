"""The only modules that reach into a dependency's private parts: one per dependency, each with
a contract test (tests/test_shims.py) that fails loudly when the dependency changes shape."""
