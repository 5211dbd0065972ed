"""Dataset builders (one package per dataset) and the synthetic benchmark generator."""
