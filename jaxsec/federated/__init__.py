"""jaxsec.federated."""
