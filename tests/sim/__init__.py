"""Tests of modelplane.sim."""
