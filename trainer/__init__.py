"""The GRPO recipe that produces Q-Insight."""
