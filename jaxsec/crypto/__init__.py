"""jaxsec.crypto."""
