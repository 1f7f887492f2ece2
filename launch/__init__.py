"""Launchers beside the library: the local Flower federation (`local_federation`: a process supervisor;
`flower_local`: the command behind launch/flower_local.sh), run from the repository root."""
