"""`python -m mvs.bench SUITE`: benchmarks measured through the product's own commands.

Each suite lives in its own module with a `run(context) -> (tables, data)` function;
`__main__` runs the suites asked for and writes their sections of BENCHMARKS.md and their
keys of benchmarks.json.
"""
