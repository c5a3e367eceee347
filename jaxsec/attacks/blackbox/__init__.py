"""jaxsec.attacks.blackbox."""
