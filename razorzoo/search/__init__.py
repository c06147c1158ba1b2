"""Specialize a supernet for the user's hardware: BN recalibration, latency tables, evolution search, output."""
