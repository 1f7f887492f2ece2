"""Running at scale: FSDP2 strategy, device offload of idle participants, data-parallel row sharing, vLLM generation, scenario shapes."""
