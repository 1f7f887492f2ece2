"""The pieces every method runs on: config, the experiment, participants, training, prompts, evaluation, the encoder, run identity and checkpoints, and the channel."""
