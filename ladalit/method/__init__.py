"""LaDa: the federated loop (Algorithm 1), the learnability filter, the MARD loss, the rewards and the prototypes."""
