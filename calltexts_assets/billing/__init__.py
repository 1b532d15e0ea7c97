"""What the services bill: cost arithmetic and the run's budget."""
