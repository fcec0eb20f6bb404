"""Account health scoring: models, signals, scores, explanations (issue 6)."""
