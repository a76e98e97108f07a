"""Tests of modelplane.core.

A package, so its helpers import the same way under every pytest import mode.
"""
