"""A user's own model and data, kept outside the psgd package: what the user-task tests train."""
