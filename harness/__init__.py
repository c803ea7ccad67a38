"""quantbench's harness: config, sweep, measurement, results and the CLI."""
__version__ = "0.1.0"
