"""The CPU proving ground: the synthetic reasoning world and its model zoo."""
