"""Test equipment: toy data, fake run folders, the kill harness. Never imported by alexbench."""
