"""Small stand-alone programs a user would build instead, measured on the same workload."""
