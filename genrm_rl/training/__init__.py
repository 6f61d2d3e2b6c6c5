"""Training: SFT data, the GenRM-CoT joint loss and baselines, DeepSpeed workers under Ray Train."""
