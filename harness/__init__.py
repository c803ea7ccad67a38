"""quantbench's harness: config, sweep, measurement, results and the CLI."""
